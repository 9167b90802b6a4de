"""The evaluation's physics table on an analytic falling square: time base, support, coherence, frame 0.

Scene (no simulator): a 64x64 pinhole camera (fx = fy = 60, pixel centres on integers) looks at a
fronto-parallel textured square (0.8 m side) at z = 3 m in front of a static textured wall at
z = 6 m. The square falls along camera +y: y(t) = y0 + v0 t + g t^2 / 2, g = 9.81 m/s^2, so its
pixels translate in y by fy * dy / z (planes are exact for `follow_points`). Ground truth is
"recorded" at SIM_FPS = 30; the backbone generates at its preset's rate (24 fps), which is also the
rate of a perfect rollout here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stages.evaluation import physics_report as phys
from stages.evaluation import rollout, timebase
from world_model.presets import PRESETS, TI2V_5B

SIZE, FOCAL, CENTRE, SIM_FPS, G = 64, 60.0, 31.5, 30.0, 9.81
SIDE, Z_SQUARE, Z_WALL, Y0, V0 = 0.8, 3.0, 6.0, -0.55, -0.6


def _texture(u: np.ndarray, v: np.ndarray, k: float) -> np.ndarray:
    return 0.5 + 0.3 * np.stack([np.sin(k * u), np.cos(k * v), np.sin(k * (u + v))], 0)


def render(times: np.ndarray, moving: bool = True) -> dict:
    """GT-window fields (as `SimPhysicsDataset.load_window` gives them) of the square at ``times`` (s)."""
    ys, xs = np.meshgrid(np.arange(SIZE, dtype=np.float64), np.arange(SIZE, dtype=np.float64), indexing="ij")
    rx, ry = (xs - CENTRE) / FOCAL, (ys - CENTRE) / FOCAL
    norm = np.sqrt(1 + rx * rx + ry * ry)
    heights = Y0 + V0 * times + 0.5 * G * times**2 if moving else np.full_like(times, Y0)
    rgb, depth, flow, flow_ok = [], [], [], []
    for k, y in enumerate(heights):
        on = (np.abs(rx * Z_SQUARE) < SIDE / 2) & (np.abs(ry * Z_SQUARE - y) < SIDE / 2)
        depth.append(np.where(on, Z_SQUARE, Z_WALL) * norm)
        square = _texture(rx * Z_SQUARE * 20, (ry * Z_SQUARE - y) * 20, 1.0)
        rgb.append(np.where(on[None], square, _texture(rx * Z_WALL * 9, ry * Z_WALL * 9, 1.0)))
        f = np.zeros((2, SIZE, SIZE))
        ok = np.zeros((SIZE, SIZE), bool)
        if k > 0:
            f[1] = np.where(on, -FOCAL * (y - heights[k - 1]) / Z_SQUARE, 0.0)
            was = (np.abs(rx * Z_SQUARE) < SIDE / 2) & (np.abs(ry * Z_SQUARE - heights[k - 1]) < SIDE / 2)
            ok = on | ~was  # wall pixels the square uncovered have no previous point
        flow.append(f), flow_ok.append(ok)
    t = lambda a: torch.from_numpy(np.stack(a)).float()  # noqa: E731
    return {"rgb": t(rgb).clamp(0, 1), "depth": t(depth), "depth_valid": torch.ones(len(times), SIZE, SIZE, dtype=torch.bool),
            "flow": t(flow), "flow_valid": torch.from_numpy(np.stack(flow_ok)),
            "intrinsics": torch.tensor([FOCAL, FOCAL, CENTRE, CENTRE]), "down_cam": torch.tensor([0.0, 1.0, 0.0])}


def gt_window(frames: int, fps: float, start: int = 0) -> tuple[dict, np.ndarray]:
    """The GT from simulator frame ``start`` resampled to ``fps`` (nearest frames, true intervals)."""
    index = timebase.resampled_frames(start, frames, SIM_FPS, fps, available=200)
    sample = render(index / SIM_FPS)
    sample["dt"] = timebase.frame_intervals(index, SIM_FPS)
    return sample, index


def perfect_rollout(frames: int, fps: float) -> dict:
    return render(np.arange(frames) / fps)


def test_every_preset_declares_its_frame_rate():
    assert TI2V_5B.fps == 24.0
    assert all(p.fps > 0 for p in PRESETS.values())


def test_resampled_frames_are_nearest_in_time_and_keep_true_intervals():
    index = timebase.resampled_frames(3, 9, 30.0, 24.0, available=20)
    assert index.tolist() == [3, 4, 6, 7, 8, 9, 11, 12, 13]  # round(1.25 i) + 3, halves rounded up
    assert np.abs((index - 3) / 30.0 - np.arange(9) / 24.0).max() <= 0.5 / 30 + 1e-12
    assert timebase.frame_intervals(index, 30.0).tolist() == pytest.approx([1 / 30, 1 / 30, 2 / 30, 1 / 30, 1 / 30,
                                                                            1 / 30, 2 / 30, 1 / 30, 1 / 30])
    with pytest.raises(timebase.TimeBaseError, match="need 11 simulator frames"):
        timebase.resampled_frames(10, 9, 30.0, 24.0, available=20)
    with pytest.raises(timebase.TimeBaseError, match="faster"):
        timebase.resampled_frames(0, 9, 24.0, 30.0, available=200)


def test_gt_on_the_resampled_time_base_fits_true_g():
    sample, _ = gt_window(13, TI2V_5B.fps)
    kin, masks = phys.gt_physics(sample, G)
    row = phys.residuals(kin, sample["down_cam"][None], G, masks["free"], masks["static"])
    assert row["free_fall_px"] > 500
    assert row["g_fit"] == pytest.approx(G, rel=1e-3)
    sample["dt"] = torch.tensor(1 / TI2V_5B.fps)  # pretending the nearest frames are evenly spaced
    kin, masks = phys.gt_physics(sample, G)
    uneven = phys.residuals(kin, sample["down_cam"][None], G, masks["free"], masks["static"])
    assert abs(uneven["g_fit"] - G) > 0.1 * G


def test_a_perfect_rollout_at_the_backbone_rate_fits_true_g():
    """Defect: the rollout was differentiated with the GT window's dt (stride / sim fps)."""
    fps = TI2V_5B.fps
    sample, _ = gt_window(13, fps)
    kin, masks = phys.gt_physics(sample, G)
    video = perfect_rollout(13, fps)
    row = phys.source_physics(video["depth"], video["flow"], sample, kin, masks, G, rollout_fps=fps)
    assert row["g_fit"] == pytest.approx(G, rel=0.02)
    assert row["g_rel_error"] < 0.02


def test_every_row_is_judged_on_the_same_ground_truth_pixels():
    """Defect: the rollout row used its own moving pixels; a frozen rollout was judged on nothing."""
    fps = TI2V_5B.fps
    sample, _ = gt_window(13, fps)
    kin, masks = phys.gt_physics(sample, G)
    gt_row = phys.residuals(kin, sample["down_cam"][None], G, masks["free"], masks["static"])
    heads_row = phys.source_physics(sample["depth"], sample["flow"], sample, kin, masks, G)
    frozen = render(np.zeros(13))
    frozen_row = phys.source_physics(frozen["depth"], frozen["flow"], sample, kin, masks, G, rollout_fps=fps)
    assert heads_row["free_fall_px"] == gt_row["free_fall_px"]
    # Nothing moves, yet the GT's free-fall pixels are judged (less the few where its own links break
    # at the square's edges); before, the rollout's own (empty) moving set was used: 0 pixels, g NaN.
    assert 0.85 * gt_row["free_fall_px"] <= frozen_row["free_fall_px"] <= gt_row["free_fall_px"]
    assert frozen_row["g_fit"] == pytest.approx(0.0, abs=1e-6)
    assert not phys.g_verdict(phys.pooled_g([frozen_row]))["pass"]


def test_coherence_fails_a_frozen_video_and_zero_flow_and_passes_correct_flow():
    """Defect: warp L1 over all pixels passed a frozen video (and zero flow on a moving one)."""
    sample, _ = gt_window(9, TI2V_5B.fps, start=6)  # past the apex: >= 1 px per frame
    moving = phys.motion_support(sample, 0.5)
    assert bool(moving[1:].any(dim=(1, 2)).all())
    frozen = render(np.zeros(9))
    right = phys.coherence(sample["rgb"], sample["flow"], moving)
    assert right["coherent_frames"] == 1.0 and right["frames_scored"] == 8
    assert phys.coherence_verdict(right["coherent_frames"])["pass"]
    for frames, flow in ((frozen["rgb"], frozen["flow"]), (sample["rgb"], torch.zeros_like(sample["flow"]))):
        wrong = phys.coherence(frames, flow, moving)
        assert wrong["coherent_frames"] == 0.0 and wrong["frames_scored"] == 8
        assert not phys.coherence_verdict(wrong["coherent_frames"])["pass"]


def test_coherence_without_gt_motion_scores_the_reference_frame_differences():
    """Changed pixels include disocclusions no flow explains, so only the ranking is asserted there."""
    sample, _ = gt_window(9, TI2V_5B.fps, start=6)
    right = phys.coherence(sample["rgb"], sample["flow"])
    zero = phys.coherence(sample["rgb"], torch.zeros_like(sample["flow"]))
    assert right["frames_scored"] == zero["frames_scored"] == 8
    assert right["warp_l1_mean"] < 0.2 * zero["warp_l1_mean"] and right["coherent_frames"] > zero["coherent_frames"] == 0.0
    frozen = render(np.zeros(9))
    assert math.isnan(phys.coherence(frozen["rgb"], frozen["flow"])["coherent_frames"])  # nothing to score: FAIL
    assert not phys.coherence_verdict(math.nan)["pass"]


def test_physics_iq_metrics_score_generated_frames_only():
    """Defect: frame 0 (the conditioning image, equal to the GT's) was scored as if generated."""
    gt = torch.zeros(5, 3, 16, 16)
    generated = torch.full_like(gt, 0.5)
    generated[0] = gt[0]
    level = round(0.5 * 255) / 255
    assert rollout.prediction_metrics(generated, gt, 1)["mse"] == pytest.approx(level**2, rel=1e-6)
