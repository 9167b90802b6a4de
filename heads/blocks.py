"""Building blocks shared by the flow and depth heads.

Everything here is per-frame (frames folded into the batch) except `TemporalAttention`, and no
block normalises over the batch: BatchNorm would couple frames and samples and break the
temporal-grouping guarantee the tests check (latent frame k only drives video frames 4k-3..4k).
"""

from __future__ import annotations

import logging
import math
from typing import Callable

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

logger = logging.getLogger(__name__)


class ResidualConvUnit(nn.Module):
    """DPT's pre-activation residual unit: x + conv(relu(conv(relu(x)))). No norm (DPT default)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """DPT feature fusion: add the refined skip to the coarser path, refine, resize to `size`.

    Resizing to an explicit size instead of a fixed x2 matters here: the 5B grid is 15x15, so the
    stride-2 coarsest level is 8x8 and a plain x2 would give 16 != 15.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.skip_unit = ResidualConvUnit(channels)
        self.out_unit = ResidualConvUnit(channels)
        self.out_conv = nn.Conv2d(channels, channels, 1)

    def forward(self, path: torch.Tensor | None, skip: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """path: (N, C, h, w) coarser fused map or None; skip: (N, C, h, w) -> (N, C, *size)."""
        x = self.skip_unit(skip)
        if path is not None:
            x = x + path
        x = self.out_unit(x)
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(x)


def sinusoidal_embedding(n: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """(n, dim) fixed sin/cos position code; lets temporal attention tell frame order apart."""
    pos = torch.arange(n, dtype=torch.float32, device=device)[:, None]
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=device) / max(half, 1))
    emb = torch.cat([torch.sin(pos * freq), torch.cos(pos * freq)], dim=1)
    return F.pad(emb, (0, dim - emb.shape[1]))


class TemporalAttention(nn.Module):
    """Self-attention across latent frames at every spatial location, plus an MLP.

    Both residual branches end in zero-initialised projections, so the block starts as the identity
    and the head initially treats frames independently (VDA `dpt_temporal.py` motion modules).
    """

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        self.norm2 = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(nn.Linear(channels, 2 * channels), nn.GELU(), nn.Linear(2 * channels, channels))
        for layer in (self.proj, self.mlp[2]):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """x: (B*F, C, h, w) with frames contiguous per sample -> same shape."""
        n, c, h, w = x.shape
        b = n // num_frames
        t = x.reshape(b, num_frames, c, h * w).permute(0, 3, 1, 2).reshape(b * h * w, num_frames, c)
        y = self.norm1(t) + sinusoidal_embedding(num_frames, c, x.device).to(x.dtype)
        q, k, v = self.qkv(y).reshape(b * h * w, num_frames, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b * h * w, num_frames, c)
        t = t + self.proj(a)
        t = t + self.mlp(self.norm2(t))
        return t.reshape(b, h * w, num_frames, c).permute(0, 2, 3, 1).reshape(n, c, h, w)


class TemporalExpand(nn.Module):
    """Latent frames -> video frames by the VAE's grouping (a transposed temporal conv, kernel = stride).

    Latent 0 encodes video frame 0 alone; latent k >= 1 encodes frames tf*k-tf+1 .. tf*k. Each
    video frame is a learned 1x1 map of *its own* latent frame, one map per position in the group
    (plus one for frame 0), initialised to the identity. Interpolating 13 -> 49 would instead blend
    neighbouring groups and misplace motion in time.
    """

    def __init__(self, channels: int, temporal_factor: int) -> None:
        super().__init__()
        self.tf = temporal_factor
        self.first = nn.Conv2d(channels, channels, 1)
        self.group = nn.Conv2d(channels, channels * temporal_factor, 1)
        with torch.no_grad():
            eye = torch.eye(channels)[:, :, None, None]
            self.first.weight.copy_(eye)
            self.group.weight.copy_(eye.repeat(temporal_factor, 1, 1, 1))
            self.first.bias.zero_()
            self.group.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, F', C, h, w) -> (B, 1 + tf*(F'-1), C, h, w)."""
        b, f, c, h, w = x.shape
        first = self.first(x[:, 0]).unsqueeze(1)
        if f == 1:
            return first
        rest = self.group(x[:, 1:].reshape(b * (f - 1), c, h, w))
        rest = rest.reshape(b, (f - 1) * self.tf, c, h, w)  # slot s of latent k -> frame tf*(k-1)+1+s
        return torch.cat([first, rest], dim=1)


def video_to_latent_index(t: int, temporal_factor: int) -> int:
    """Latent frame holding video frame t: 0 for t = 0, else ceil(t / tf)."""
    return 0 if t == 0 else (t + temporal_factor - 1) // temporal_factor


def convex_upsample(field: torch.Tensor, mask_logits: torch.Tensor, factor: int, value_scale: float) -> torch.Tensor:
    """RAFT `upsample_flow`: each fine pixel is a convex combination of its coarse 3x3 neighbours.

    field: (N, D, h, w); mask_logits: (N, 9*factor**2, h, w) -> (N, D, factor*h, factor*w).
    `value_scale` multiplies the values (= factor for flow in coarse-pixel units, 1 for depth).
    Because the weights are a softmax, a constant field stays exactly constant (times the scale).
    """
    n, d, h, w = field.shape
    mask = torch.softmax(mask_logits.reshape(n, 1, 9, factor, factor, h, w), dim=2)
    nbrs = F.unfold(value_scale * field, kernel_size=3, padding=1).reshape(n, d, 9, 1, 1, h, w)
    # Replicate padding would be nicer at borders, but unfold zero-pads; renormalise instead so the
    # border pixels are still a convex combination of *real* neighbours.
    ones = F.unfold(torch.ones_like(field[:, :1]), kernel_size=3, padding=1).reshape(n, 1, 9, 1, 1, h, w)
    wts = mask * ones
    up = (wts * nbrs).sum(dim=2) / wts.sum(dim=2).clamp_min(1e-12)
    return up.permute(0, 1, 4, 2, 5, 3).reshape(n, d, factor * h, factor * w)


class Upsampler(nn.Module):
    """Predicts convex-upsampling masks from features (or falls back to bilinear)."""

    def __init__(self, channels: int, factor: int, convex: bool, mask_scale: float) -> None:
        super().__init__()
        self.factor, self.convex, self.mask_scale = factor, convex, mask_scale
        if convex and factor > 1:
            self.mask = nn.Sequential(
                nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(channels, 9 * factor**2, 1)
            )

    def forward(self, field: torch.Tensor, feats: torch.Tensor, value_scale: float) -> torch.Tensor:
        """field: (N, D, h, w), feats: (N, C, h, w) -> (N, D, factor*h, factor*w)."""
        if self.factor == 1:
            return field * value_scale
        if not self.convex:
            size = (field.shape[-2] * self.factor, field.shape[-1] * self.factor)
            return value_scale * F.interpolate(field, size=size, mode="bilinear", align_corners=False)
        return convex_upsample(field, self.mask_scale * self.mask(feats), self.factor, value_scale)


def backward_warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample `image` at p + flow(p): with backward flow, warp(I_{t-1}, f_t) ~ I_t.

    image: (N, C, H, W); flow: (N, 2, H, W) in pixels, +x right, +y down. Out-of-frame samples
    read the border value.
    """
    n, _, h, w = flow.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, device=flow.device, dtype=flow.dtype),
        torch.arange(w, device=flow.device, dtype=flow.dtype),
        indexing="ij",
    )
    gx = 2.0 * (xs + flow[:, 0]) / max(w - 1, 1) - 1.0
    gy = 2.0 * (ys + flow[:, 1]) / max(h - 1, 1) - 1.0
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode="border", align_corners=True)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def parameter_summary(module: nn.Module, name: str = "head") -> dict[str, int]:
    """Trainable parameters per direct sub-module (plus 'total'), also written to the log."""
    rows = {child: count_parameters(m) for child, m in module.named_children()}
    rows["total"] = count_parameters(module)
    width = max(len(k) for k in rows)
    lines = [f"{k.ljust(width)}  {v:>12,}" for k, v in rows.items()]
    logger.info("%s trainable parameters:\n%s", name, "\n".join(lines))
    return rows


def run_per_frame(
    fn: Callable[..., torch.Tensor], chunk: int, checkpoint: bool, *tensors: torch.Tensor | None
) -> torch.Tensor:
    """Apply a per-frame `fn` to (N, ...) tensors in chunks of `chunk` frames (0 = all at once).

    The full-resolution decoder dominates activation memory at 49x480^2 (~14 GiB fp32 saved per
    head); since it treats frames independently, chunking plus non-reentrant checkpointing caps that
    at one chunk's worth without changing the result.
    """
    n = next(t for t in tensors if t is not None).shape[0]
    step = chunk if chunk > 0 else n
    outs = []
    for s in range(0, n, step):
        part = [t[s : s + step] if t is not None else None for t in tensors]
        if checkpoint and torch.is_grad_enabled():
            outs.append(torch.utils.checkpoint.checkpoint(fn, *part, use_reentrant=False))
        else:
            outs.append(fn(*part))
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)
