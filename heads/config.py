"""Configuration of the flow and depth heads.

One dataclass serves both heads: they share the DPT-style neck and differ only in their output
branch. The geometry (channels, taps, compression factors) is passed in, never hard-coded, so the
same code runs on the tiny random backbone in tests and on TI2V-5B (C=3072, 13x15x15 grid).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any


def _is_pow2(n: int) -> bool:
    return n > 0 and (n & (n - 1)) == 0


@dataclass
class HeadConfig:
    """Architecture of one head (flow or depth). Saved as JSON next to the weights."""

    in_channels: int = 3072
    """Channel width C of every tapped backbone grid (WAN 2.2 TI2V-5B: dim 3072)."""

    num_taps: int = 4
    """Number of tapped blocks, ordered shallow -> deep. Shallow taps get the finest resize (DPT)."""

    spatial_factor: int = 32
    """Pixels per token side: VAE 16x times DiT patch 2 = 32. Output H = spatial_factor * H'."""

    temporal_factor: int = 4
    """Video frames per latent frame (k >= 1). Latent 0 holds video frame 0 alone, so
    T = 1 + temporal_factor * (F' - 1)."""

    features: int = 128
    """Width of the fusion path (DPT `features`). Dominates compute at the fine levels."""

    tap_channels: tuple[int, ...] | None = None
    """Per-tap projection widths (shallow -> deep). None -> (f/2, f, 2f, 2f, 2f, ...) for f=features."""

    neck_scale: int = 4
    """Resize factor of the shallowest tap relative to the token grid; tap i is resized by
    neck_scale / 2**i. The fused map therefore has stride spatial_factor / neck_scale (8 px for
    32/4), which is where the output branch and convex upsampling start (as in RAFT's 1/8)."""

    temporal_levels: int = 2
    """How many of the coarsest neck levels get zero-initialised temporal attention across latent
    frames (Video-Depth-Anything style). 0 disables temporal mixing; zero-init starts as identity."""

    temporal_heads: int = 4
    """Attention heads of the temporal blocks (must divide `features`)."""

    convex_upsample: bool = True
    """Upsample the stride-s prediction with RAFT's learned convex combination of 3x3 neighbours;
    False falls back to bilinear interpolation (vectors still multiplied by the factor)."""

    mask_scale: float = 0.25
    """Multiplier on the convex-upsampling mask logits (RAFT uses 0.25 to keep softmax soft early)."""

    rgb_refine: bool = True
    """Add the light full-resolution RGB-guided U-Net refinement (frames t-1, t for flow; t for
    depth). At tiny scale this path is what made flow generalise (docs/stage1.md, block matching)."""

    rgb_refine_stride: int = 1
    """Resolution the RGB path works at: 1 = full, 2 = half (frames average-pooled, the residual
    upsampled bilinearly). Half resolution cuts its cost ~4x, and it is ~85 % of a full-frame
    heads step at 49x480^2 (scripts/head_cost.py), at the price of detail finer than 2 px."""

    rgb_channels: tuple[int, ...] | None = None
    """U-Net widths from the RGB path's resolution down to the neck stride
    (log2(out_stride / rgb_refine_stride) + 1 entries). None -> (16, 32, 48, 64, 96, ...) cut to
    that length: ~0.24 M parameters for stride 8 at full resolution."""

    rgb_flow_scale: float = 8.0
    """Flow (px) is divided by this before entering the RGB path, to keep its inputs O(1)."""

    rgb_cost_radius: int = 0
    """Flow head only: block-match frame t against frame t-1 warped by the neck's estimate, for
    displacements up to this radius; the confident soft-argmin corrects the estimate and the
    (2R+1)^2 costs join the RGB path's inputs (0 = none; heads/cost_volume.py)."""

    rgb_cost_pool: int = 1
    """The matching cost is computed on frames average-pooled by this factor (relative to the RGB
    path's resolution), so it reaches rgb_cost_radius * rgb_cost_pool pixels there."""

    rgb_cost_temperature: float = 0.02
    """Soft-argmin temperature of the matching, in cost units (mean absolute RGB difference):
    lower follows the best match more closely instead of averaging it with near-ties (no motion
    among them), so small moving bodies keep more of their motion (heads/cost_volume.py)."""

    rgb_cost_confidence: float = 0.02
    """The matched displacement is scaled by gain / (gain + this), gain = cost at no motion minus
    the best cost: where nothing moved, or nothing can be matched, no displacement.  Lower trusts
    weaker matches (more motion on small bodies, more noise on still pixels)."""

    rgb_body_reach: int = 0
    """Flow head only: after the block matching, moving patches of the image vote for one
    displacement each within this many px of the RGB path (0 = off; heads/body_motion.py): small
    fast bodies keep their whole motion instead of the half a local match recovers."""

    def __post_init__(self) -> None:
        self._validate_geometry()
        f = self.features
        if self.tap_channels is None:  # DPT-like widening with depth: (f/2, f, 2f, 2f, ...)
            self.tap_channels = (max(f // 2, 1),) + tuple(f * min(2**i, 2) for i in range(self.num_taps - 1))
        self.tap_channels = tuple(int(c) for c in self.tap_channels)
        if self.rgb_channels is None:
            self.rgb_channels = (16, 32, 48, 64, 96, 128, 160, 192)[: self._rgb_levels]
        self.rgb_channels = tuple(int(c) for c in self.rgb_channels)
        if len(self.tap_channels) != self.num_taps:
            raise ValueError(f"tap_channels has {len(self.tap_channels)} entries for num_taps={self.num_taps}")
        if self.rgb_refine and len(self.rgb_channels) != self._rgb_levels:
            raise ValueError(
                f"rgb_channels needs log2(out_stride={self.out_stride} / rgb_refine_stride="
                f"{self.rgb_refine_stride})+1 = {self._rgb_levels} entries, "
                f"got {len(self.rgb_channels)}"
            )

    def _validate_geometry(self) -> None:
        if self.in_channels <= 0 or self.num_taps <= 0 or self.features <= 0:
            raise ValueError("in_channels, num_taps and features must be positive")
        if not (_is_pow2(self.neck_scale) and _is_pow2(self.spatial_factor)):
            raise ValueError("neck_scale and spatial_factor must be powers of two")
        if self.spatial_factor % self.neck_scale:
            raise ValueError(f"neck_scale {self.neck_scale} must divide spatial_factor {self.spatial_factor}")
        if not _is_pow2(self.rgb_refine_stride) or self.rgb_refine_stride > self.out_stride:
            raise ValueError(f"rgb_refine_stride must be a power of two <= out_stride={self.out_stride}, "
                             f"got {self.rgb_refine_stride}")
        if self.rgb_cost_temperature <= 0 or self.rgb_cost_confidence < 0:
            raise ValueError(f"rgb_cost_temperature must be > 0 and rgb_cost_confidence >= 0, got "
                             f"{self.rgb_cost_temperature}, {self.rgb_cost_confidence}")
        if self.rgb_body_reach < 0 or (self.rgb_body_reach and not self.rgb_refine):
            raise ValueError(f"rgb_body_reach must be >= 0 and needs rgb_refine (the RGB path's frames), got "
                             f"{self.rgb_body_reach} with rgb_refine={self.rgb_refine}")
        if self.rgb_cost_radius < 0 or not _is_pow2(self.rgb_cost_pool):
            raise ValueError(f"rgb_cost_radius must be >= 0 and rgb_cost_pool a power of two, got "
                             f"{self.rgb_cost_radius}, {self.rgb_cost_pool}")
        if self.temporal_factor < 1:
            raise ValueError("temporal_factor must be >= 1")
        if not 0 <= self.temporal_levels <= self.num_taps:
            raise ValueError(f"temporal_levels must lie in [0, num_taps={self.num_taps}]")
        if self.temporal_levels and self.features % self.temporal_heads:
            raise ValueError(f"temporal_heads {self.temporal_heads} must divide features {self.features}")

    @property
    def _rgb_levels(self) -> int:
        return int(math.log2(self.out_stride // self.rgb_refine_stride)) + 1

    @property
    def out_stride(self) -> int:
        """Stride (px) of the fused map; the final upsampling factor to full resolution."""
        return self.spatial_factor // self.neck_scale

    def num_frames(self, latent_frames: int) -> int:
        """Video frames T for F' latent frames: 1 + temporal_factor * (F' - 1)."""
        return 1 + self.temporal_factor * (latent_frames - 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "HeadConfig":
        """Inverse of `to_dict`; unknown keys are an error so a stale file cannot load silently."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown HeadConfig fields {unknown}; known: {sorted(names)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


__all__ = ["HeadConfig"]
