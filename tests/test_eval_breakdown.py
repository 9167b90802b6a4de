"""Perception per family and per look (stages.evaluation.breakdown): each pool equals the metrics
recomputed from its own scenes' windows, and report.md has a row per pool and model."""

from __future__ import annotations

import pytest
import torch

from stages.evaluation import breakdown, perception
from stages.evaluation.report import fmt

FRAMES, SIZE = 3, 16
SCENES = (("ramp_00000", "ramp", "sky_a"), ("ramp_00001", "ramp", "wall_b"), ("drop_00000", "drop", "sky_a"))


def _window(seed: int) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """A random window (with a scene-dependent number of valid pixels) and random predictions."""
    gen = torch.Generator().manual_seed(seed)
    valid = torch.rand(FRAMES, SIZE, SIZE, generator=gen) > 0.2 + 0.2 * seed
    sample = {"rgb": torch.rand(FRAMES, 3, SIZE, SIZE, generator=gen),
              "flow": 3 * torch.randn(FRAMES, 2, SIZE, SIZE, generator=gen), "flow_valid": valid,
              "depth": 1 + 4 * torch.rand(FRAMES, SIZE, SIZE, generator=gen), "depth_valid": valid}
    return sample, torch.randn(FRAMES, 2, SIZE, SIZE, generator=gen), torch.randn(FRAMES, SIZE, SIZE, generator=gen)


@pytest.fixture(scope="module")
def pooled() -> tuple[list[dict], dict, list]:
    """Scene records, their breakdown for one model, and the windows they came from."""
    scenes = [{"scene": s, "family": f, "look": look} for s, f, look in SCENES]
    windows = [_window(seed) for seed in range(len(scenes))]
    accumulators: dict = {}
    for scene, (sample, flow, log_depth) in zip(scenes, windows):
        pools = [accumulators.setdefault(key, perception.new_accumulator(0.5, 100.0))
                 for key in breakdown.pool_keys(scene)]
        perception.add(pools, flow, log_depth, sample, flow_baselines=True)
    return scenes, breakdown.breakdown(scenes, ["stage1"], {"stage1": accumulators}), windows


def _recomputed(windows: list, indices: list[int]) -> dict[str, float]:
    acc = perception.new_accumulator(0.5, 100.0)
    for i in indices:
        sample, flow, log_depth = windows[i]
        perception.add([acc], flow, log_depth, sample, flow_baselines=True)
    return acc.compute()


def test_each_family_and_look_pools_exactly_its_scenes(pooled):
    scenes, result, windows = pooled
    assert list(result) == ["family", "look"]
    assert {k: v["scenes"] for k, v in result["family"].items()} == {"ramp": ["ramp_00000", "ramp_00001"],
                                                                     "drop": ["drop_00000"]}
    assert {k: v["scenes"] for k, v in result["look"].items()} == {"sky_a": ["ramp_00000", "drop_00000"],
                                                                   "wall_b": ["ramp_00001"]}
    for kind in ("family", "look"):
        for name, pool in result[kind].items():
            indices = [i for i, s in enumerate(scenes) if s[kind] == name]
            assert pool["perception"]["stage1"] == _recomputed(windows, indices), (kind, name)
    # Pooled pixel-weighted, not averaged per scene: two scenes of different sizes differ from the mean.
    ramp = result["family"]["ramp"]["perception"]["stage1"]["depth_scale_abs_rel"]
    singles = [_recomputed(windows, [i])["depth_scale_abs_rel"] for i in (0, 1)]
    assert ramp != pytest.approx(sum(singles) / 2)


def test_report_has_a_row_per_pool_and_model(pooled):
    _, result, _ = pooled
    lines = breakdown.markdown({"breakdown": result}, fmt)
    assert "## Perception per family" in lines and "## Perception per look" in lines
    metrics = result["look"]["wall_b"]["perception"]["stage1"]
    row = next(line for line in lines if line.startswith("| wall_b |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:3] == ["wall_b", "1", "stage1"]
    assert cells[4] == f"{fmt(metrics['depth_scale_abs_rel'])} / {fmt(metrics['median_depth_scale_abs_rel'])}"
    assert cells[6] == " / ".join(fmt(metrics[k]) for k in ("flow_epe_moving", "zero_flow_epe_moving",
                                                              "dis_flow_epe_moving", "farneback_flow_epe_moving"))
    assert sum(line.startswith(("| ramp |", "| drop |")) for line in lines) == 2
