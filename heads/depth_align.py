"""Per-clip alignment of predicted depth to the ground truth before scoring.

A head trained on one generator can get the geometry right and the absolute scale wrong (another
camera, other object sizes). Scoring depth three ways separates the two failures:

- metric: the prediction as it is;
- scale-aligned: multiplied by median(gt) / median(pred) over the clip's valid pixels (the
  monocular-depth standard: only the global scale is forgiven);
- affine-aligned: a least-squares scale and shift in inverse depth, s / pred + t ~ 1 / gt, then
  inverted (the video-depth standard: scale and shift of disparity are forgiven).

A clip is one batch entry: (B, ...) tensors are aligned per b over all of that entry's frames, so a
single factor holds for the whole window (per-frame factors would hide scale flicker).
A prediction that is constant over the clip (the median-depth baseline) is fitted as a constant:
scale alignment leaves it unchanged, and affine alignment turns it into the clip's harmonic-mean
depth, the best constant in inverse depth.
"""

from __future__ import annotations

import torch

MIN_INVERSE_DEPTH = 1e-3
"""Lower clamp (1/m) of affine-aligned inverse depth before inverting: a fit can put pixels at zero
or negative inverse depth (behind infinity); they are scored as 1 km away rather than dropped, so a
bad fit costs what it should."""

CONSTANT_RELATIVE_VARIANCE = 1e-12
"""Inverse-depth variance (relative to its squared mean) below which a prediction counts as constant
over the clip: the scale of the affine fit is then undetermined and set to 0."""


def masked_median(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor | None:
    """Median of ``values[valid]`` (midpoint of the two middle values for even counts, as
    numpy.median); None when no pixel is valid."""
    v = values[valid]
    if not v.numel():
        return None
    # Two order statistics (linear time) rather than a full sort: this runs per clip in every validation.
    low = v.kthvalue((v.numel() + 1) // 2).values
    return low if v.numel() % 2 else 0.5 * (low + v.kthvalue(v.numel() // 2 + 1).values)


def scale_align(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """pred (B, ...) metres -> pred * median(gt) / median(pred) per clip b over ``valid`` (B, ...).

    A clip without valid pixels is returned unchanged (it adds nothing to the metrics).
    """
    out = pred.clone()
    for b in range(pred.shape[0]):
        gt_median, pred_median = masked_median(gt[b], valid[b]), masked_median(pred[b], valid[b])
        if gt_median is not None and pred_median > 0:
            out[b] = pred[b] * (gt_median / pred_median)
    return out


def affine_inverse_fit(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> tuple[float, float]:
    """Least-squares (s, t) with s / pred + t ~ 1 / gt over ``valid`` pixels of one clip.

    Closed form of the 2-parameter fit; a constant prediction gets s = 0 and t = mean(1 / gt).
    """
    x, y = 1.0 / pred[valid], 1.0 / gt[valid]
    x_mean, y_mean = x.mean(), y.mean()
    variance = ((x - x_mean) ** 2).mean()
    if variance <= CONSTANT_RELATIVE_VARIANCE * x_mean**2:
        return 0.0, float(y_mean)
    scale = ((x - x_mean) * (y - y_mean)).mean() / variance
    return float(scale), float(y_mean - scale * x_mean)


def affine_align(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor,
                 min_inverse: float = MIN_INVERSE_DEPTH) -> torch.Tensor:
    """pred (B, ...) metres -> 1 / max(s_b / pred + t_b, min_inverse) with (s_b, t_b) fitted per clip
    on ``valid`` (B, ...) pixels (`affine_inverse_fit`). Clips without valid pixels stay unchanged."""
    out = pred.clone()
    for b in range(pred.shape[0]):
        if valid[b].any():
            scale, shift = affine_inverse_fit(pred[b], gt[b], valid[b])
            out[b] = 1.0 / (scale / pred[b] + shift).clamp_min(min_inverse)
    return out


DEPTH_ALIGNMENTS = {"metric": None, "scale": scale_align, "affine": affine_align}
"""Alignment name -> function (pred, gt, valid) -> aligned pred; None = scored as predicted."""
