"""Colour jitter that keeps a window photometrically consistent along time.

Brightness, contrast, saturation and hue are all applied as *one* affine colour map,
``rgb' = clamp(A @ rgb + b)``, fixed per window.  Contrast pivots about mid-grey (0.5) rather
than the image mean, so the map does not depend on the pixels: every frame of the window (and
any subset of its frames, loaded separately) gets exactly the same map, and a pixel that moves
keeps its colour from frame to frame (``I_t(p) ~ I_{t-1}(p + f)`` still holds).  Geometry is
untouched: flow, depth and their masks are the same with or without jitter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

LUMA = (0.299, 0.587, 0.114)
"""Rec. 601 luma weights: the grey a saturation of 0 leaves."""

# RGB -> YIQ (luma plus two chroma axes); a hue change is a rotation of the (I, Q) plane.
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                           dtype=torch.float64)


@dataclass(frozen=True)
class ColourJitter:
    """Factors of one window's colour map (1, 1, 1, 0 = identity)."""

    brightness: float = 1.0
    """Multiplies every channel."""
    contrast: float = 1.0
    """Scales the distance from mid-grey."""
    saturation: float = 1.0
    """Blends with the pixel's luma grey (0 = greyscale, > 1 = more saturated)."""
    hue: float = 0.0
    """Rotation of the chroma plane in turns (0.5 = half the colour circle)."""

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A (3, 3), b (3,)) float32 with ``rgb' = A @ rgb + b``, applied in the order above."""
        eye = torch.eye(3, dtype=torch.float64)
        brightness = eye * self.brightness
        luma = torch.tensor(LUMA, dtype=torch.float64)
        saturation = self.saturation * eye + (1.0 - self.saturation) * torch.ones(3, 1, dtype=torch.float64) * luma
        angle = 2.0 * math.pi * self.hue
        rotation = torch.tensor([[1.0, 0.0, 0.0], [0.0, math.cos(angle), -math.sin(angle)],
                                 [0.0, math.sin(angle), math.cos(angle)]], dtype=torch.float64)
        hue = torch.linalg.solve(_RGB_TO_YIQ, rotation @ _RGB_TO_YIQ)
        colour = hue @ saturation
        # contrast: c * (x - 0.5) + 0.5 sits between brightness and the colour matrices.
        matrix = colour @ (self.contrast * brightness)
        offset = colour @ torch.full((3,), 0.5 * (1.0 - self.contrast), dtype=torch.float64)
        return matrix.float(), offset.float()


def apply_colour(rgb: torch.Tensor, jitter: ColourJitter) -> torch.Tensor:
    """rgb (..., 3, H, W) in [0, 1] -> the same map applied to every pixel of every frame, clamped."""
    matrix, offset = jitter.affine()
    mapped = torch.einsum("ij,...jhw->...ihw", matrix.to(rgb.dtype), rgb) + offset.to(rgb.dtype).view(3, 1, 1)
    return mapped.clamp_(0.0, 1.0)
