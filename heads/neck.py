"""DPT-style neck: tapped token grids -> one fused feature map per *video* frame.

Per tap: 1x1 projection, own resize (shallow taps upsampled most), 3x3 conv to `features`;
zero-initialised temporal attention on the coarsest levels; coarse-to-fine fusion; finally the
VAE temporal grouping expands latent frames to video frames (`TemporalExpand`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from heads.blocks import FusionBlock, TemporalAttention, TemporalExpand
from heads.config import HeadConfig


def _resize_layer(channels: int, scale: float) -> nn.Module:
    """Learned resize by a power-of-two `scale` (DPT: transposed conv up, strided conv down)."""
    if scale > 1:
        s = int(scale)
        return nn.ConvTranspose2d(channels, channels, kernel_size=s, stride=s)
    if scale == 1:
        return nn.Identity()
    steps = int(round(math.log2(1 / scale)))
    layers: list[nn.Module] = []
    for i in range(steps):
        layers += [nn.Conv2d(channels, channels, 3, stride=2, padding=1)] + ([nn.ReLU()] if i < steps - 1 else [])
    return nn.Sequential(*layers)


def check_taps(taps: list[torch.Tensor], cfg: HeadConfig) -> tuple[int, int, int, int]:
    """Validate the tap list against the config; returns (B, F', H', W')."""
    if len(taps) != cfg.num_taps:
        raise ValueError(f"expected {cfg.num_taps} tapped grids, got {len(taps)}")
    shape = tuple(taps[0].shape)
    for i, t in enumerate(taps):
        if t.dim() != 5 or t.shape[1] != cfg.in_channels:
            raise ValueError(f"tap {i}: expected (B, {cfg.in_channels}, F', H', W'), got {tuple(t.shape)}")
        if tuple(t.shape) != shape:
            raise ValueError(f"tap {i} has shape {tuple(t.shape)}, tap 0 has {shape}")
    b, _, f, h, w = shape
    return b, f, h, w


class DPTNeck(nn.Module):
    """Taps (B, C, F', H', W') x num_taps -> features (B, T, features, s*H', s*W'), s = neck_scale."""

    def __init__(self, cfg: HeadConfig) -> None:
        super().__init__()
        self.cfg = cfg
        n = cfg.num_taps
        self.scales = [cfg.neck_scale / 2**i for i in range(n)]
        self.project = nn.ModuleList(nn.Conv2d(cfg.in_channels, c, 1) for c in cfg.tap_channels)
        self.resize = nn.ModuleList(_resize_layer(c, s) for c, s in zip(cfg.tap_channels, self.scales))
        self.layer_rn = nn.ModuleList(nn.Conv2d(c, cfg.features, 3, padding=1, bias=False) for c in cfg.tap_channels)
        self.fusion = nn.ModuleList(FusionBlock(cfg.features) for _ in range(n))
        # Temporal mixing on the coarsest `temporal_levels` levels: once on the level's input, once
        # on its fused output (VDA places motion modules at layer_3/4 and path_3/4).
        self.temporal_levels = list(range(n - cfg.temporal_levels, n))
        self.temporal_in = nn.ModuleDict(
            {str(i): TemporalAttention(cfg.features, cfg.temporal_heads) for i in self.temporal_levels}
        )
        self.temporal_out = nn.ModuleDict(
            {str(i): TemporalAttention(cfg.features, cfg.temporal_heads) for i in self.temporal_levels}
        )
        self.expand = TemporalExpand(cfg.features, cfg.temporal_factor)

    def _levels(self, taps: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-tap projection + resize; frames folded into the batch: each (B*F', features, h_i, w_i)."""
        levels = []
        for i, tap in enumerate(taps):
            b, c, f, h, w = tap.shape
            x = tap.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
            x = self.layer_rn[i](self.resize[i](self.project[i](x)))
            if str(i) in self.temporal_in:
                x = self.temporal_in[str(i)](x, f)
            levels.append(x)
        return levels

    def forward(self, taps: list[torch.Tensor]) -> torch.Tensor:
        """taps: list of (B, C, F', H', W'), shallow -> deep. Returns (B, T, features, s*H', s*W')."""
        b, f, h, w = check_taps(taps, self.cfg)
        levels = self._levels(taps)
        path = None
        for i in reversed(range(len(levels))):
            # Fuse into level i, then resize to the next finer level (or stay, at the finest).
            size = tuple(levels[i - 1].shape[-2:]) if i > 0 else tuple(levels[0].shape[-2:])
            path = self.fusion[i](path, levels[i], size)
            if str(i) in self.temporal_out:
                path = self.temporal_out[str(i)](path, f)
        assert path is not None
        path = path.reshape(b, f, *path.shape[1:])
        return self.expand(path)
