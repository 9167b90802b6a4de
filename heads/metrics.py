"""Evaluation metrics for the heads, one pure function per metric, plus trivial baselines.

All functions take torch tensors or numpy arrays. Depth metrics take *distances in metres* (the
head predicts log distance: pass `exp(pred)`). Flow tensors are (..., 2, H, W) with masks
(..., H, W). Every metric is a ratio of pixel sums, so `MetricAccumulator` can sum numerators and
denominators across batches and report the pixel-weighted dataset value (not a mean of means).
Depth is also scored after per-clip alignment (heads.depth_align); classical flow baselines come
from heads.classical_flow.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from heads.classical_flow import CLASSICAL_FLOW_METHODS, classical_backward_flow
from heads.depth_align import DEPTH_ALIGNMENTS, masked_median

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


def _length(vectors: torch.Tensor) -> torch.Tensor:
    """(..., 2, H, W) -> (..., H, W) Euclidean length; hypot of the two channels is ~10x faster than
    torch's vector norm over that dimension, and validation scores several flows per window."""
    return torch.hypot(vectors[..., 0, :, :], vectors[..., 1, :, :])


class FlowTarget:
    """A flow target prepared once for scoring several predictions on the same pixels.
    gt: (..., 2, H, W) px; mask: (..., H, W). Invalid GT (non-finite) is excluded; `moving` means
    |gt| > moving_threshold."""

    def __init__(self, gt: ArrayLike, mask: ArrayLike | None = None, moving_threshold: float = 0.5) -> None:
        g = _t(gt)
        self.valid = torch.isfinite(g).all(dim=-3) & _mask(mask, g[..., 0, :, :])
        self.gt = torch.where(self.valid.unsqueeze(-3), g, torch.zeros_like(g))
        self.magnitude = _length(self.gt)
        self.moving = self.valid & (self.magnitude > moving_threshold)

    def error_sums(self, pred: ArrayLike) -> dict[str, float]:
        """Pixel counts and the sums behind EPE all / moving and the outlier rate of ``pred``."""
        epe = _length(_t(pred) - self.gt)
        outlier = self.valid & (epe > OUTLIER_PX) & (epe > OUTLIER_REL * self.magnitude)
        return {"n_valid": float(self.valid.sum()), "n_moving": float(self.moving.sum()),
                "epe": float((epe * self.valid).sum()), "epe_moving": float((epe * self.moving).sum()),
                "outliers": float(outlier.sum())}

    def zero_flow_sums(self) -> dict[str, float]:
        """The same sums for a zero prediction, whose EPE is |gt|: an outlier wherever |gt| > 3 px."""
        mag = self.magnitude
        return {"zero_epe": float((mag * self.valid).sum()), "zero_epe_moving": float((mag * self.moving).sum()),
                "zero_outliers": float((self.valid & (mag > OUTLIER_PX)).sum())}


def flow_sums(
    pred: ArrayLike, gt: ArrayLike, mask: ArrayLike | None = None, moving_threshold: float = 0.5
) -> dict[str, float]:
    """Pixel sums behind every flow metric, the prediction's and zero flow's (`FlowTarget`).
    pred, gt: (..., 2, H, W) px; mask: (..., H, W)."""
    target = FlowTarget(gt, mask, moving_threshold)
    return {**target.error_sums(pred), **target.zero_flow_sums()}


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
        median = masked_median(g[b], valid[b])
        if median is not None:
            out[b] = median
    return out


def depth_stem(prefix: str, alignment: str) -> str:
    """Start of a depth metric's key: ('depth', 'scale') -> 'depth_scale_'; the metric alignment
    has no infix ('depth_', so unaligned keys read as they did before alignment existed)."""
    return f"{prefix}_" if alignment == "metric" else f"{prefix}_{alignment}_"


def depth_key(prefix: str, alignment: str, metric: str) -> str:
    """Key of a depth metric in `MetricAccumulator.compute`, e.g. 'depth_scale_abs_rel'."""
    return depth_stem(prefix, alignment) + metric


DEPTH_PREDICTORS = ("depth", "median_depth")
"""Key prefixes of the depth scores: the heads, and the per-clip median baseline."""
FLOW_SCORES = ("flow_epe", "flow_epe_moving", "flow_outlier_rate")
"""Flow metric keys of the heads; zero flow and each classical method prefix them ('zero_', 'dis_')."""


# ---------------------------------------------------------------------------------- accumulator


class MetricAccumulator:
    """Sums metric numerators/denominators over batches; `compute()` gives pixel-weighted values.

    Reports each head metric beside its baselines: zero flow (and classical flow when added);
    the per-clip median depth, with heads and baseline scored metric, scale-aligned and
    affine-aligned alike (heads.depth_align).
    """

    def __init__(self, moving_threshold: float = 0.5, skip_first_frame: bool = True, far: float = math.inf) -> None:
        self.moving_threshold, self.skip_first_frame, self.far = moving_threshold, skip_first_frame, far
        self.reset()

    def reset(self) -> None:
        self.flow: dict[str, float] = {}
        self.classical: dict[str, dict[str, float]] = {}
        self.depth: dict[str, dict[str, float]] = {}
        self.depth_moving: dict[str, dict[str, float]] = {}

    @staticmethod
    def _add(acc: dict[str, float], sums: dict[str, float]) -> None:
        for k, v in sums.items():
            acc[k] = acc.get(k, 0.0) + v

    def add_flow(self, pred: ArrayLike, gt: ArrayLike, mask: ArrayLike | None = None,
                 baselines: dict[str, ArrayLike] | None = None) -> FlowTarget:
        """pred, gt: (B, T, 2, H, W) px; mask: (B, T, H, W). Frame 0 is dropped by default.
        ``baselines`` (name -> flow like pred, e.g. 'dis') are scored on exactly the same pixels.
        Returns the target scored (its ``moving`` pixels are what ``add_depth`` scores apart)."""
        g = _t(gt)
        m = _mask(mask, g[:, :, 0]).clone()
        if self.skip_first_frame:
            m[:, 0] = False
        target = FlowTarget(g, m, self.moving_threshold)
        self._add(self.flow, {**target.error_sums(pred), **target.zero_flow_sums()})
        for name, flow in (baselines or {}).items():
            self._add(self.classical.setdefault(name, {}), target.error_sums(flow))
        return target

    def add_depth(self, pred: ArrayLike, gt: ArrayLike, mask: ArrayLike | None = None,
                  moving: ArrayLike | None = None) -> None:
        """pred, gt: (B, T, H, W) metres (pred = exp(head output)); one clip per batch entry.

        Heads and the median baseline go through every alignment of DEPTH_ALIGNMENTS, per clip.
        ``moving`` (B, T, H, W) bool, e.g. ``add_flow(...).moving``: those pixels are also scored
        apart, unaligned.  Moving bodies are about 1 % of a demo frame, so the all-pixel AbsRel
        hides a head that paints them with the depth of what lies behind them, and the physics
        residuals and the verifier are computed on exactly those pixels.
        """
        g = _t(gt)
        valid = depth_valid(g, mask, self.far)
        predictions = {"depth": _t(pred).clamp_min(1e-6), "median_depth": median_depth_baseline(g, valid)}
        for alignment, align in DEPTH_ALIGNMENTS.items():
            for prefix, p in predictions.items():
                aligned = p if align is None else align(p, g, valid)
                self._add(self.depth.setdefault(depth_stem(prefix, alignment), {}),
                          depth_sums(aligned, g, valid, self.far))
        if moving is not None:
            on_moving = valid & _mask(moving, g)
            for prefix, p in predictions.items():
                self._add(self.depth_moving.setdefault(prefix, {}), depth_sums(p, g, on_moving, self.far))

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
        for method, c in self.classical.items():
            out[f"{method}_flow_epe"] = _ratio(c["epe"], c["n_valid"])
            out[f"{method}_flow_epe_moving"] = _ratio(c["epe_moving"], c["n_moving"])
            out[f"{method}_flow_outlier_rate"] = _ratio(c["outliers"], c["n_valid"])
        for stem, d in self.depth.items():
            out[f"{stem}abs_rel"] = _ratio(d["abs_rel"], d["n"])
            out[f"{stem}delta1"] = _ratio(d["delta1"], d["n"])
            out[f"{stem}rmse_log"] = math.sqrt(_ratio(d["sq_log"], d["n"]))
        if self.depth:
            out["depth_valid_pixels"] = self.depth[depth_stem("depth", "metric")]["n"]
        for prefix, d in self.depth_moving.items():
            out[f"{prefix}_moving_abs_rel"] = _ratio(d["abs_rel"], d["n"])
        if self.depth_moving:
            out["depth_moving_pixels"] = self.depth_moving["depth"]["n"]
        return out


# ---------------------------------------------------------------- head outputs (one validation path)

LOG_DEPTH_LIMIT = 10.0
"""|log distance| a head's output is clamped to before exp: e^10 m is past any scene, and the clamp
keeps an untrained head's metrics finite (exp of a large float32 log overflows to inf)."""

ALIGNMENT_LABELS = {"metric": "metric", "scale": "scale-aligned", "affine": "affine-aligned"}
DEPTH_METRIC_LABELS = {"abs_rel": ("AbsRel", True), "delta1": ("delta<1.25", False), "rmse_log": ("RMSE(log)", True)}
FLOW_METRIC_LABELS = {"flow_epe": "flow EPE all (px)", "flow_epe_moving": "flow EPE moving (px)",
                      "flow_outlier_rate": "flow outlier rate"}

HEAD_METRIC_ROWS = (
    *((f"depth {label}, {ALIGNMENT_LABELS[alignment]}", depth_key("depth", alignment, metric),
       depth_key("median_depth", alignment, metric), lower)
      for metric, (label, lower) in DEPTH_METRIC_LABELS.items() for alignment in DEPTH_ALIGNMENTS),
    ("depth AbsRel, moving pixels", "depth_moving_abs_rel", "median_depth_moving_abs_rel", True),
    *((label, key, f"zero_{key}", True) for key, label in FLOW_METRIC_LABELS.items()),
)
"""(label, head key, baseline key, lower is better): the one table training validation prints and
the evaluation reports (keys of `MetricAccumulator.compute`). Depth rows: each metric metric /
scale-aligned / affine-aligned against the median baseline through the same alignment, then
metric AbsRel on the pixels whose flow target moves (where a flow target exists); flow rows
against zero flow, with the classical methods beside them (`classical_flow_key`)."""

CLASSICAL_FLOW_LABELS = {"dis": "DIS", "farneback": "Farneback"}
"""Column titles of the classical flow baselines (heads.classical_flow.CLASSICAL_FLOW_METHODS)."""


def classical_flow_key(method: str, head_key: str) -> str | None:
    """Key of a classical flow method's score on a flow row ('dis', 'flow_epe' -> 'dis_flow_epe');
    None on depth rows, which have no classical baseline."""
    return f"{method}_{head_key}" if head_key in FLOW_SCORES else None


def depth_from_log(log_depth: torch.Tensor) -> torch.Tensor:
    """A head's log distance -> distance in metres (fp32), clamped to +-LOG_DEPTH_LIMIT first."""
    return log_depth.float().clamp(-LOG_DEPTH_LIMIT, LOG_DEPTH_LIMIT).exp()


def head_accumulator(moving_threshold: float, far: float) -> MetricAccumulator:
    """The accumulator both training validation and the evaluation use (frame 0 has no flow target)."""
    return MetricAccumulator(moving_threshold=moving_threshold, skip_first_frame=True, far=far)


def add_head_outputs(accumulators: list[MetricAccumulator], flow: torch.Tensor, log_depth: torch.Tensor,
                     target: dict, flow_baselines: bool = False) -> None:
    """Add one batch of head outputs, flow (B, T, 2, H, W) px and log distance (B, T, H, W), scored
    against ``target``'s flow / flow_valid / depth / depth_valid, to every accumulator.
    ``flow_baselines`` adds the classical flow methods, computed from ``target['rgb']``
    (B, T, 3, H, W) in [0, 1] once for all accumulators.

    The single place head outputs become metrics, so training validation and the evaluation cannot
    drift apart (they once differed in whether log depth was clamped before exp).
    """
    depth = depth_from_log(log_depth)
    classical = {}
    if flow_baselines:
        if "rgb" not in target:
            raise KeyError("flow baselines need the window's frames: the target has no 'rgb'")
        classical = {m: classical_backward_flow(target["rgb"], m).to(target["flow"].device)
                     for m in CLASSICAL_FLOW_METHODS}
    for acc in accumulators:
        scored = acc.add_flow(flow.float(), target["flow"], target["flow_valid"], baselines=classical)
        acc.add_depth(depth, target["depth"], target["depth_valid"], moving=scored.moving)
