"""Depth scored three ways: metric, scale-aligned (per-clip median ratio) and affine-aligned (per-clip
least squares in inverse depth), for the heads and the median baseline alike, on invalid-free pixels."""

from __future__ import annotations

import math

import pytest
import torch

from heads.depth_align import MIN_INVERSE_DEPTH, affine_align
from heads.metrics import MetricAccumulator


def _depth(seed: int, clips: int = 2, frames: int = 3, size: int = 16) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 1.0 + 9.0 * torch.rand(clips, frames, size, size, generator=gen, dtype=torch.float64)


def _scores(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, float]:
    acc = MetricAccumulator()
    acc.add_depth(pred, gt, mask)
    return acc.compute()


def test_a_global_scale_error_is_forgiven_by_scale_alignment_per_clip():
    gt = _depth(0)
    pred = gt * torch.tensor([2.0, 0.5], dtype=torch.float64).view(2, 1, 1, 1)  # a different scale per clip
    m = _scores(pred, gt)
    # Metric: clip 0 is off by 1.0 relative, clip 1 by 0.5 (equal pixel counts).
    assert m["depth_abs_rel"] == pytest.approx(0.75)
    assert m["depth_rmse_log"] == pytest.approx(math.log(2))
    assert m["depth_delta1"] == 0.0
    for alignment in ("scale", "affine"):
        assert m[f"depth_{alignment}_abs_rel"] == pytest.approx(0.0, abs=1e-9), alignment
        assert m[f"depth_{alignment}_rmse_log"] == pytest.approx(0.0, abs=1e-9), alignment
        assert m[f"depth_{alignment}_delta1"] == 1.0, alignment


def test_pred_twice_gt_has_scale_aligned_abs_rel_0_and_metric_abs_rel_1():
    gt = _depth(1, clips=1)
    m = _scores(2 * gt, gt)
    assert m["depth_abs_rel"] == pytest.approx(1.0)
    assert m["depth_scale_abs_rel"] == pytest.approx(0.0, abs=1e-12)


def test_an_inverse_depth_affine_distortion_is_undone_by_affine_alignment_only():
    gt = _depth(2)
    pred = 1.0 / (0.5 / gt + 0.2)  # disparity scaled and shifted: the shape of depth changes
    m = _scores(pred, gt)
    assert m["depth_affine_abs_rel"] == pytest.approx(0.0, abs=1e-9)
    assert m["depth_affine_delta1"] == 1.0
    assert m["depth_scale_abs_rel"] > 0.1 and m["depth_scale_delta1"] < 0.9
    assert m["depth_abs_rel"] > 0.1


def test_invalid_pixels_take_no_part_in_fits_or_scores():
    gt = _depth(3)
    pred = 2.0 * gt
    gen = torch.Generator().manual_seed(4)
    mask = torch.rand(gt.shape, generator=gen) > 0.4
    # Outside the mask: garbage predictions far from 2 x gt that would move a median or a fit.
    pred = torch.where(mask, pred, torch.full_like(pred, 50.0))
    # And GT that is invalid by itself (inf, 0, NaN) where the mask would let it through.
    gt = gt.clone()
    gt[0, 0, 0, :3] = torch.tensor([math.inf, 0.0, math.nan], dtype=torch.float64)
    mask[0, 0, 0, :3] = True
    m = _scores(pred, gt, mask)
    assert m["depth_valid_pixels"] == float(mask.sum()) - 3
    assert m["depth_abs_rel"] == pytest.approx(1.0)
    assert m["depth_scale_abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert m["depth_affine_abs_rel"] == pytest.approx(0.0, abs=1e-9)


def test_the_median_baseline_goes_through_the_same_alignments():
    """Constant per clip: scale alignment leaves it as is, affine alignment makes it the harmonic mean."""
    gt = _depth(5, clips=1)
    m = _scores(gt, gt)
    for key in ("abs_rel", "delta1", "rmse_log"):
        assert m[f"median_depth_scale_{key}"] == pytest.approx(m[f"median_depth_{key}"], abs=1e-12), key
    harmonic = 1.0 / (1.0 / gt).mean()
    assert m["median_depth_affine_abs_rel"] == pytest.approx(float(((harmonic - gt).abs() / gt).mean()))
    assert m["median_depth_affine_abs_rel"] != pytest.approx(m["median_depth_abs_rel"])


def test_affine_alignment_clamps_inverse_depth_beyond_infinity():
    """A fit with a negative scale maps far predictions to negative inverse depth: scored as 1/MIN_INVERSE_DEPTH."""
    gt = torch.tensor([[1.0, 1 / 2, 1 / 3, 1.0]], dtype=torch.float64)  # inverse depth 1, 2, 3
    pred = torch.tensor([[1 / 3, 1 / 2, 1.0, 1 / 9]], dtype=torch.float64)  # inverse 3, 2, 1 (and 9, not fitted)
    valid = torch.tensor([[True, True, True, False]])
    aligned = affine_align(pred, gt, valid)  # s = -1, t = 4: pixel 3 lands at inverse depth -5
    assert torch.allclose(aligned[0, :3], gt[0, :3])
    assert aligned[0, 3] == pytest.approx(1.0 / MIN_INVERSE_DEPTH)
