"""Classical flow baselines (OpenCV DIS, Farneback) in the target's convention, scored on the heads' pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from data.flow import backward_warp
from heads.classical_flow import CLASSICAL_FLOW_METHODS, classical_backward_flow
from heads.metrics import add_head_outputs, flow_epe, head_accumulator

SIZE, SHIFT = 64, (3, -2)  # content moves 3 px right and 2 px up per frame
MARGIN = 12  # pixels near the border see content entering the frame: not scored


def _translated_frames(frames: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, T, 3, H, W) frames of a smooth random texture translated by SHIFT per frame, and the
    ground truth in the project convention: backward flow -SHIFT everywhere (frame 0: zero)."""
    rng = np.random.default_rng(0)
    big = SIZE + 2 * MARGIN + frames * 4
    coarse = (rng.random((big // 4, big // 4, 3)) * 255).astype(np.uint8)
    texture = np.asarray(Image.fromarray(coarse).resize((big, big), Image.BICUBIC), dtype=np.float32) / 255
    dx, dy = SHIFT
    x0, y0 = MARGIN, MARGIN + frames * 2
    stack = [texture[y0 - t * dy: y0 - t * dy + SIZE, x0 - t * dx: x0 - t * dx + SIZE] for t in range(frames)]
    rgb = torch.from_numpy(np.stack(stack)).permute(0, 3, 1, 2)[None]
    gt = torch.zeros(1, frames, 2, SIZE, SIZE)
    gt[:, 1:, 0], gt[:, 1:, 1] = -dx, -dy
    return rgb, gt


def _interior(frames: int) -> torch.Tensor:
    mask = torch.zeros(1, frames, SIZE, SIZE, dtype=torch.bool)
    mask[:, 1:, MARGIN:-MARGIN, MARGIN:-MARGIN] = True
    return mask


def test_the_synthetic_ground_truth_follows_the_project_convention():
    """I_t(p) = I_{t-1}(p + f_t(p)) (data.flow): warping frame 0 by the GT flow gives frame 1."""
    rgb, gt = _translated_frames()
    warped, _ = backward_warp(rgb[0, :1], gt[0, 1:2])
    inner = (slice(None), slice(None), slice(MARGIN, -MARGIN), slice(MARGIN, -MARGIN))
    assert torch.allclose(warped[inner], rgb[0, 1:2][inner], atol=1e-5)


@pytest.mark.parametrize("method", sorted(CLASSICAL_FLOW_METHODS))
def test_classical_flow_has_the_direction_and_sign_of_the_target(method):
    rgb, gt = _translated_frames()
    flow = classical_backward_flow(rgb, method)
    assert flow.shape == gt.shape and torch.count_nonzero(flow[:, 0]) == 0
    mask = _interior(3)
    assert flow_epe(flow, gt, mask) < 0.3, method
    # The opposite direction (forward flow) would be off by twice the motion, |2 * SHIFT| = 7.2 px.
    assert flow_epe(-flow, gt, mask) > 6.0, method


def test_baselines_are_scored_on_exactly_the_heads_pixels():
    """A head predicting DIS's own flow scores exactly what DIS scores (frame 0 and invalid pixels
    dropped alike); zero flow, DIS and Farneback all appear in the metrics."""
    rgb, gt = _translated_frames(frames=4)
    valid = torch.ones(1, 4, SIZE, SIZE, dtype=torch.bool)  # frame 0 valid here: the accumulator must drop it
    valid[:, 2, :10] = False
    dis = classical_backward_flow(rgb, "dis")
    acc = head_accumulator(moving_threshold=0.5, far=100.0)
    depth = torch.ones(1, 4, SIZE, SIZE)
    target = {"rgb": rgb, "flow": gt, "flow_valid": valid, "depth": depth, "depth_valid": valid}
    add_head_outputs([acc], dis, torch.zeros(1, 4, SIZE, SIZE), target, flow_baselines=True)
    m = acc.compute()
    for key in ("flow_epe", "flow_epe_moving", "flow_outlier_rate"):
        assert m[f"dis_{key}"] == m[key], key
        assert f"farneback_{key}" in m and f"zero_{key}" in m
    assert m["zero_flow_epe"] == pytest.approx(float(np.hypot(*SHIFT)))
    assert m["flow_valid_pixels"] == float(valid[:, 1:].sum())


def test_flow_baselines_need_the_frames():
    flow = torch.zeros(1, 2, 2, 8, 8)
    target = {"flow": flow, "flow_valid": torch.ones(1, 2, 8, 8, dtype=torch.bool),
              "depth": torch.ones(1, 2, 8, 8), "depth_valid": torch.ones(1, 2, 8, 8, dtype=torch.bool)}
    with pytest.raises(KeyError, match="rgb"):
        add_head_outputs([head_accumulator(0.5, 100.0)], flow, torch.zeros(1, 2, 8, 8), target, flow_baselines=True)
