"""Depth head: predicts log distance-to-camera (metres along the ray, not planar z)."""

from __future__ import annotations

import torch
from torch import nn

from heads.blocks import Upsampler, parameter_summary, run_per_frame
from heads.config import HeadConfig
from heads.neck import DPTNeck, check_taps
from heads.refine import RGBRefiner, check_frames


class DepthHead(nn.Module):
    """Tapped grids (B, C, F', H', W') x num_taps [+ frames (B, T, 3, H, W)] -> log depth (B, T, H, W).

    Predicting log distance makes the L1 loss relative (scale-free across near and far scenes) and
    keeps exp(output) positive. Convex upsampling (values unscaled) from stride s, then an RGB
    residual from frame t sharpens object boundaries the 32 px tokens cannot resolve.
    """

    kind = "depth"

    def __init__(self, cfg: HeadConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.features
        self.neck = DPTNeck(cfg)
        self.branch = nn.Sequential(
            nn.Conv2d(c, c // 2, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(c // 2, 1, 3, padding=1)
        )
        self.upsample = Upsampler(c, cfg.out_stride, cfg.convex_upsample, cfg.mask_scale)
        # Inputs: current RGB (3), upsampled log depth (1).
        self.refiner = RGBRefiner(4, c, 1, cfg.rgb_channels) if cfg.rgb_refine else None
        self.frame_chunk, self.gradient_checkpointing = 0, False

    def set_memory_options(self, frame_chunk: int = 0, gradient_checkpointing: bool = False) -> None:
        """Decode full resolution `frame_chunk` frames at a time (0 = all), optionally checkpointed.

        Runtime-only (not saved): results are identical, only peak memory and speed change.
        """
        self.frame_chunk, self.gradient_checkpointing = frame_chunk, gradient_checkpointing

    def forward(self, taps: list[torch.Tensor], frames: torch.Tensor | None = None) -> torch.Tensor:
        """taps: num_taps x (B, C, F', H', W'); frames: (B, T, 3, H, W) in [0, 1] -> (B, T, H, W) log metres."""
        cfg = self.cfg
        b, f, h, w = check_taps(taps, cfg)
        t, hh, ww = cfg.num_frames(f), cfg.spatial_factor * h, cfg.spatial_factor * w
        feats = self.neck(taps).flatten(0, 1)
        cur = None
        if self.refiner is not None:
            cur = check_frames(frames, (b, t, hh, ww)).to(feats.dtype).flatten(0, 1)
        depth = run_per_frame(self._decode, self.frame_chunk, self.gradient_checkpointing, feats, cur)
        return depth.reshape(b, t, hh, ww)

    def _decode(self, feats: torch.Tensor, cur: torch.Tensor | None) -> torch.Tensor:
        """Per-frame decoder: feats (N, features, H/s, W/s), RGB (N, 3, H, W) or None -> (N, 1, H, W)."""
        depth = self.upsample(self.branch(feats), feats, value_scale=1.0)
        if self.refiner is None or cur is None:
            return depth
        return depth + self.refiner(torch.cat([cur, depth.detach()], dim=1), feats)

    def summary(self) -> dict[str, int]:
        """Trainable parameters per sub-module (logged)."""
        return parameter_summary(self, type(self).__name__)
