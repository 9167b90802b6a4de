"""Evaluation metrics for the heads, one pure function per metric, plus trivial baselines.

All functions take torch tensors or numpy arrays. Depth metrics take *distances in metres* (the
head predicts log distance: pass `exp(pred)`). Flow tensors are (..., 2, H, W) with masks
(..., H, W). Every metric is a ratio of pixel sums, so `MetricAccumulator` can sum numerators and
denominators across batches and report the pixel-weighted dataset value (not a mean of means).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

ArrayLike = Any  # torch.Tensor | np.ndarray

# KITTI Fl-style outlier: EPE > 3 px AND EPE > 5 % of the GT magnitude.
OUTLIER_PX = 3.0
OUTLIER_REL = 0.05


def _t(x: ArrayLike) -> torch.Tensor:
    """As a float64 CPU-or-same-device tensor (float64 so large sums stay exact enough)."""
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().to(torch.float64)


def _mask(mask: ArrayLike | None, like: torch.Tensor) -> torch.Tensor:
    if mask is None:
        return torch.ones_like(like, dtype=torch.bool)
    return torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask).to(like.device).bool()


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else float("nan")


# ----------------------------------------------------------------------------------------- flow


def flow_sums(
    pred: ArrayLike, gt: ArrayLike, mask: ArrayLike | None = None, moving_threshold: float = 0.5
) -> dict[str, float]:
    """Pixel sums behind every flow metric. pred, gt: (..., 2, H, W) px; mask: (..., H, W).

    Invalid GT (non-finite) is excluded; `moving` means |gt| > moving_threshold.
    """
    p, g = _t(pred), _t(gt)
    valid = torch.isfinite(g).all(dim=-3) & _mask(mask, g[..., 0, :, :])
    g = torch.where(valid.unsqueeze(-3), g, torch.zeros_like(g))
    epe = torch.linalg.vector_norm(p - g, dim=-3)
    mag = torch.linalg.vector_norm(g, dim=-3)
    moving = valid & (mag > moving_threshold)
    outlier = valid & (epe > OUTLIER_PX) & (epe > OUTLIER_REL * mag)
    zero_outlier = valid & (mag > OUTLIER_PX)  # zero prediction: epe = |gt| > 5 % of |gt| whenever |gt| > 0
    return {
        "n_valid": float(valid.sum()),
        "n_moving": float(moving.sum()),
        "epe": float((epe * valid).sum()),
        "epe_moving": float((epe * moving).sum()),
        "outliers": float(outlier.sum()),
        "zero_epe": float((mag * valid).sum()),
        "zero_epe_moving": float((mag * moving).sum()),
        "zero_outliers": float(zero_outlier.sum()),
    }


def flow_epe(pred: ArrayLike, gt: ArrayLike, mask: ArrayLike | None = None) -> float:
    """Mean endpoint error (px) over all valid pixels."""
    s = flow_sums(pred, gt, mask)
    return _ratio(s["epe"], s["n_valid"])


def flow_epe_moving(pred: ArrayLike, gt: ArrayLike, mask: ArrayLike | None = None, threshold: float = 0.5) -> float:
    """Mean endpoint error (px) over valid pixels with |gt| > threshold."""
    s = flow_sums(pred, gt, mask, threshold)
    return _ratio(s["epe_moving"], s["n_moving"])


def flow_outlier_rate(pred: ArrayLike, gt: ArrayLike, mask: ArrayLike | None = None) -> float:
    """Fraction of valid pixels with EPE > 3 px and EPE > 5 % of |gt| (KITTI Fl)."""
    s = flow_sums(pred, gt, mask)
    return _ratio(s["outliers"], s["n_valid"])


def zero_flow_baseline(gt: ArrayLike, mask: ArrayLike | None = None, threshold: float = 0.5) -> dict[str, float]:
    """Metrics of predicting zero flow everywhere: EPE all, EPE moving, outlier rate."""
    s = flow_sums(torch.zeros_like(_t(gt)), gt, mask, threshold)
    return {
        "epe": _ratio(s["epe"], s["n_valid"]),
        "epe_moving": _ratio(s["epe_moving"], s["n_moving"]),
        "outlier_rate": _ratio(s["outliers"], s["n_valid"]),
    }


# ---------------------------------------------------------------------------------------- depth


def depth_valid(gt: torch.Tensor, mask: ArrayLike | None = None, far: float = math.inf) -> torch.Tensor:
    """Finite, > 0, < far and inside mask."""
    return torch.isfinite(gt) & (gt > 0) & (gt < far) & _mask(mask, gt)


def depth_sums(pred: ArrayLike, gt: ArrayLike, mask: ArrayLike | None = None, far: float = math.inf) -> dict[str, float]:
    """Pixel sums behind AbsRel, delta<1.25 and RMSE(log). pred, gt: (..., H, W) metres."""
    p, g = _t(pred), _t(gt)
    valid = depth_valid(g, mask, far)
    g = torch.where(valid, g, torch.ones_like(g))
    p = torch.where(valid, p.clamp_min(1e-6), torch.ones_like(p))
    ratio = torch.maximum(p / g, g / p)
    return {
        "n": float(valid.sum()),
        "abs_rel": float(((p - g).abs() / g * valid).sum()),
        "delta1": float(((ratio < 1.25) & valid).sum()),
        "sq_log": float(((torch.log(p) - torch.log(g)) ** 2 * valid).sum()),
    }


def depth_abs_rel(pred: ArrayLike, gt: ArrayLike, mask: ArrayLike | None = None) -> float:
    """mean |pred - gt| / gt over valid pixels."""
    s = depth_sums(pred, gt, mask)
    return _ratio(s["abs_rel"], s["n"])


def depth_delta1(pred: ArrayLike, gt: ArrayLike, mask: ArrayLike | None = None) -> float:
    """Fraction of valid pixels with max(pred/gt, gt/pred) < 1.25."""
    s = depth_sums(pred, gt, mask)
    return _ratio(s["delta1"], s["n"])


def depth_rmse_log(pred: ArrayLike, gt: ArrayLike, mask: ArrayLike | None = None) -> float:
    """sqrt(mean (log pred - log gt)^2) over valid pixels."""
    s = depth_sums(pred, gt, mask)
    return math.sqrt(_ratio(s["sq_log"], s["n"]))


def median_depth_baseline(gt: ArrayLike, mask: ArrayLike | None = None, far: float = math.inf) -> torch.Tensor:
    """Per-clip median prediction: (B, ...) GT -> (B, ...) filled with the median valid GT of clip b.

    The median is the midpoint of the two middle values for even counts (as numpy.median); a clip
    without valid pixels gets 1.0 (it contributes nothing to the metrics anyway).
    """
    g = _t(gt)
    valid = depth_valid(g, mask, far)
    out = torch.ones_like(g)
    for b in range(g.shape[0]):
        v = torch.sort(g[b][valid[b]]).values
        if v.numel():
            out[b] = 0.5 * (v[(v.numel() - 1) // 2] + v[v.numel() // 2])
    return out


# ---------------------------------------------------------------------------------- accumulator


class MetricAccumulator:
    """Sums metric numerators/denominators over batches; `compute()` gives pixel-weighted values.

    Reports each head metric beside its trivial baseline (zero flow; per-clip median depth).
    """

    def __init__(self, moving_threshold: float = 0.5, skip_first_frame: bool = True, far: float = math.inf) -> None:
        self.moving_threshold, self.skip_first_frame, self.far = moving_threshold, skip_first_frame, far
        self.reset()

    def reset(self) -> None:
        self.flow: dict[str, float] = {}
        self.depth: dict[str, float] = {}
        self.depth_base: dict[str, float] = {}

    @staticmethod
    def _add(acc: dict[str, float], sums: dict[str, float]) -> None:
        for k, v in sums.items():
            acc[k] = acc.get(k, 0.0) + v

    def add_flow(self, pred: ArrayLike, gt: ArrayLike, mask: ArrayLike | None = None) -> None:
        """pred, gt: (B, T, 2, H, W) px; mask: (B, T, H, W). Frame 0 is dropped by default."""
        g = _t(gt)
        m = _mask(mask, g[:, :, 0]).clone()
        if self.skip_first_frame:
            m[:, 0] = False
        self._add(self.flow, flow_sums(pred, g, m, self.moving_threshold))

    def add_depth(self, pred: ArrayLike, gt: ArrayLike, mask: ArrayLike | None = None) -> None:
        """pred, gt: (B, T, H, W) metres (pred = exp(head output)); one clip per batch entry."""
        self._add(self.depth, depth_sums(pred, gt, mask, self.far))
        self._add(self.depth_base, depth_sums(median_depth_baseline(gt, mask, self.far), gt, mask, self.far))

    def compute(self) -> dict[str, float]:
        """Dict of dataset-level metrics (NaN where a metric had no pixel)."""
        out: dict[str, float] = {}
        f = self.flow
        if f:
            out.update(
                flow_epe=_ratio(f["epe"], f["n_valid"]),
                flow_epe_moving=_ratio(f["epe_moving"], f["n_moving"]),
                flow_outlier_rate=_ratio(f["outliers"], f["n_valid"]),
                zero_flow_epe=_ratio(f["zero_epe"], f["n_valid"]),
                zero_flow_epe_moving=_ratio(f["zero_epe_moving"], f["n_moving"]),
                zero_flow_outlier_rate=_ratio(f["zero_outliers"], f["n_valid"]),
                flow_valid_pixels=f["n_valid"],
                flow_moving_pixels=f["n_moving"],
            )
        for prefix, d in (("depth", self.depth), ("median_depth", self.depth_base)):
            if d:
                out[f"{prefix}_abs_rel"] = _ratio(d["abs_rel"], d["n"])
                out[f"{prefix}_delta1"] = _ratio(d["delta1"], d["n"])
                out[f"{prefix}_rmse_log"] = math.sqrt(_ratio(d["sq_log"], d["n"]))
        if self.depth:
            out["depth_valid_pixels"] = self.depth["n"]
        return out


# ---------------------------------------------------------------- head outputs (one validation path)

LOG_DEPTH_LIMIT = 10.0
"""|log distance| a head's output is clamped to before exp: e^10 m is past any scene, and the clamp
keeps an untrained head's metrics finite (exp of a large float32 log overflows to inf)."""

HEAD_METRIC_ROWS = (
    ("depth AbsRel", "depth_abs_rel", "median_depth_abs_rel", True),
    ("depth delta<1.25", "depth_delta1", "median_depth_delta1", False),
    ("depth RMSE(log)", "depth_rmse_log", "median_depth_rmse_log", True),
    ("flow EPE all (px)", "flow_epe", "zero_flow_epe", True),
    ("flow EPE moving (px)", "flow_epe_moving", "zero_flow_epe_moving", True),
    ("flow outlier rate", "flow_outlier_rate", "zero_flow_outlier_rate", True),
)
"""(label, head key, baseline key, lower is better): the one table training validation prints and
the evaluation reports (keys of `MetricAccumulator.compute`)."""


def depth_from_log(log_depth: torch.Tensor) -> torch.Tensor:
    """A head's log distance -> distance in metres (fp32), clamped to +-LOG_DEPTH_LIMIT first."""
    return log_depth.float().clamp(-LOG_DEPTH_LIMIT, LOG_DEPTH_LIMIT).exp()


def head_accumulator(moving_threshold: float, far: float) -> MetricAccumulator:
    """The accumulator both training validation and the evaluation use (frame 0 has no flow target)."""
    return MetricAccumulator(moving_threshold=moving_threshold, skip_first_frame=True, far=far)


def add_head_outputs(accumulators: list[MetricAccumulator], flow: torch.Tensor, log_depth: torch.Tensor,
                     target: dict) -> None:
    """Add one batch of head outputs, flow (B, T, 2, H, W) px and log distance (B, T, H, W), scored
    against ``target``'s flow / flow_valid / depth / depth_valid, to every accumulator.

    The single place head outputs become metrics, so training validation and the evaluation cannot
    drift apart (they once differed in whether log depth was clamped before exp).
    """
    depth = depth_from_log(log_depth)
    for acc in accumulators:
        acc.add_flow(flow.float(), target["flow"], target["flow_valid"])
        acc.add_depth(depth, target["depth"], target["depth_valid"])
