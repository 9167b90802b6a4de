"""The physics rule on ground truth (the oracle verifier) on generated violation pairs: it measures
the gravity each clip was simulated with, sees a body vanish or jump and a clip speed up, and so
ranks every plausible clip above its twins; verify's accuracy table follows from the clip scores."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import REPO

GRAVITY_KINDS = ("gravity_half", "gravity_double", "gravity_up")
KINDS = (*GRAVITY_KINDS, "teleport", "vanish", "speed_change")


@pytest.fixture(scope="module")
def pairs_root(tmp_path_factory) -> Path:
    """One bounce scene (a ball in free flight between bounces) and its twins, 128 px."""
    root = tmp_path_factory.mktemp("pairs") / "root"
    subprocess.run([sys.executable, str(REPO / "scripts/make_violation_pairs.py"), "--out", str(root), "--preset", "demo",
                    "--families", "bounce", "--scenes-per-family", "1", "--seed", "200", "--kinds", ",".join(KINDS),
                    "--workers", "1", "--log-level", "WARNING"], check=True)
    return root


def _oracle_scores(root: Path) -> dict[str, dict]:
    from data.dataset import DataConfig, SimPhysicsDataset
    from data.sampling import WindowSpec
    from stages.evaluation.pairs import read_pairs
    from stages.evaluation.verifiers import clip_scores
    from stages.evaluation.verify import write_clip_metadata

    pairs = read_pairs(root / "pairs.csv", root)
    videos = sorted({v for p in pairs for v in (p.plausible, p.implausible)})
    metadata = write_clip_metadata(root, videos, root.parent / "clips.csv")
    data = DataConfig(root=str(root), metadata=str(metadata), height=128, width=128,
                      window=WindowSpec(num_frames=9, stride=2))
    dataset = SimPhysicsDataset(data, split="verify")
    scores = {}
    for index, video in enumerate(videos):
        sample = dataset.load_window(index, np.arange(0, dataset.scenes[index].num_frames, 2))
        scores[video] = clip_scores(sample, ("oracle", "frame_difference"))
    return pairs, scores


def _whole_clip(root: Path, video: str) -> dict:
    from data.dataset import DataConfig, SimPhysicsDataset
    from data.sampling import WindowSpec
    from stages.evaluation.verify import write_clip_metadata

    metadata = write_clip_metadata(root, [video], root.parent / "one_clip.csv")
    data = DataConfig(root=str(root), metadata=str(metadata), height=128, width=128,
                      window=WindowSpec(num_frames=9, stride=2))
    dataset = SimPhysicsDataset(data, split="verify")
    return dataset.load_window(0, np.arange(0, dataset.scenes[0].num_frames, 2))


def test_the_oracle_measures_each_clips_gravity_and_ranks_every_plausible_clip_first(pairs_root):
    from stages.evaluation.pairs import accuracy_row

    pairs, scores = _oracle_scores(pairs_root)
    assert sorted(p.kind for p in pairs) == sorted(KINDS)
    expected = {"gravity_half": 4.905, "gravity_double": 19.62, "gravity_up": -9.81}
    plausible = scores[pairs[0].plausible]["oracle"]
    assert plausible["g_fit"] == pytest.approx(9.81, rel=0.05) and plausible["gravity"] < 0.05
    assert plausible["vanish"] < 0.05
    for pair in pairs:
        twin = scores[pair.implausible]["oracle"]
        if pair.kind in GRAVITY_KINDS:
            assert twin["g_fit"] == pytest.approx(expected[pair.kind], rel=0.08), pair.kind
        assert plausible["score"] > twin["score"], pair.kind
    # What gives each kind away: the body that leaves shows what lay behind it.
    assert scores[next(p.implausible for p in pairs if p.kind == "vanish")]["oracle"]["vanish"] > 0.2
    row = accuracy_row(pairs, {v: s["oracle"]["score"] for v, s in scores.items()})
    assert row["overall"] == 1.0 and row["by_kind"] == dict.fromkeys(KINDS, 1.0)


def test_the_report_sees_a_ball_given_the_depth_behind_it(pairs_root):
    """verify.json's heads_perception: exact outputs score 0; the ball at twice its distance (as the
    demo heads place balls in flight against the wall) shows on moving pixels, not on all."""
    import torch

    from heads.metrics import head_accumulator
    from stages.evaluation.pairs import read_pairs
    from stages.evaluation.verify import PERCEPTION_KEYS, add_perception

    sample = _whole_clip(pairs_root, read_pairs(pairs_root / "pairs.csv", pairs_root)[0].plausible)
    flow = torch.where(sample["flow_valid"][:, None], sample["flow"], torch.zeros_like(sample["flow"]))
    moving = flow.norm(dim=1) > 0.5
    moving[0] = False
    assert int(moving.sum()) > 100

    def perception(distance: torch.Tensor) -> dict:
        accumulator = head_accumulator(0.5, 100.0)
        add_perception(accumulator, sample, {"flow": flow, "distance": distance})
        return accumulator.compute()

    exact = perception(sample["depth"].clone())
    assert set(PERCEPTION_KEYS) <= set(exact)
    assert exact["depth_abs_rel"] == pytest.approx(0.0, abs=1e-6) and exact["flow_epe_moving"] == pytest.approx(0.0)
    assert exact["depth_moving_abs_rel"] == pytest.approx(0.0, abs=1e-6) and exact["zero_flow_epe_moving"] > 1.0
    far = perception(torch.where(moving, 2 * sample["depth"], sample["depth"]))
    assert far["depth_moving_abs_rel"] == pytest.approx(1.0, rel=1e-3)
    assert far["depth_abs_rel"] < 0.1


def test_the_diagnostics_swap_in_the_truth_for_one_half_of_the_heads_output(pairs_root):
    """heads_true_depth judges the heads' flow on the true distance, heads_true_flow the heads'
    distance with the true flow: heads placing the ball at twice its distance with exact flow read
    2 g through their distance, and g once the distance is the truth's."""
    import torch

    from stages.evaluation.pairs import read_pairs
    from stages.evaluation.verifiers import DIAGNOSTICS, NEEDS_MODEL, clip_scores

    sample = _whole_clip(pairs_root, read_pairs(pairs_root / "pairs.csv", pairs_root)[0].plausible)
    flow = torch.where(sample["flow_valid"][:, None], sample["flow"], torch.zeros_like(sample["flow"]))
    model = {"flow": flow, "distance": 2.0 * sample["depth"]}
    scores = clip_scores(sample, ("heads", *DIAGNOSTICS), model)
    assert set(DIAGNOSTICS) <= set(NEEDS_MODEL)
    assert scores["heads_true_depth"]["g_fit"] == pytest.approx(9.81, rel=0.05)
    assert scores["heads_true_flow"]["g_fit"] == pytest.approx(19.62, rel=0.08)
    assert scores["heads_true_depth"]["score"] > scores["heads_true_flow"]["score"]


def test_the_report_reads_the_moving_bodies_distance_scale_and_jitter(pairs_root):
    """heads.moving_distance, what the rule needs of a distance: the ball read 1.4x too far shows a
    ratio of 1.4 and no jitter; a distance alternating by 2 % between frames shows 2 % of jitter;
    an error fixed in the image (growing down the rows) changes along the ball's track, so it
    shows as jitter although no frame differs from another; the report states both numbers."""
    import torch

    from heads.moving_distance import MovingDistance
    from stages.evaluation.pairs import read_pairs
    from stages.evaluation.verify import markdown

    sample = _whole_clip(pairs_root, read_pairs(pairs_root / "pairs.csv", pairs_root)[0].plausible)
    true = sample["depth"]

    def read(distance: torch.Tensor) -> dict:
        bodies = MovingDistance(0.5)
        bodies.add(distance, sample)
        return bodies.compute()

    exact = read(true.clone())
    assert exact["moving_distance_ratio"] == pytest.approx(1.0) and exact["moving_distance_jitter"] == pytest.approx(0.0)
    far = read(1.4 * true)
    assert far["moving_distance_ratio"] == pytest.approx(1.4, rel=1e-5)
    assert far["moving_distance_jitter_p90"] == pytest.approx(0.0, abs=1e-5)
    wobble = torch.tensor([1.0, 1.02] * true.shape[0])[: true.shape[0], None, None]
    shaky = read(wobble * true)
    assert shaky["moving_distance_jitter"] == pytest.approx(0.02, abs=1e-3)
    assert 1.0 <= shaky["moving_distance_ratio_q25"] <= shaky["moving_distance_ratio_q75"] <= 1.02 + 1e-6
    rows = 1.0 + 0.01 * torch.arange(true.shape[-2], dtype=true.dtype)[:, None]
    fixed = read(rows * true)
    flow_y = sample["flow"][:, 1][sample["flow_valid"] & (sample["flow"].norm(dim=1) > 0.5)].abs().median()
    assert float(flow_y) > 1.0 and fixed["moving_distance_jitter"] > 0.4 * 0.01 * float(flow_y)
    payload = {"rows": {}, "pairs": 0, "default_intrinsics": [],
               "heads_perception": {"depth_abs_rel": 0.1, "depth_moving_abs_rel": 0.4, "median_depth_moving_abs_rel": 0.6,
                                    "flow_epe_moving": 2.0, "zero_flow_epe_moving": 4.0, **far}}
    assert "1.40x the truth" in markdown(payload) and "within about 20%" in markdown(payload)
