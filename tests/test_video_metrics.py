"""Physics-IQ video metrics against answers written out by hand (official conventions)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from heads.video_metrics import (
    EMPTY_IOU,
    frame_ious,
    gaussian_blur5,
    motion_masks,
    physics_iq_metrics,
    physics_iq_score,
    resize_masks,
    rgb_to_gray,
    spatial_iou,
    spatiotemporal_iou,
    video_mse,
    weighted_spatial_iou,
)

SIZE = 32
SQUARE = 8


def square_video(frames: int, step: int, start: int = 12, background: int = 40, fg: int = 220) -> np.ndarray:
    """(T, 32, 32, 3) uint8: a gray 8x8 square moving `step` px per frame along x on a flat background."""
    video = np.full((frames, SIZE, SIZE, 3), background, dtype=np.uint8)
    for t in range(frames):
        x = start + step * t
        video[t, 12 : 12 + SQUARE, max(x, 0) : max(x + SQUARE, 0)] = fg
    return video


def band_masks(cols_per_frame: list[tuple[int, int]], width: int = 10, height: int = 2) -> np.ndarray:
    """(T, height, width) bool; frame t is True on columns [a, b) for (a, b) = cols_per_frame[t]."""
    m = np.zeros((len(cols_per_frame), height, width), dtype=bool)
    for t, (a, b) in enumerate(cols_per_frame):
        m[t, :, a:b] = True
    return m


def test_identical_videos_score_perfectly() -> None:
    video = square_video(6, step=3)
    for downsample in (1, 4):
        m = physics_iq_metrics(video, video, downsample=downsample)
        assert m == {"spatial_iou": 1.0, "spatiotemporal_iou": 1.0, "weighted_spatial_iou": 1.0, "mse": 0.0}
    masks = motion_masks(video)
    assert masks[1:].any(axis=(1, 2)).all()  # the square really moves, so the IoUs are not trivially 1


def test_square_right_vs_left_hand_computed() -> None:
    # A 4-px-wide band moving 1 px/frame right (pred) vs left (gt), 3 frames, 10 columns:
    #   right: cols [4,8), [5,9), [6,10)      left: cols [4,8), [3,7), [2,6)
    pred = band_masks([(4, 8), (5, 9), (6, 10)])
    gt = band_masks([(4, 8), (3, 7), (2, 6)])
    # Per frame: f0 identical -> 1; f1 inter [5,7)=2, union [3,9)=6 -> 1/3; f2 [6,10) vs [2,6) -> 0.
    np.testing.assert_allclose(frame_ious(pred, gt), [1.0, 1 / 3, 0.0])
    assert spatiotemporal_iou(pred, gt) == pytest.approx((1 + 1 / 3 + 0) / 3)  # 4/9
    # Collapsed over time: right [4,10) (6 cols), left [2,8) (6 cols); inter [4,8)=4, union [2,10)=8.
    assert spatial_iou(pred, gt) == pytest.approx(4 / 8)
    # Frames moving at each column (x 1/3):  col 2 3 4 5 6 7 8 9
    #   right                                    0 0 1 2 3 3 2 1
    #   left                                     1 2 3 3 2 1 0 0
    # sum(min) = 1+2+2+1 = 6; sum(max) = 1+2+3+3+3+3+2+1 = 18 (the 1/3 and the rows cancel).
    assert weighted_spatial_iou(pred, gt) == pytest.approx(6 / 18)


def test_mirrored_motion_gives_mirrored_masks() -> None:
    right = square_video(5, step=3, start=8)
    left = right[:, :, ::-1]  # the same square moving left
    m_right, m_left = motion_masks(right), motion_masks(left)
    # Gray, blur (reflect-101), threshold and the square kernels are all mirror-symmetric.
    np.testing.assert_array_equal(m_left, m_right[:, :, ::-1])
    assert spatial_iou(m_left, m_right) == pytest.approx(
        (m_left.any(0) & m_right.any(0)).sum() / (m_left.any(0) | m_right.any(0)).sum()
    )
    assert spatial_iou(m_left, m_right) < 1.0


def test_static_prediction_of_moving_scene() -> None:
    gt = square_video(6, step=3)
    static = np.repeat(gt[:1], len(gt), axis=0)
    assert not motion_masks(static).any()
    gt_masks = motion_masks(gt)
    assert not gt_masks[0].any() and gt_masks[1:].any(axis=(1, 2)).all()
    m = physics_iq_metrics(static, gt, downsample=1)
    assert m["spatial_iou"] == 0.0
    assert m["weighted_spatial_iou"] == 0.0
    # Official convention: frame 0 is empty in both (IoU 1), frames 1..5 move only in gt (IoU 0).
    assert m["spatiotemporal_iou"] == pytest.approx(1 / 6)
    # Both static: every IoU is the empty-mask value.
    empty = np.zeros((4, 5, 5), dtype=bool)
    assert spatial_iou(empty, empty) == spatiotemporal_iou(empty, empty) == weighted_spatial_iou(empty, empty) == EMPTY_IOU


def test_mse_hand_computed() -> None:
    pred = np.zeros((2, 1, 2, 3), dtype=np.uint8)
    gt = np.zeros((2, 1, 2, 3), dtype=np.uint8)
    gt[0, 0, 0, :] = 51  # 51/255 = 0.2 on 3 of the 6 values of frame 0
    # frame 0: 3 * 0.04 / 6 = 0.02; frame 1: 0 -> mean over frames 0.01
    assert video_mse(pred, gt) == pytest.approx(0.01)
    assert video_mse(pred.astype(np.float32) / 255, torch.from_numpy(gt.astype(np.float32) / 255)) == pytest.approx(0.01)
    with pytest.raises(ValueError):
        video_mse(pred, gt[:1])


def test_threshold_on_a_uniform_brightness_step() -> None:
    # Gray 100 then 100 + c. avg_1 = 0.7 * 100 + 0.3 * (100 + c); diff = |100 + c - round(avg_1)|.
    # c = 14: avg 104.2 -> 104, diff 10, not > 10 -> no motion.  c = 16: avg 104.8 -> 105, diff 11.
    for c, moves in ((14, False), (16, True)):
        video = np.full((2, 16, 16, 3), 100, dtype=np.uint8)
        video[1] += c
        m = motion_masks(video)
        assert not m[0].any()
        assert m[1].all() if moves else not m[1].any()


def test_opening_removes_small_changes() -> None:
    # A 1-px speck of +210 appears. Blurred, its difference |g - round(avg)| is ~0.7 * 210 * w with
    # w = 36/256 (centre), 24/256 (edge), 16/256 (corner) -> 20.7, 13.8, 9.2: a 3x3 plus above the
    # threshold, which the 5x5 opening erases. An 8x8 patch survives.
    for side, moves in ((1, False), (8, True)):
        video = np.full((2, 24, 24, 3), 40, dtype=np.uint8)
        video[1, 8 : 8 + side, 8 : 8 + side] = 250
        assert motion_masks(video)[1].any() == moves


def test_gray_and_blur_match_opencv_arithmetic() -> None:
    rgb = np.array([[[[255, 0, 0], [0, 255, 0], [0, 0, 255], [77, 77, 77]]]], dtype=np.uint8)
    # (9798*255 + 2^14) >> 15 = 76 etc.; equal channels keep their value.
    np.testing.assert_array_equal(rgb_to_gray(rgb), [[[76, 150, 29, 77]]])
    impulse = np.zeros((1, 9, 9), dtype=np.uint8)
    impulse[0, 4, 4] = 255
    out = gaussian_blur5(impulse)
    # centre tap 6*6/256: (36*255 + 128) >> 8 = 36; corner tap 1/256: (255 + 128) >> 8 = 1
    assert out[0, 4, 4] == 36 and out[0, 2, 2] == 1 and out[0, 1, 1] == 0
    flat = np.full((1, 6, 7), 123, dtype=np.uint8)
    np.testing.assert_array_equal(gaussian_blur5(flat), flat)


def test_resize_masks_rebinarises_at_half() -> None:
    # 8 -> 2 columns: output column j samples input columns 4j+1 and 4j+2 with weight 1/2 each.
    m = np.zeros((1, 4, 8), dtype=bool)
    m[0, :, 1] = True  # half of the samples for output column 0 -> 0.5 -> kept (cv2: 127.5 -> 128 > 127)
    m[0, :, 7] = True  # not sampled for column 1 -> dropped
    np.testing.assert_array_equal(resize_masks(m, (1, 2)), [[[True, False]]])


def test_take2_variance_and_score() -> None:
    gt = square_video(6, step=3)
    pred = square_video(6, step=-3)
    m = physics_iq_metrics(pred, gt, gt_video_take2=gt, downsample=1)
    assert m["variance_spatial_iou"] == m["variance_spatiotemporal_iou"] == 1.0
    assert m["variance_weighted_spatial_iou"] == 1.0 and m["variance_mse"] == 0.0
    assert 0.0 < m["spatiotemporal_iou"] < 1.0 and m["mse"] > 0.0
    var = {"spatiotemporal_iou": 0.4, "spatial_iou": 0.6, "weighted_spatial_iou": 0.5, "mse": 0.01}
    model = {"spatiotemporal_iou": 0.2, "spatial_iou": 0.3, "weighted_spatial_iou": 0.1, "mse": 0.02}
    # 100 * ((0.5 + 0.5 + 0.2) / 3 - (0.02 - 0.01)) = 100 * (0.4 - 0.01) = 39
    assert physics_iq_score(model, var) == pytest.approx(39.0)
    assert physics_iq_score(var, var) == pytest.approx(100.0)
    assert physics_iq_score({**model, "mse": 2.0}, var) == 0.0  # clipped at 0
