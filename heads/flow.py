"""Motion-vector (optical flow) head.

Output convention (project-internal): BACKWARD flow in pixels, +x right, +y down, so that
I_t(p) ~ I_{t-1}(p + f_t(p)). Frame 0 has no previous frame; its output is meaningless and its
target must be masked invalid (the losses and metrics drop it by default).
"""

from __future__ import annotations

import torch

from heads.base import DenseHead
from heads.blocks import backward_warp, run_per_frame
from heads.config import HeadConfig
from heads.neck import check_taps
from heads.refine import check_frames, previous_frames


class MotionVectorHead(DenseHead):
    """Tapped grids (B, C, F', H', W') x num_taps [+ frames (B, T, 3, H, W)] -> flow (B, T, 2, H, W).

    T = 1 + tf*(F'-1), H = sf*H', W = sf*W'. The neck predicts flow at stride s = sf/neck_scale in
    stride-s pixels; RAFT convex upsampling multiplies by s; the RGB path (frames t-1, t, the
    previous frame warped by the current estimate and the photometric error) adds a residual.
    """

    kind = "flow"

    def __init__(self, cfg: HeadConfig) -> None:
        # Inputs: prev RGB (3), current RGB (3), warped prev (3), photometric error (1), flow (2).
        super().__init__(cfg, out_channels=2, refiner_inputs=12)

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
