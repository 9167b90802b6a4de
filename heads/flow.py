"""Motion-vector (optical flow) head.

Output convention (project-internal): BACKWARD flow in pixels, +x right, +y down, so that
I_t(p) ~ I_{t-1}(p + f_t(p)). Frame 0 has no previous frame; its output is meaningless and its
target must be masked invalid (the losses and metrics drop it by default).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from heads.base import DenseHead
from heads.blocks import backward_warp
from heads.body_motion import body_displacements
from heads.config import HeadConfig
from heads.cost_volume import cost_channels, local_cost
from heads.refine import check_frames, previous_frames


class MotionVectorHead(DenseHead):
    """Tapped grids (B, C, F', H', W') x num_taps [+ frames (B, T, 3, H, W)] -> flow (B, T, 2, H, W).

    T = 1 + tf*(F'-1), H = sf*H', W = sf*W'. The neck predicts flow at stride s = sf/neck_scale in
    stride-s pixels; RAFT convex upsampling multiplies by s; the RGB path (frames t-1, t, the
    previous frame warped by the current estimate and the photometric error) adds a residual.
    """

    kind = "flow"

    def __init__(self, cfg: HeadConfig) -> None:
        # Inputs: prev RGB (3), current RGB (3), warped prev (3), photometric error (1), flow (2),
        # and the optional local matching costs (heads/cost_volume.py).
        super().__init__(cfg, out_channels=2, refiner_inputs=12 + cost_channels(cfg.rgb_cost_radius))

    def forward(self, taps: list[torch.Tensor], frames: torch.Tensor | None = None,
                frame_index: torch.Tensor | None = None, prev_frames: torch.Tensor | None = None) -> torch.Tensor:
        """taps: num_taps x (B, C, F', H', W'); frames: (B, T, 3, H, W) in [0, 1] -> (B, T, 2, H, W) px.

        With ``frame_index`` (B, K) only those video frames are decoded -> (B, K, 2, H, W); then
        ``frames`` and ``prev_frames`` are (B, K, 3, H, W): the frames at the index and before it.
        """
        feats, size = self.neck_frames(taps, frame_index)
        cur = prev = None
        if self.refiner is not None:
            frames = check_frames(frames, size).to(feats.dtype)
            prev = previous_frames(frames) if frame_index is None else check_frames(prev_frames, size, "prev_frames")
            cur, prev = frames.flatten(0, 1), prev.to(feats.dtype).flatten(0, 1)
        flow = self.decode_frames(feats.flatten(0, 1), cur, prev)
        return flow.reshape(*size[:2], 2, *size[2:])

    def _decode(self, feats: torch.Tensor, cur: torch.Tensor | None, prev: torch.Tensor | None) -> torch.Tensor:
        """Per-frame decoder: feats (N, features, H/s, W/s), RGB (N, 3, H, W) or None -> (N, 2, H, W)."""
        cfg = self.cfg
        flow = self.upsample(self.branch(feats), feats, value_scale=float(cfg.out_stride))
        if self.refiner is None or cur is None or prev is None:
            return flow
        r = self.refiner.stride
        prev, cur = self.refiner.pool(prev), self.refiner.pool(cur)
        cost = None
        if cfg.rgb_cost_radius:
            # Block matching against t-1 warped by the neck's estimate: its soft-argmin corrects the
            # estimate before the refiner sees it (on the demo's unseen families the matching alone
            # scores 2.6 px moving-pixel EPE, zero flow 4.4, the trained head without it ~4.7).
            cost = local_cost(cur, backward_warp(prev, self.refiner.pool(flow.detach()) / r), cfg.rgb_cost_radius,
                              cfg.rgb_cost_pool, cfg.rgb_cost_temperature, cfg.rgb_cost_confidence)
            flow = flow + self.refiner.upsample(cost[:, -2:] * r)
        if cfg.rgb_body_reach:
            flow = self._body_motion(flow, cur, prev, r)
        base = flow.detach()  # the refiner corrects the estimate; it need not steer it (RAFT detaches too)
        base = self.refiner.pool(base) / r
        warped = backward_warp(prev, base)  # flow in the refiner's own pixels
        err = (cur - warped).abs().mean(dim=1, keepdim=True)
        parts = [prev, cur, warped, err, base / cfg.rgb_flow_scale * r]
        if cost is not None:
            # Costs are mean RGB differences (~0.05): x10 to O(1).  They describe the match before
            # the correction, which is what says how sure it is.
            parts.append(cost[:, :-2] * 10.0)
        return flow + self.refiner(torch.cat(parts, dim=1), feats)

    def _body_motion(self, flow: torch.Tensor, cur: torch.Tensor, prev: torch.Tensor, r: int) -> torch.Tensor:
        """Write the moving patches' whole-body displacements (heads/body_motion.py, found at the
        RGB path's resolution) over ``flow`` (N, 2, H, W) px; elsewhere the flow and its gradient stay."""
        found, taken = body_displacements(cur, prev, self.refiner.pool(flow.detach()) / r, self.cfg.rgb_body_reach)
        if r > 1:
            found = self.refiner.upsample(found * r)
            taken = F.interpolate(taken.float(), size=flow.shape[-2:], mode="nearest").bool()
        return torch.where(taken, found.to(flow.dtype), flow)
