"""Resize, crop and flip a window so that targets stay physically consistent.

- Resizing by (sx, sy) scales flow vectors by (sx, sy).
- Cropping moves the principal point but leaves vectors unchanged.
- A horizontal flip negates x-flow and mirrors the principal point.
- Depth and flow are resized with a *masked* average: invalid pixels get zero weight, so a
  background 'inf' never bleeds into an object's distance.  A pixel stays valid only when
  at least half of its support was valid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

VALID_SUPPORT = 0.5


@dataclass(frozen=True)
class Geometry:
    """Where the output frame comes from: resize factors and crop offsets (pixels, resized frame)."""

    resized_hw: tuple[int, int]
    scale_xy: tuple[float, float]
    crop_xy: tuple[int, int]
    out_hw: tuple[int, int]
    flip: bool = False


def plan_geometry(
    in_hw: tuple[int, int], out_hw: tuple[int, int], crop_xy_fraction: tuple[float, float] = (0.5, 0.5),
    flip: bool = False, area: float = 1.0, aspect: float = 1.0,
) -> Geometry:
    """Scale to cover ``out_hw`` keeping the aspect ratio, then crop (fraction 0.5 = centre).

    ``area`` < 1 and ``aspect`` != 1 make it a random resized crop: the region cut from the input
    has ``area`` times the area of the largest region of the output's aspect ratio, and ``aspect``
    times its width/height ratio, shrunk where it would leave the frame.  Zooming in is what a
    longer lens at the same camera position sees, so distances stay metric (the focal length
    grows with the scale); ``aspect`` != 1 stretches one axis (fx != fy).
    """
    (h_in, w_in), (h_out, w_out) = in_hw, out_hw
    if not 0.0 < area <= 1.0 or aspect <= 0.0:
        raise ValueError(f"a crop needs 0 < area <= 1 and aspect > 0, got area={area}, aspect={aspect}")
    cover = max(h_out / h_in, w_out / w_in)
    scale_x = max(cover / math.sqrt(area * aspect), w_out / w_in)
    scale_y = max(cover * math.sqrt(aspect / area), h_out / h_in)
    h_res, w_res = max(h_out, round(h_in * scale_y)), max(w_out, round(w_in * scale_x))
    x0 = round((w_res - w_out) * crop_xy_fraction[0])
    y0 = round((h_res - h_out) * crop_xy_fraction[1])
    return Geometry((h_res, w_res), (w_res / w_in, h_res / h_in), (x0, y0), (h_out, w_out), flip)


def _resize(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    return F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=True)


def _masked_resize(values: torch.Tensor, valid: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """values (T, C, H, W), valid (T, H, W) -> resized values with invalid pixels weighted 0."""
    if tuple(values.shape[-2:]) == tuple(hw):
        return values, valid
    weight = valid.unsqueeze(1).float()
    numerator = _resize(torch.where(weight > 0, values, torch.zeros_like(values)) * weight, hw)
    support = _resize(weight, hw)
    new_valid = support[:, 0] >= VALID_SUPPORT
    resized = numerator / support.clamp_min(1e-6)
    return torch.where(new_valid.unsqueeze(1), resized, torch.zeros_like(resized)), new_valid


def _crop_flip(x: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    (x0, y0), (h, w) = geometry.crop_xy, geometry.out_hw
    x = x[..., y0 : y0 + h, x0 : x0 + w]
    return torch.flip(x, dims=[-1]) if geometry.flip else x


def apply_rgb(rgb: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """rgb (T, 3, H, W) float in [0, 1]."""
    return _crop_flip(_resize(rgb, geometry.resized_hw).clamp(0.0, 1.0), geometry).contiguous()


def apply_rgb_uint8(frames: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """Decoded frames (T, H, W, 3) uint8 -> ``apply_rgb`` of them as (T, 3, H, W) float in [0, 1].

    Without a resize the crop and flip happen on the uint8 pixels and the conversion writes the
    channel-first float result in one pass (same values as converting first; ~4x less work).
    """
    if tuple(frames.shape[1:3]) != tuple(geometry.resized_hw):
        return apply_rgb(frames.permute(0, 3, 1, 2).float() / 255.0, geometry)
    pixels = _crop_flip(frames.permute(0, 3, 1, 2), geometry)
    return torch.empty(pixels.shape, dtype=torch.float32).copy_(pixels).div_(255.0)


def apply_flow(flow: torch.Tensor, valid: torch.Tensor, geometry: Geometry) -> tuple[torch.Tensor, torch.Tensor]:
    """flow (T, 2, H, W) internal pixels, valid (T, H, W): vectors scale with the resize."""
    flow, valid = _masked_resize(flow, valid, geometry.resized_hw)
    scale = torch.tensor(geometry.scale_xy, dtype=flow.dtype).view(1, 2, 1, 1)
    flow = _crop_flip(flow * scale, geometry)
    if geometry.flip:
        flow = flow * torch.tensor([-1.0, 1.0], dtype=flow.dtype).view(1, 2, 1, 1)
    return flow.contiguous(), _crop_flip(valid, geometry).contiguous()


def apply_depth(depth: torch.Tensor, valid: torch.Tensor, geometry: Geometry) -> tuple[torch.Tensor, torch.Tensor]:
    """depth (T, H, W) metres, valid (T, H, W)."""
    depth, valid = _masked_resize(depth.unsqueeze(1), valid, geometry.resized_hw)
    return _crop_flip(depth[:, 0], geometry).contiguous(), _crop_flip(valid, geometry).contiguous()


def apply_intrinsics(intrinsics: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """(fx, fy, cx, cy) in pixels with pixel centres on integers -> same for the output frame."""
    fx, fy, cx, cy = intrinsics.tolist()
    sx, sy = geometry.scale_xy
    # A pixel centre at integer c sits at c + 0.5 in continuous units before scaling.
    cx, cy = (cx + 0.5) * sx - 0.5 - geometry.crop_xy[0], (cy + 0.5) * sy - 0.5 - geometry.crop_xy[1]
    if geometry.flip:
        cx = geometry.out_hw[1] - 1 - cx
    return torch.tensor([fx * sx, fy * sy, cx, cy], dtype=torch.float32)


def apply_direction(vector: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """A camera-frame direction (x right, y down, z forward): a horizontal flip mirrors x."""
    return vector * torch.tensor([-1.0, 1.0, 1.0]) if geometry.flip else vector.clone()
