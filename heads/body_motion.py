"""Whole-body displacements for the flow head: one translation per moving patch, found far away.

The local block matching (heads/cost_volume.py) answers per pixel, over a 3x3 patch of pooled
pixels, within 8 px.  At 128 px a thrown ball is ~8 px wide and moves 5-15 px a frame: the patch is
half background (which prefers no motion), the motion is often beyond the reach, and the
soft-argmin averages the two, so on the demo's moving pixels the matching recovered about half of
the true motion (docs/evaluation.md).  A body moves as one, so its pixels can vote together:

1. a *moving patch* is a 4-connected set of pixels whose current flow exceeds MOTION_THRESHOLD and
   whose colour changes against the previous frame (by the verifier's IMAGE_CHANGE; motion that
   changes no colour is the matching's smear, not a body);
2. every pixel of the patch scores each displacement d within ``reach`` by its 3x3 mean absolute
   RGB difference to the previous frame at p + d, truncated at TRUNCATION so that pixels no
   displacement explains (background the body uncovered) cannot outvote the body; the patch takes
   the d of the lowest summed score, refined to sub-pixel by a parabola through its neighbours;
3. every pixel of the patch's bounding box, grown by GROW px, that this d explains better than no
   motion, by MARGIN, gets it as its flow (the matching may flag only the part of a fast body it
   reaches; still background matches no motion best and keeps its flow); the patch's pixels left
   vote once more (a second body in contact, LAYERS in all).

Limit: a body is found only through a patch the matching flags; when its motion is beyond the
matching's reach, that is often the place the body left, and the body is then taken only if it
lies within the grown box (measured: 9-10 px shifts of an 8-px body are found, 12 px are not).
Patches of every colour change instead (no flow needed) found those too but scored 3 % worse on the
training windows (lighting and shadow changes vote as well).

Nothing is learned and nothing depends on what a scene looks like.  Chosen on the training
families' windows (24 training and 4 validation windows of the demo): moving-pixel EPE of the
matching alone 2.70 / 3.24 px -> 2.05 / 2.50 px with this step, motions above 8 px 6.4 -> 3.8 px.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from heads.motion_segments import label_segments
from heads.plausibility import IMAGE_CHANGE

MOTION_THRESHOLD = 0.1
"""px: pixels whose current flow is longer than this may belong to a moving patch."""
TRUNCATION = 0.1
"""Per-pixel matching cost cap in the vote (mean absolute RGB difference)."""
MARGIN = 0.02
"""A pixel takes the patch's displacement only if it matches it this much better than no motion."""
MIN_PIXELS = 6
"""Patches (and second layers) smaller than this keep the flow they had."""
GROW = 3
"""px: the box whose pixels may take a patch's displacement reaches this far beyond the patch."""
LAYERS = 2
"""Votes per patch: the pixels the first displacement did not explain vote again."""


def shifted_costs(cur: torch.Tensor, prev: torch.Tensor, box: tuple[int, int, int, int], reach: int) -> torch.Tensor:
    """3x3 mean absolute RGB difference of ``cur`` inside box (y0, y1, x0, x1) against ``prev`` at
    every displacement d in [-reach, reach]^2 (dy outer): (D, h, w), D = (2 reach + 1)^2.
    cur, prev (3, H, W); the previous frame is edge-padded beyond the image."""
    y0, y1, x0, x1 = box
    h, w = y1 - y0 + 2, x1 - x0 + 2  # one pixel of margin for the 3x3 mean
    pad = F.pad(prev[None], (reach + 1,) * 4, mode="replicate")[0]
    here = F.pad(cur[None], (1,) * 4, mode="replicate")[0, :, y0:y0 + h, x0:x0 + w]
    rows = []
    for dy in range(2 * reach + 1):
        band = pad[:, y0 + dy:y0 + dy + h, x0:x0 + w + 2 * reach]  # every dx at once
        windows = band.unfold(2, w, 1)  # (3, h, 2 reach + 1, w)
        rows.append((here[:, :, None] - windows).abs().mean(dim=0).permute(1, 0, 2))  # (2 reach + 1, h, w)
    diff = torch.cat(rows)
    return F.avg_pool2d(diff[:, None], 3, 1, 0)[:, 0]


def _parabola(left: float, mid: float, right: float) -> float:
    """Sub-pixel offset of the minimum of a parabola through three costs at -1, 0, +1."""
    curvature = left - 2 * mid + right
    return max(-0.5, min(0.5, 0.5 * (left - right) / curvature)) if curvature > 1e-9 else 0.0


def vote(costs: torch.Tensor, voters: torch.Tensor, reach: int) -> tuple[int, float, float] | None:
    """(index of the winning displacement, dx, dy) of the voters' truncated summed costs, or None
    when no motion wins.  costs (D, h, w), voters (h, w) bool."""
    side = 2 * reach + 1
    score = costs[:, voters].clamp(max=TRUNCATION).sum(dim=1).view(side, side)
    index = int(score.argmin())
    iy, ix = divmod(index, side)
    if iy == reach and ix == reach:
        return None
    dy = iy - reach + (_parabola(*score[iy - 1:iy + 2, ix].tolist()) if 0 < iy < side - 1 else 0.0)
    dx = ix - reach + (_parabola(*score[iy, ix - 1:ix + 2].tolist()) if 0 < ix < side - 1 else 0.0)
    return index, dx, dy


def moving_patches(cur: torch.Tensor, prev: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """(H, W) int64 labels of the moving patches of one frame (0 = none; rule 1 of the docstring)."""
    changed = (cur - prev).abs().amax(dim=0) > IMAGE_CHANGE
    changed = F.max_pool2d(changed[None, None].float(), 3, 1, 1)[0, 0].bool()
    mask = changed & (flow.norm(dim=0) > MOTION_THRESHOLD)
    return label_segments(mask, torch.zeros(mask.shape, device=mask.device), 1.0)


def frame_bodies(cur: torch.Tensor, prev: torch.Tensor, flow: torch.Tensor, reach: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """One frame: cur, prev (3, H, W), its current flow (2, H, W) -> (displacements (2, H, W),
    taken (H, W) bool): the body displacement of every pixel that takes one."""
    labels = moving_patches(cur, prev, flow)
    out = torch.zeros_like(flow)
    taken = torch.zeros(flow.shape[1:], dtype=torch.bool, device=flow.device)
    sizes = torch.bincount(labels.flatten())
    for label in (sizes >= MIN_PIXELS).nonzero().flatten().tolist():
        if label == 0:
            continue
        patch = labels == label
        ys, xs = patch.nonzero(as_tuple=True)
        h, w = patch.shape
        box = (max(int(ys.min()) - GROW, 0), min(int(ys.max()) + 1 + GROW, h),
               max(int(xs.min()) - GROW, 0), min(int(xs.max()) + 1 + GROW, w))
        crop = (slice(box[0], box[1]), slice(box[2], box[3]))
        costs = shifted_costs(cur, prev, box, reach)
        still = costs[costs.shape[0] // 2]
        voters, free = patch[crop].clone(), ~taken[crop]
        for _ in range(LAYERS):
            won = vote(costs, voters, reach) if int(voters.sum()) >= MIN_PIXELS else None
            if won is None:
                break
            index, dx, dy = won
            take = free & (costs[index] < still - MARGIN)
            out[0][crop][take], out[1][crop][take] = dx, dy
            taken[crop] |= take
            free, voters = free & ~take, voters & ~take
    return out, taken


@torch.no_grad()
def body_displacements(cur: torch.Tensor, prev: torch.Tensor, flow: torch.Tensor, reach: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """cur, prev (N, 3, H, W) frames t and t-1 in [0, 1], flow (N, 2, H, W) the current backward
    estimate (px) -> (displacements (N, 2, H, W) px, taken (N, 1, H, W) bool).  Constants: the
    caller keeps its own flow, and its gradient, where nothing is taken."""
    if reach <= 0:
        raise ValueError(f"reach must be positive, got {reach}")
    pairs = [frame_bodies(c.float(), p.float(), f.float(), reach) for c, p, f in zip(cur, prev, flow)]
    return (torch.stack([d for d, _ in pairs]).to(flow.dtype), torch.stack([t for _, t in pairs])[:, None])
