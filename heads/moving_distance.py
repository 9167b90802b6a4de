"""How far off, and how unsteady, is a predicted distance on moving bodies?  The two numbers the
physics rule (``heads.plausibility``) is sensitive to, read against the ground truth.

The rule measures g from a body's track, so g scales with the body's distance: a body read 1.4x too
far falls at 1.4 g, and its 1/2 g twin at 0.7 g, which the rule prefers.  And a distance that wobbles
from frame to frame breaks the body into pieces that no longer pass the free-flight test.  Measured
on the held-out violation pairs (docs/evaluation.md, "How steady must the distance be?"): the rule
on the heads' flow keeps the gravity twins apart with a moving body's distance within about 20 % of
the truth, and loses most free flights at 0.5-1 % of frame-to-frame wobble.  This module reports
both for a model's distance, so a new backbone's heads can be judged against those tolerances
before (or instead of) reading the verifier's accuracy.  For reports only: no score sees it.
"""

from __future__ import annotations

import torch

from heads.motion_segments import source_pixels

SCALE_TOLERANCE = 0.2
"""A moving body's distance within this share of the truth keeps 1/2 g and g apart (ratio < 4/3)."""
JITTER_TOLERANCE = 0.01
"""Frame-to-frame change of that ratio above which free flight is mostly lost."""


def ratio_and_change(distance: torch.Tensor, sample: dict, moving_threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """On the truth's moving pixels (flow longer than ``moving_threshold`` px, valid depth and flow,
    frames 1..T-1): predicted over true distance, and the relative change of that ratio from the
    pixel's source in the previous frame (the true flow's) where the source is a moving pixel too.
    distance (T, H, W) m; sample: a whole-clip sample (depth, depth_valid, flow, flow_valid)."""
    true, flow = sample["depth"], sample["flow"]
    moving = sample["depth_valid"] & sample["flow_valid"] & (flow.norm(dim=1) > moving_threshold)
    moving[0] = False
    ratio = torch.where(moving, distance / true.clamp_min(1e-6), torch.ones_like(true))
    changes = []
    for t in range(2, distance.shape[0]):
        qy, qx = source_pixels(flow[t], moving[t])
        linked = moving[t - 1][qy, qx]
        changes.append((ratio[t][moving[t]][linked] / ratio[t - 1][qy, qx][linked] - 1.0).abs())
    change = torch.cat(changes) if changes else distance.new_zeros(0)
    return ratio[moving], change


class MovingDistance:
    """Pools ``ratio_and_change`` over clips -> {"moving_distance_ratio": median, its quartiles,
    "moving_distance_jitter": median change, "moving_distance_jitter_p90"} (NaN without pixels)."""

    def __init__(self, moving_threshold: float) -> None:
        self.moving_threshold = moving_threshold
        self.ratios: list[torch.Tensor] = []
        self.changes: list[torch.Tensor] = []

    def add(self, distance: torch.Tensor, sample: dict) -> None:
        ratio, change = ratio_and_change(distance.float(), sample, self.moving_threshold)
        self.ratios.append(ratio.float())
        self.changes.append(change.float())

    def compute(self) -> dict[str, float]:
        ratio = _sorted(self.ratios)
        change = _sorted(self.changes)
        return {"moving_distance_ratio": _pick(ratio, 0.5), "moving_distance_ratio_q25": _pick(ratio, 0.25),
                "moving_distance_ratio_q75": _pick(ratio, 0.75), "moving_distance_jitter": _pick(change, 0.5),
                "moving_distance_jitter_p90": _pick(change, 0.9)}


def _sorted(parts: list[torch.Tensor]) -> torch.Tensor:
    """The pooled values, sorted once for every quantile (torch.quantile caps its input at 16M
    elements; a pick from the sorted values has no such limit)."""
    return torch.cat(parts).sort().values if parts else torch.zeros(0)


def _pick(ordered: torch.Tensor, q: float) -> float:
    """The q-quantile (nearest rank) of sorted values; NaN when there are none."""
    if ordered.numel() == 0:
        return float("nan")
    return float(ordered[min(int(q * (ordered.numel() - 1) + 0.5), ordered.numel() - 1)])
