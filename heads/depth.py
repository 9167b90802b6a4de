"""Depth head: predicts log distance-to-camera (metres along the ray, not planar z)."""

from __future__ import annotations

import torch

from heads.base import DenseHead
from heads.config import HeadConfig
from heads.refine import check_frames


class DepthHead(DenseHead):
    """Tapped grids (B, C, F', H', W') x num_taps [+ frames (B, T, 3, H, W)] -> log depth (B, T, H, W).

    Predicting log distance makes the L1 loss relative (scale-free across near and far scenes) and
    keeps exp(output) positive. Convex upsampling (values unscaled) from stride s, then an RGB
    residual from frame t sharpens object boundaries the 32 px tokens cannot resolve.
    """

    kind = "depth"

    def __init__(self, cfg: HeadConfig) -> None:
        # Inputs: current RGB (3), upsampled log depth (1).
        super().__init__(cfg, out_channels=1, refiner_inputs=4)

    def forward(self, taps: list[torch.Tensor], frames: torch.Tensor | None = None,
                frame_index: torch.Tensor | None = None) -> torch.Tensor:
        """taps: num_taps x (B, C, F', H', W'); frames: (B, T, 3, H, W) in [0, 1] -> (B, T, H, W) log metres.

        With ``frame_index`` (B, K) only those frames are decoded: frames (B, K, 3, H, W) -> (B, K, H, W).
        """
        feats, size = self.neck_frames(taps, frame_index)
        cur = None
        if self.refiner is not None:
            cur = check_frames(frames, size).to(feats.dtype).flatten(0, 1)
        depth = self.decode_frames(feats.flatten(0, 1), cur)
        return depth.reshape(size)

    def _decode(self, feats: torch.Tensor, cur: torch.Tensor | None) -> torch.Tensor:
        """Per-frame decoder: feats (N, features, H/s, W/s), RGB (N, 3, H, W) or None -> (N, 1, H, W)."""
        depth = self.upsample(self.branch(feats), feats, value_scale=1.0)
        if self.refiner is None or cur is None:
            return depth
        inp = self.refiner.pool(torch.cat([cur, depth.detach()], dim=1))
        return depth + self.refiner(inp, feats)
