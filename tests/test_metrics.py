"""Metrics against values written out by hand, baselines, and the pixel-weighted accumulator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from heads.metrics import (
    MetricAccumulator,
    depth_abs_rel,
    depth_delta1,
    depth_rmse_log,
    flow_epe,
    flow_epe_moving,
    flow_outlier_rate,
    median_depth_baseline,
    zero_flow_baseline,
)

# Depth: 4 pixels, the last GT is inf (invalid). pred/gt ratios 1.1, 0.75, 1.0.
DEPTH_GT = np.array([[1.0, 2.0, 4.0, np.inf]])
DEPTH_PRED = np.array([[1.1, 1.5, 4.0, 3.0]])


def test_depth_metrics_hand_computed() -> None:
    # AbsRel = (0.1/1 + 0.5/2 + 0/4) / 3
    assert depth_abs_rel(DEPTH_PRED, DEPTH_GT) == pytest.approx((0.1 + 0.25 + 0.0) / 3)
    # delta1: max ratios 1.1, 1.333.., 1.0 -> two of three below 1.25
    assert depth_delta1(DEPTH_PRED, DEPTH_GT) == pytest.approx(2 / 3)
    # RMSE(log) = sqrt((ln 1.1^2 + ln 0.75^2 + 0) / 3)
    assert depth_rmse_log(DEPTH_PRED, DEPTH_GT) == pytest.approx(math.sqrt((math.log(1.1) ** 2 + math.log(0.75) ** 2) / 3))
    # A mask removing the second pixel: AbsRel = (0.1 + 0) / 2
    mask = np.array([[True, False, True, True]])
    assert depth_abs_rel(DEPTH_PRED, DEPTH_GT, mask) == pytest.approx(0.05)


def test_depth_metrics_ignore_zero_and_nan_gt() -> None:
    gt = torch.tensor([[2.0, 0.0, math.nan, -1.0]])
    pred = torch.tensor([[1.0, 5.0, 5.0, 5.0]])
    assert depth_abs_rel(pred, gt) == pytest.approx(0.5)
    assert depth_delta1(pred, gt) == 0.0


# Flow: 5 pixels (a 1x5 image). gt = (3,4), (0,0), (0.3,0), (10,0), (NaN,0) [invalid];
# pred = (0,0), (0,0), (0,0), (6,0), (1,1). EPEs over valid pixels: 5, 0, 0.3, 4.
FLOW_GT = np.array([[3.0, 0.0, 0.3, 10.0, np.nan], [4.0, 0.0, 0.0, 0.0, 0.0]])[:, None, :]  # (2, 1, 5)
FLOW_PRED = np.array([[0.0, 0.0, 0.0, 6.0, 1.0], [0.0, 0.0, 0.0, 0.0, 1.0]])[:, None, :]


def test_flow_metrics_hand_computed() -> None:
    assert flow_epe(FLOW_PRED, FLOW_GT) == pytest.approx((5 + 0 + 0.3 + 4) / 4)
    # moving (|gt| > 0.5): pixels with |gt| 5 and 10
    assert flow_epe_moving(FLOW_PRED, FLOW_GT) == pytest.approx((5 + 4) / 2)
    # outliers: EPE 5 (> 3 and > 0.25) and EPE 4 (> 3 and > 0.5); 0.3 is not > 3
    assert flow_outlier_rate(FLOW_PRED, FLOW_GT) == pytest.approx(2 / 4)
    # relative criterion: EPE 4 is not an outlier when |gt| = 100 (4 < 5 % of 100)
    gt = np.array([[100.0], [0.0]])[:, None, :]
    assert flow_outlier_rate(np.array([[104.0], [0.0]])[:, None, :], gt) == 0.0


def test_zero_flow_baseline_hand_computed() -> None:
    base = zero_flow_baseline(FLOW_GT)
    assert base["epe"] == pytest.approx((5 + 0 + 0.3 + 10) / 4)
    assert base["epe_moving"] == pytest.approx((5 + 10) / 2)
    assert base["outlier_rate"] == pytest.approx(2 / 4)


def test_median_depth_baseline_per_clip() -> None:
    # clip 0: valid [1, 2, 3, 10] (inf ignored) -> median 2.5; clip 1: valid [7, 1, 5] (0 ignored) -> 5
    gt = torch.tensor([[[1.0, 2.0, math.inf], [3.0, 10.0, math.inf]], [[7.0, 0.0, 1.0], [5.0, 0.0, 0.0]]])
    base = median_depth_baseline(gt)
    assert torch.all(base[0] == 2.5) and torch.all(base[1] == 5.0)
    # AbsRel of the baseline on clip 1: (|5-7|/7 + |5-1|/1 + 0) / 3
    assert depth_abs_rel(base[1:], gt[1:]) == pytest.approx((2 / 7 + 4 + 0) / 3)


def _random_batch(seed: int, b: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    gt_flow = 3.0 * torch.randn(b, 3, 2, 6, 6, generator=g)
    gt_depth = 1.0 + 5.0 * torch.rand(b, 3, 6, 6, generator=g)
    mask = torch.rand(b, 3, 6, 6, generator=g) > 0.3 * (seed + 1)  # valid fraction differs per batch
    return {
        "pred_flow": gt_flow + torch.randn(b, 3, 2, 6, 6, generator=g),
        "gt_flow": gt_flow,
        "pred_depth": gt_depth * (1 + 0.2 * torch.randn(b, 3, 6, 6, generator=g)).clamp_min(0.1),
        "gt_depth": gt_depth,
        "mask": mask,
    }


def _accumulate(batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    acc = MetricAccumulator()
    for x in batches:
        acc.add_flow(x["pred_flow"], x["gt_flow"], x["mask"])
        acc.add_depth(x["pred_depth"], x["gt_depth"], x["mask"])
    return acc.compute()


def test_accumulator_equals_single_batch_on_concatenation() -> None:
    batches = [_random_batch(0, 2), _random_batch(1, 1)]
    whole = {k: torch.cat([x[k] for x in batches]) for k in batches[0]}
    split, joint = _accumulate(batches), _accumulate([whole])
    assert split.keys() == joint.keys()
    for k in split:
        assert split[k] == pytest.approx(joint[k], rel=1e-9), k
    # ...and that differs from the mean of per-batch means (the batches have different valid counts).
    per_batch = [_accumulate([x])["flow_epe"] for x in batches]
    assert abs(np.mean(per_batch) - split["flow_epe"]) > 1e-4


def test_accumulator_drops_frame_zero_and_reports_baselines() -> None:
    x = _random_batch(0, 1)
    x["pred_flow"][:, 0] += 1000.0  # frame 0 has no previous frame
    out = _accumulate([x])
    assert out["flow_epe"] < 10.0
    assert {"zero_flow_epe", "zero_flow_epe_moving", "median_depth_abs_rel", "depth_rmse_log"} <= set(out)
    mask = x["mask"].clone()
    mask[:, 0] = False
    assert out["flow_epe"] == pytest.approx(flow_epe(x["pred_flow"], x["gt_flow"], mask))
    assert out["zero_flow_epe"] == pytest.approx(zero_flow_baseline(x["gt_flow"], mask)["epe"])
    base = median_depth_baseline(x["gt_depth"], x["mask"])
    assert out["median_depth_abs_rel"] == pytest.approx(depth_abs_rel(base, x["gt_depth"], x["mask"]))


def test_moving_pixel_depth_sees_a_body_painted_with_the_background_depth() -> None:
    """A head that gets the static scene right and gives a moving body the depth of the wall behind
    it (what the demo heads do to balls in flight) barely moves the all-pixel AbsRel; the
    moving-pixel AbsRel shows it, and counts only pixels whose flow target moves (not frame 0)."""
    from heads.metrics import add_head_outputs

    t, h, w = 3, 16, 16
    depth = torch.full((1, t, h, w), 4.0)
    flow = torch.zeros(1, t, 2, h, w)
    body = (slice(None), slice(None), slice(6, 9), slice(6, 9))  # 9 px of 256: a small ball
    depth[body] = 2.0
    flow[:, :, 0, 6:9, 6:9] = 3.0  # it moves 3 px a frame (frame 0's flow is no target)
    target = {"depth": depth, "depth_valid": torch.ones(1, t, h, w, dtype=torch.bool),
              "flow": flow, "flow_valid": torch.ones(1, t, h, w, dtype=torch.bool)}
    painted = torch.full_like(depth, 4.0)  # the body at the wall's depth

    def scores(pred_depth: torch.Tensor) -> dict:
        acc = MetricAccumulator(skip_first_frame=True)
        add_head_outputs([acc], flow, pred_depth.log(), target)
        return acc.compute()

    exact, smeared = scores(depth), scores(painted)
    assert exact["depth_moving_abs_rel"] == pytest.approx(0.0)
    assert smeared["depth_moving_abs_rel"] == pytest.approx(1.0)  # |4 - 2| / 2 on every body pixel
    assert smeared["depth_abs_rel"] < 0.04  # 9 of 256 pixels
    assert smeared["depth_moving_pixels"] == 2 * 9  # frames 1 and 2 only
    # The per-clip median baseline is scored on the same pixels: 4 m against 2 m.
    assert smeared["median_depth_moving_abs_rel"] == pytest.approx(1.0)


def test_moving_pixel_depth_is_absent_without_a_moving_mask() -> None:
    acc = MetricAccumulator()
    acc.add_depth(torch.ones(1, 2, 4, 4), torch.ones(1, 2, 4, 4))
    assert "depth_moving_abs_rel" not in acc.compute()
