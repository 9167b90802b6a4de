"""Heads on ground-truth (or generated) windows: predictions, and metrics beside the baselines.

Metrics are training validation's (`heads.metrics.add_head_outputs` into a `head_accumulator`, the
table `HEAD_METRIC_ROWS`): depth AbsRel, delta<1.25, RMSE(log), each metric, scale-aligned and
affine-aligned, against the per-clip median depth through the same alignment; flow EPE (all valid
pixels / moving pixels, |gt| > moving_threshold px) and outlier rate (> 3 px and > 5 %) against
zero flow and, when asked, OpenCV DIS and Farneback flow on the same frame pairs. Frame 0 has no
flow target and is skipped. A per-scene accumulator gives the scene's numbers; one per model (and
per family group, family or look) gives pixel-weighted pooled ones.
"""

from __future__ import annotations

import math

import torch

from heads.metrics import MetricAccumulator, add_head_outputs, head_accumulator
from stages.features import FeatureSource
from stages.model import HeadPair

TARGET_KEYS = ("rgb", "flow", "flow_valid", "depth", "depth_valid")


@torch.no_grad()
def predict(pair: HeadPair, source: FeatureSource, rgb: torch.Tensor, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """rgb (T, 3, H, W) in [0, 1] -> flow (T, 2, H, W) px and log distance (T, H, W), on the CPU in fp32
    (`heads.metrics.depth_from_log` gives metres)."""
    device = next(pair.parameters()).device
    batch = rgb.unsqueeze(0).to(device)
    taps = source.extract(batch, [prompt])
    flow, log_depth = pair(taps, batch)
    return flow[0].float().cpu(), log_depth[0].float().cpu()


def new_accumulator(moving_threshold: float, far: float) -> MetricAccumulator:
    return head_accumulator(moving_threshold, far)


def add(accumulators: list[MetricAccumulator], flow: torch.Tensor, log_depth: torch.Tensor, sample: dict,
        flow_baselines: bool = False) -> None:
    """Add one window's predictions (flow (T, 2, H, W), log distance (T, H, W)) to every accumulator;
    ``flow_baselines`` scores the classical flow methods on the window's frames too."""
    add_head_outputs(accumulators, flow[None], log_depth[None], {k: sample[k][None] for k in TARGET_KEYS},
                     flow_baselines=flow_baselines)


def beats_baseline(metrics: dict[str, float]) -> dict[str, bool]:
    """Heads vs the trivial baselines, one comparison per key: depth AbsRel below the median
    baseline's metric, scale-aligned and affine-aligned (each through the same alignment); flow EPE
    on moving pixels and on all pixels below zero flow's (a head can win on moving pixels while
    being worse overall). `VERDICT_KEYS` are the ones the pass/fail verdict requires."""
    def lower(ours: str, base: str) -> bool:
        a, b = metrics.get(ours, math.nan), metrics.get(base, math.nan)
        return bool(a < b) if not (math.isnan(a) or math.isnan(b)) else False

    return {"depth_abs_rel": lower("depth_abs_rel", "median_depth_abs_rel"),
            "depth_scale_abs_rel": lower("depth_scale_abs_rel", "median_depth_scale_abs_rel"),
            "depth_affine_abs_rel": lower("depth_affine_abs_rel", "median_depth_affine_abs_rel"),
            "flow_epe_moving": lower("flow_epe_moving", "zero_flow_epe_moving"),
            "flow_epe": lower("flow_epe", "zero_flow_epe")}


VERDICT_KEYS = ("depth_scale_abs_rel", "flow_epe_moving", "flow_epe")
"""Comparisons of `beats_baseline` that heads_beat_baselines requires. Depth is judged scale-aligned:
the scale of a monocular prediction is ambiguous (another camera or object size), the geometry is
not; the metric and affine rows are reported beside it. Classical flow is reported, not required:
the verdict asks whether the heads learned anything, not whether they beat a tuned method."""
VERDICT_RULE = ("depth AbsRel scale-aligned < median-depth baseline's (same alignment); "
                "flow EPE (moving) and flow EPE (all) < zero flow's")
