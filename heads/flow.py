"""Motion-vector (optical flow) head.

Output convention (project-internal): BACKWARD flow in pixels, +x right, +y down, so that
I_t(p) ~ I_{t-1}(p + f_t(p)). Frame 0 has no previous frame; its output is meaningless and its
target must be masked invalid (the losses and metrics drop it by default).
"""

from __future__ import annotations

import torch
from torch import nn

from heads.blocks import Upsampler, backward_warp, parameter_summary, run_per_frame
from heads.config import HeadConfig
from heads.neck import DPTNeck, check_taps
from heads.refine import RGBRefiner, check_frames, previous_frames


class MotionVectorHead(nn.Module):
    """Tapped grids (B, C, F', H', W') x num_taps [+ frames (B, T, 3, H, W)] -> flow (B, T, 2, H, W).

    T = 1 + tf*(F'-1), H = sf*H', W = sf*W'. The neck predicts flow at stride s = sf/neck_scale in
    stride-s pixels; RAFT convex upsampling multiplies by s; the RGB path (frames t-1, t, the
    previous frame warped by the current estimate and the photometric error) adds a residual.
    """

    kind = "flow"

    def __init__(self, cfg: HeadConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.features
        self.neck = DPTNeck(cfg)
        self.branch = nn.Sequential(
            nn.Conv2d(c, c // 2, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(c // 2, 2, 3, padding=1)
        )
        self.upsample = Upsampler(c, cfg.out_stride, cfg.convex_upsample, cfg.mask_scale)
        # Inputs: prev RGB (3), current RGB (3), warped prev (3), photometric error (1), flow (2).
        self.refiner = RGBRefiner(12, c, 2, cfg.rgb_channels) if cfg.rgb_refine else None
        self.frame_chunk, self.gradient_checkpointing = 0, False

    def set_memory_options(self, frame_chunk: int = 0, gradient_checkpointing: bool = False) -> None:
        """Decode full resolution `frame_chunk` frames at a time (0 = all), optionally checkpointed.

        Runtime-only (not saved): results are identical, only peak memory and speed change.
        """
        self.frame_chunk, self.gradient_checkpointing = frame_chunk, gradient_checkpointing

    def forward(self, taps: list[torch.Tensor], frames: torch.Tensor | None = None) -> torch.Tensor:
        """taps: num_taps x (B, C, F', H', W'); frames: (B, T, 3, H, W) in [0, 1] -> (B, T, 2, H, W) px."""
        cfg = self.cfg
        b, f, h, w = check_taps(taps, cfg)
        t, hh, ww = cfg.num_frames(f), cfg.spatial_factor * h, cfg.spatial_factor * w
        feats = self.neck(taps).flatten(0, 1)  # (B*T, features, H/s, W/s)
        cur = prev = None
        if self.refiner is not None:
            frames = check_frames(frames, (b, t, hh, ww)).to(feats.dtype)
            cur, prev = frames.flatten(0, 1), previous_frames(frames).flatten(0, 1)
        flow = run_per_frame(self._decode, self.frame_chunk, self.gradient_checkpointing, feats, cur, prev)
        return flow.reshape(b, t, 2, hh, ww)

    def _decode(self, feats: torch.Tensor, cur: torch.Tensor | None, prev: torch.Tensor | None) -> torch.Tensor:
        """Per-frame decoder: feats (N, features, H/s, W/s), RGB (N, 3, H, W) or None -> (N, 2, H, W)."""
        cfg = self.cfg
        flow = self.upsample(self.branch(feats), feats, value_scale=float(cfg.out_stride))
        if self.refiner is None or cur is None or prev is None:
            return flow
        base = flow.detach()  # the refiner corrects the estimate; it need not steer it (RAFT detaches too)
        warped = backward_warp(prev, base)
        err = (cur - warped).abs().mean(dim=1, keepdim=True)
        inp = torch.cat([prev, cur, warped, err, base / cfg.rgb_flow_scale], dim=1)
        return flow + self.refiner(inp, feats)

    def summary(self) -> dict[str, int]:
        """Trainable parameters per sub-module (logged)."""
        return parameter_summary(self, type(self).__name__)
