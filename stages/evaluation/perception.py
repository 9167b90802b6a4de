"""Heads on ground-truth (or generated) windows: predictions, and metrics beside the trivial baselines.

Metrics are `heads.metrics.MetricAccumulator`'s: depth AbsRel, delta<1.25, RMSE(log) against the
per-clip median depth; flow EPE (all valid pixels / moving pixels, |gt| > moving_threshold px) and
outlier rate (> 3 px and > 5 %) against zero flow. Frame 0 has no flow target and is skipped.
A per-scene accumulator gives the scene's numbers; one per model gives pixel-weighted overall ones.
"""

from __future__ import annotations

import math

import torch

from heads.metrics import MetricAccumulator
from stages.features import FeatureSource
from stages.model import HeadPair

# (label, head key, baseline key, lower is better) in the order the report lists them.
PERCEPTION_ROWS = (
    ("depth AbsRel", "depth_abs_rel", "median_depth_abs_rel", True),
    ("depth delta<1.25", "depth_delta1", "median_depth_delta1", False),
    ("depth RMSE(log)", "depth_rmse_log", "median_depth_rmse_log", True),
    ("flow EPE all (px)", "flow_epe", "zero_flow_epe", True),
    ("flow EPE moving (px)", "flow_epe_moving", "zero_flow_epe_moving", True),
    ("flow outlier rate", "flow_outlier_rate", "zero_flow_outlier_rate", True),
)


@torch.no_grad()
def predict(pair: HeadPair, source: FeatureSource, rgb: torch.Tensor, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """rgb (T, 3, H, W) in [0, 1] -> flow (T, 2, H, W) px and distance (T, H, W) m, on the CPU in fp32."""
    device = next(pair.parameters()).device
    batch = rgb.unsqueeze(0).to(device)
    taps = source.extract(batch, [prompt])
    flow, log_depth = pair(taps, batch)
    return flow[0].float().cpu(), log_depth[0].float().clamp(-10.0, 10.0).exp().cpu()


def new_accumulator(moving_threshold: float, far: float) -> MetricAccumulator:
    return MetricAccumulator(moving_threshold=moving_threshold, skip_first_frame=True, far=far)


def add(accumulators: list[MetricAccumulator], flow: torch.Tensor, depth: torch.Tensor, sample: dict) -> None:
    """Add one window's predictions (flow (T, 2, H, W), depth (T, H, W) m) to every accumulator."""
    for acc in accumulators:
        acc.add_flow(flow[None], sample["flow"][None], sample["flow_valid"][None])
        acc.add_depth(depth[None], sample["depth"][None], sample["depth_valid"][None])


def beats_baseline(metrics: dict[str, float]) -> dict[str, bool]:
    """Heads beat the trivial baselines: depth AbsRel below the median baseline's, flow EPE on
    moving pixels below zero flow's, and flow EPE on all pixels below zero flow's (a head can win on
    moving pixels while being worse overall, DESIGN section 4)."""
    def lower(ours: str, base: str) -> bool:
        a, b = metrics.get(ours, math.nan), metrics.get(base, math.nan)
        return bool(a < b) if not (math.isnan(a) or math.isnan(b)) else False

    return {"depth_abs_rel": lower("depth_abs_rel", "median_depth_abs_rel"),
            "flow_epe_moving": lower("flow_epe_moving", "zero_flow_epe_moving"),
            "flow_epe": lower("flow_epe", "zero_flow_epe")}
