"""A local matching cost between frame t and the warped frame t-1, for the flow head's RGB path.

Concatenated frames make a network learn matching from data (FlowNet-simple); on the demo's tiny
random backbone the flow head then learned the training scenes' motion, not motion.  A cost volume
states the matching question directly: for every displacement d within a radius, how well does
frame t at p agree with warped t-1 at p + d.  The answer does not depend on what the scene looks
like, which is what transfer to unseen families and looks needs (RAFT and PWC-Net rest on the same
idea, with learned features instead of pixels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SOFT_ARGMIN_TEMPERATURE = 0.02
"""Cost units are mean absolute RGB differences in [0, 1]; 0.02 keeps the soft-argmin close to
the best match while still averaging near-ties."""
CONFIDENCE_SCALE = 0.02
"""The displacement is weighted by gain / (gain + this), gain = cost at d = 0 minus the best cost:
where nothing moved, or nothing can be matched (a plain surface), there is no gain and no
displacement.  Without the weight the matching moved still pixels by ~0.9 px on average (20x zero
flow's error over all pixels); 0.02 was chosen on the demo's validation split (seen families):
all-pixel EPE 0.044 vs zero flow's 0.046, moving-pixel EPE 3.3 vs 4.5 px."""


def cost_channels(radius: int) -> int:
    """Matching-cost channels of ``local_cost`` (one per displacement; the soft-argmin comes after)."""
    return (2 * radius + 1) ** 2 if radius > 0 else 0


def local_cost(cur: torch.Tensor, warped: torch.Tensor, radius: int, pool: int = 1,
               temperature: float = SOFT_ARGMIN_TEMPERATURE, confidence_scale: float = CONFIDENCE_SCALE) -> torch.Tensor:
    """cur, warped: (N, 3, H, W) -> (N, (2R+1)^2 + 2, H, W).

    The first (2R+1)^2 channels are 3x3-patch mean absolute differences |cur(p) - warped(p + d)|
    for d in [-R, R]^2 (row-major, dy outer), computed after average-pooling both frames by
    ``pool`` (d in pooled pixels, so the reach is R * pool input pixels) and brought back to the
    input size; the last two are the soft-argmin displacement (dx, dy) in input pixels: the
    residual motion that best explains frame t from the warped frame t-1 (backward flow),
    weighted by how much better than no motion the best match is (``confidence_scale``; the
    soft-argmin's ``temperature`` in cost units).
    """
    if radius <= 0:
        raise ValueError(f"radius must be positive, got {radius}")
    size = cur.shape[-2:]
    if pool > 1:
        cur, warped = F.avg_pool2d(cur, pool), F.avg_pool2d(warped, pool)
    h, w = cur.shape[-2:]
    padded = F.pad(warped, (radius,) * 4, mode="replicate")
    steps = range(2 * radius + 1)
    diffs = [(cur - padded[..., dy:dy + h, dx:dx + w]).abs().mean(dim=1) for dy in steps for dx in steps]
    cost = F.avg_pool2d(torch.stack(diffs, dim=1), 3, stride=1, padding=1, count_include_pad=False)
    offsets = torch.arange(-radius, radius + 1, device=cur.device, dtype=cost.dtype) * pool
    weights = torch.softmax(-cost / temperature, dim=1).view(-1, 2 * radius + 1, 2 * radius + 1, h, w)
    dx = (weights.sum(dim=1) * offsets.view(1, -1, 1, 1)).sum(dim=1)
    dy = (weights.sum(dim=2) * offsets.view(1, -1, 1, 1)).sum(dim=1)
    gain = cost[:, cost.shape[1] // 2] - cost.min(dim=1).values
    confidence = gain / (gain + confidence_scale) if confidence_scale > 0 else torch.ones_like(gain)
    dx, dy = dx * confidence, dy * confidence
    out = torch.cat([cost, torch.stack([dx, dy], dim=1)], dim=1)
    if pool > 1:
        out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
    return out
