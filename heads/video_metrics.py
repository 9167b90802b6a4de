"""Physics-IQ video metrics: motion masks by frame differencing, three IoUs, MSE and the score.

Re-implemented in numpy/torch (no OpenCV) from the official benchmark code,
github.com/google-deepmind/physics-IQ-benchmark at commit e457754f (paths below are in that repo),
and the paper "Do generative video models understand physical principles?" (Motamed et al. 2025,
arXiv 2501.09038, the metrics part of §2 and the mask algorithm in the appendix, "Algorithm 2").

Pipeline per (prediction, ground truth) pair, as in `code/calculate_and_write_metrics_to_csv.py`:
1. Motion masks are computed from each video at its *own native resolution*
   (`code/binary_mask_generator.py`), then resized to 1/4 of the ground truth's resolution and
   re-binarised; the RGB frames are resized to the same size and scaled to [0, 1].
2. Spatial, spatiotemporal and weighted spatial IoU (higher is better) and MSE (lower is better)
   compare the prediction with take 1 of the ground truth. The same four numbers between take 1
   and take 2 of the real scene are the "physical variance" used to normalise the score.
3. `physics_iq_score` combines dataset means exactly as `code/calculate_iq_score.py` does.

The official tool reads .mp4 files (lossy codecs) and takes the first 5 s (`fps * 5` frames) of each
video; here the caller passes decoded, time-aligned frames, so codec noise is absent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ArrayLike = Any  # np.ndarray | torch.Tensor

# --- constants, each with its source (official repo paths, commit e457754f) -------------------------
MOTION_THRESHOLD = 10
"""Gray-level difference that counts as motion, strictly greater (`cv2.THRESH_BINARY`):
`threshold_value: int = 10` in `code/binary_mask_generator.py` (generate_mask, line 23; CLI default
line 173)."""
RUNNING_AVG_ALPHA = 0.3
"""Weight of the new frame in the running-average background, `cv2.accumulateWeighted(..., 0.3)`,
`code/binary_mask_generator.py` line 97."""
BLUR_KSIZE = 5
"""Gaussian blur kernel 5x5 with sigma 0, `cv2.GaussianBlur(gray, (5, 5), 0)`, lines 79 and 95. For
ksize 5 and sigma <= 0 OpenCV uses the fixed binomial taps 1-4-6-4-1 / 16 (`small_gaussian_tab` in
opencv `modules/imgproc/src/smooth.dispatch.cpp`), with reflect-101 borders (BORDER_DEFAULT)."""
BLUR_TAPS = (1, 4, 6, 4, 1)
MORPH_KSIZE = 5
"""Square all-ones structuring element, `np.ones((5, 5))`, line 87; opening then closing, lines
106-107. OpenCV's default morphology border never erodes or dilates from outside the image."""
GRAY_COEFFS_Q15 = (9798, 19235, 3735)
"""R, G, B weights of `cv2.COLOR_BGR2GRAY` (lines 78, 94) for uint8 in OpenCV 4: BT.601
0.299/0.587/0.114 in Q15 fixed point with round-half-up (`RY15, GY15, BY15`, `gray_shift = 15` in
opencv `modules/imgproc/src/color.hpp`)."""
EVAL_DOWNSAMPLE = 4
"""Masks and frames are compared at (H // 4, W // 4) of the take-1 ground truth:
`target_size = (shape[1] // 4, shape[0] // 4)`, `code/calculate_and_write_metrics_to_csv.py` lines
247-250, resized with cv2.resize's default bilinear interpolation (line 145)."""
MASK_REBINARIZE_LEVEL = 0.5
"""Resized 0/255 masks are re-binarised with `mask > 127` (same file, lines 289-291). With cv2's
rounding that is `bilinear value >= 127.5 / 255`, i.e. >= 0.5 on a {0, 1} mask."""
EMPTY_IOU = 1.0
"""IoU when both masks are empty (union 0): 1.0, "Both masks are empty" in
`spatiotemporal_iou_per_frame` (lines 177-178) and "perfect match" in
`compute_weighted_spatial_iou` (lines 164-166). A prediction with no motion against a moving ground
truth therefore scores 0 on every frame where the ground truth moves and 1 on the others."""
EVAL_SECONDS = 5
"""The official tool scores the first 5 s of every video (`consider_frames = fps * 5`, line 191);
frame rates 8, 16, 24 or 30 (README). Crop to `EVAL_SECONDS * fps` frames before calling here."""
HIGHER_IS_BETTER = {"spatial_iou": True, "spatiotemporal_iou": True, "weighted_spatial_iou": True, "mse": False}
METRIC_NAMES = tuple(HIGHER_IS_BETTER)


# --- frame preprocessing ----------------------------------------------------------------------------
def to_uint8_video(video: ArrayLike) -> np.ndarray:
    """(T, H, W, 3) RGB uint8, or float in [0, 1] -> (T, H, W, 3) uint8 (float: round(x * 255)).

    The official tool works on decoded 8-bit frames, so float input is quantised the same way.
    """
    v = video.detach().cpu().numpy() if isinstance(video, torch.Tensor) else np.asarray(video)
    if v.ndim != 4 or v.shape[-1] != 3:
        raise ValueError(f"expected a (T, H, W, 3) RGB video, got shape {v.shape}")
    if v.dtype == np.uint8:
        return v
    return np.clip(np.rint(v.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)


def rgb_to_gray(video: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB -> (T, H, W) uint8 luma, bit-exact with cv2's 8-bit BGR2GRAY.

    gray = (9798 R + 19235 G + 3735 B + 2**14) >> 15 (see GRAY_COEFFS_Q15). The weights sum to 2**15,
    so a gray pixel (R = G = B) keeps its value.
    """
    r, g, b = (video[..., c].astype(np.int32) for c in range(3))
    cr, cg, cb = GRAY_COEFFS_Q15
    return ((cr * r + cg * g + cb * b + (1 << 14)) >> 15).astype(np.uint8)


def gaussian_blur5(gray: np.ndarray) -> np.ndarray:
    """(T, H, W) uint8 -> (T, H, W) uint8, the 5x5 binomial blur cv2.GaussianBlur(., (5, 5), 0) applies.

    OpenCV's 8-bit path is bit-exact fixed point: taps 1-4-6-4-1 / 16 per axis, so the 2-D sum S is
    an integer over 256 and the output is floor((S + 128) / 256). Borders are reflect-101, which is
    numpy's "reflect" mode (…cb|abc…, the edge pixel is not repeated).
    """
    taps = np.asarray(BLUR_TAPS, dtype=np.int32)
    r = len(taps) // 2
    x = np.pad(gray.astype(np.int32), ((0, 0), (r, r), (r, r)), mode="reflect")
    h, w = gray.shape[-2:]
    # Separable: rows then columns; integer sums keep it exact.
    x = sum(taps[i] * x[:, :, i : i + w] for i in range(len(taps)))
    x = sum(taps[i] * x[:, i : i + h, :] for i in range(len(taps)))
    return ((x + 128) >> 8).astype(np.uint8)


def _window_reduce(mask: np.ndarray, k: int, erode: bool) -> np.ndarray:
    """Min (erode) or max (dilate) of a bool (T, H, W) mask over a k x k square, separably.

    Padding with True for erosion and False for dilation makes out-of-image pixels neutral, as
    OpenCV's default morphology border value does.
    """
    r = k // 2
    x = np.pad(mask, ((0, 0), (r, r), (r, r)), constant_values=erode)
    h, w = mask.shape[-2:]
    op = np.logical_and if erode else np.logical_or
    rows = x[:, :, 0:w]
    for i in range(1, k):
        rows = op(rows, x[:, :, i : i + w])
    out = rows[:, 0:h, :]
    for i in range(1, k):
        out = op(out, rows[:, i : i + h, :])
    return out


def open_close(mask: np.ndarray, k: int = MORPH_KSIZE) -> np.ndarray:
    """(T, H, W) bool -> (T, H, W) bool: morphological opening then closing with a k x k square.

    Opening (erode, dilate) removes specks narrower than k; closing (dilate, erode) fills holes.
    """
    opened = _window_reduce(_window_reduce(mask, k, erode=True), k, erode=False)
    return _window_reduce(_window_reduce(opened, k, erode=False), k, erode=True)


def motion_masks(
    video: ArrayLike,
    threshold: int = MOTION_THRESHOLD,
    alpha: float = RUNNING_AVG_ALPHA,
    morph_ksize: int = MORPH_KSIZE,
) -> np.ndarray:
    """Binary motion masks by running-average background subtraction (official `generate_mask`).

    video: (T, H, W, 3) RGB, uint8 or float in [0, 1]. Returns (T, H, W) bool, T' = T: frame 0 is
    all False (the official tool writes an empty first mask). For t >= 1:
      g_t   = blur5(gray(frame_t))                       (uint8)
      avg_t = alpha * g_t + (1 - alpha) * avg_{t-1}       (float64, avg_0 = g_0; updated *before*
                                                           the difference, as in the official loop)
      m_t   = open_close(|g_t - round(avg_t)| > threshold)
    Because avg_t already contains 0.3 of g_t, a step change of c gray levels gives a difference of
    about 0.7 c: the first frame of a change needs c >= ~15 to register with threshold 10.
    Constants: see MOTION_THRESHOLD, RUNNING_AVG_ALPHA, BLUR_KSIZE, MORPH_KSIZE, GRAY_COEFFS_Q15.
    """
    gray = gaussian_blur5(rgb_to_gray(to_uint8_video(video)))
    masks = np.zeros(gray.shape, dtype=bool)
    avg = gray[0].astype(np.float64)
    for t in range(1, gray.shape[0]):
        g = gray[t].astype(np.float64)
        avg = g * alpha + avg * (1.0 - alpha)  # cv2.accumulateWeighted's operation order
        background = np.clip(np.rint(np.abs(avg)), 0, 255)  # cv2.convertScaleAbs (round half even)
        masks[t] = np.abs(g - background) > threshold
    masks[1:] = open_close(masks[1:], morph_ksize)
    return masks


# --- resizing to the evaluation size ----------------------------------------------------------------
def _bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(T, H, W[, C]) -> (T, h, w[, C]) float64, cv2.INTER_LINEAR's sampling (half-pixel centres, no
    antialiasing); torch's bilinear with align_corners=False uses the same source coordinates."""
    if tuple(x.shape[1:3]) == tuple(size):
        return x.astype(np.float64)
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    t = t.unsqueeze(-1) if t.ndim == 3 else t
    t = F.interpolate(t.permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=False, antialias=False)
    out = t.permute(0, 2, 3, 1).numpy()
    return out[..., 0] if x.ndim == 3 else out


def resize_masks(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(T, H, W) bool -> (T, h, w) bool: bilinear resize, then >= 0.5 (MASK_REBINARIZE_LEVEL)."""
    return _bilinear(masks.astype(np.float64), size) >= MASK_REBINARIZE_LEVEL


def resize_frames(video: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, h, w, 3) float64 in [0, 1]: bilinear, rounded to 8 bits (cv2 resizes
    uint8 frames), then / 255 (`normalize=True` in the official `load_and_resize_video`)."""
    return np.clip(np.floor(_bilinear(video, size) + 0.5), 0, 255) / 255.0


# --- metrics ----------------------------------------------------------------------------------------
def _as_bool(masks: ArrayLike) -> np.ndarray:
    m = masks.detach().cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
    return m.astype(bool)


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} must have the same shape")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two bool arrays of any shape; EMPTY_IOU when both are empty."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union > 0 else EMPTY_IOU


def frame_ious(pred_masks: ArrayLike, gt_masks: ArrayLike) -> np.ndarray:
    """(T, H, W) bool x2 -> (T,) float64 IoU per frame, EMPTY_IOU where both frames are empty."""
    p, g = _as_bool(pred_masks), _as_bool(gt_masks)
    _check_pair(p, g)
    return np.array([_iou(pt, gt) for pt, gt in zip(p, g)], dtype=np.float64)


def spatiotemporal_iou(pred_masks: ArrayLike, gt_masks: ArrayLike) -> float:
    """Where and when motion happens. (T, H, W) bool x2 -> mean over frames of the per-frame IoU.

    Official `spatiotemporal_iou_per_frame` (calculate_and_write_metrics_to_csv.py lines 171-182);
    the score averages the per-frame list (calculate_iq_score.py lines 99-102). Higher is better.
    """
    return float(frame_ious(pred_masks, gt_masks).mean())


def spatial_iou(pred_masks: ArrayLike, gt_masks: ArrayLike) -> float:
    """Where motion happens. (T, H, W) bool x2 -> IoU of the time-collapsed masks (any motion at a
    pixel over the clip, `spatial_binary_masks` = max over time, lines 78-90; IoU lines 316-318).
    EMPTY_IOU when neither video moves. Higher is better."""
    p, g = _as_bool(pred_masks), _as_bool(gt_masks)
    _check_pair(p, g)
    return _iou(p.any(axis=0), g.any(axis=0))


def weighted_spatial_iou(pred_masks: ArrayLike, gt_masks: ArrayLike) -> float:
    """Where and how much motion happens. (T, H, W) bool x2 -> sum(min(wp, wg)) / sum(max(wp, wg)),
    where w = fraction of frames in which each pixel moves (`weighted_spatial_mask`, lines 92-97;
    `compute_weighted_spatial_iou`, lines 154-168). EMPTY_IOU when both are all zero. Higher is
    better."""
    p, g = _as_bool(pred_masks), _as_bool(gt_masks)
    _check_pair(p, g)
    wp, wg = p.mean(axis=0), g.mean(axis=0)
    union = np.maximum(wp, wg).sum()
    return float(np.minimum(wp, wg).sum() / union) if union > 0 else EMPTY_IOU


def video_mse(pred_video: ArrayLike, gt_video: ArrayLike) -> float:
    """How motion happens, pixel-wise. (T, H, W, 3) x2 (uint8 or float in [0, 1]) -> mean over frames
    of the per-frame mean squared error of [0, 1] intensities (`mse_per_frame`, lines 100-116; the
    score averages the per-frame list, calculate_iq_score.py lines 94-97). Lower is better."""
    p, g = to_uint8_video(pred_video), to_uint8_video(gt_video)
    _check_pair(p, g)
    d = (p.astype(np.float64) - g.astype(np.float64)) / 255.0
    return float((d**2).mean(axis=(1, 2, 3)).mean())


def _mask_metrics(pred_masks: np.ndarray, gt_masks: np.ndarray) -> dict[str, float]:
    return {
        "spatial_iou": spatial_iou(pred_masks, gt_masks),
        "spatiotemporal_iou": spatiotemporal_iou(pred_masks, gt_masks),
        "weighted_spatial_iou": weighted_spatial_iou(pred_masks, gt_masks),
    }


def physics_iq_metrics(
    pred_video: ArrayLike,
    gt_video: ArrayLike,
    gt_video_take2: ArrayLike | None = None,
    downsample: int = EVAL_DOWNSAMPLE,
    threshold: int = MOTION_THRESHOLD,
) -> dict[str, float]:
    """The four Physics-IQ metrics of one view: prediction vs take 1 of the ground truth.

    pred_video: (T, H', W', 3); gt_video, gt_video_take2: (T, H, W, 3); RGB uint8 or float [0, 1],
    time-aligned with the same T (crop to EVAL_SECONDS * fps first). Masks are computed at each
    video's own resolution, then everything is compared at (H // downsample, W // downsample)
    (EVAL_DOWNSAMPLE = 4 officially; use 1 for small renders where /4 would erase objects).
    Returns spatial_iou, spatiotemporal_iou, weighted_spatial_iou, mse. With gt_video_take2 (the
    second real recording, which only the Physics-IQ dataset has) it also returns
    `variance_<name>`: the same metrics between take 1 and take 2, the "physical variance".
    """
    gt = to_uint8_video(gt_video)
    pred = to_uint8_video(pred_video)
    if pred.shape[0] != gt.shape[0]:
        raise ValueError(f"prediction has {pred.shape[0]} frames, ground truth {gt.shape[0]}")
    size = (gt.shape[1] // downsample, gt.shape[2] // downsample)
    if min(size) < 1:
        raise ValueError(f"downsample={downsample} leaves no pixels of a {gt.shape[1]}x{gt.shape[2]} video")
    gt_m = resize_masks(motion_masks(gt, threshold), size)
    gt_f = resize_frames(gt, size)
    out = _mask_metrics(resize_masks(motion_masks(pred, threshold), size), gt_m)
    out["mse"] = video_mse(resize_frames(pred, size), gt_f)
    if gt_video_take2 is not None:
        take2 = to_uint8_video(gt_video_take2)
        _check_pair(take2, gt)
        var = _mask_metrics(resize_masks(motion_masks(take2, threshold), size), gt_m)
        var["mse"] = video_mse(resize_frames(take2, size), gt_f)
        out.update({f"variance_{k}": v for k, v in var.items()})
    return out


def mean_metrics(per_video: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Equal-weight mean over videos (views x scenarios) of each key, as the official score does
    (all videos have the same frame count, so its per-frame concatenation gives the same mean)."""
    return {k: float(np.mean([m[k] for m in per_video])) for k in per_video[0]}


def physics_iq_score(metrics: Mapping[str, float], variance: Mapping[str, float]) -> float:
    """Physics-IQ score in percent, `code/calculate_iq_score.py` lines 143-152.

    metrics: dataset means of the model (prediction vs take 1); variance: dataset means of take 2 vs
    take 1 (keys spatial_iou, spatiotemporal_iou, weighted_spatial_iou, mse, e.g. from mean_metrics).
      score = 100 * [ (ST / ST_var + S / S_var + WS / WS_var) / 3 - (MSE - MSE_var) ],
    clipped to [0, 100]. 100 means "as close to take 1 as a second real recording is". The official
    code also rounds the variance terms to 4-5 decimals and the score to 2; this returns it unrounded.
    It also reports a summed `physical_variance_all_metrics`, which the score does not use.
    """
    iou_ratio = sum(metrics[k] / variance[k] for k in ("spatiotemporal_iou", "spatial_iou", "weighted_spatial_iou")) / 3
    score = 100.0 * (iou_ratio - (metrics["mse"] - variance["mse"]))
    return float(min(max(score, 0.0), 100.0))
