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
from functools import partial

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


def _enlarges(in_hw: tuple[int, int], geometry: Geometry) -> bool:
    h_res, w_res = geometry.resized_hw
    return (h_res, w_res) != tuple(in_hw) and h_res >= in_hw[0] and w_res >= in_hw[1]


def _axis_samples(n_out: int, offset: int, n_in: int, n_res: int) -> tuple[slice, torch.Tensor]:
    """Input span one axis of an enlarging resize-and-crop reads, and grid_sample's normalised
    coordinates of the output pixels within it (align_corners=False, as the resize uses)."""
    source = (torch.arange(n_out, dtype=torch.float64) + offset + 0.5) * (n_in / n_res) - 0.5
    first = min(max(math.floor(float(source[0])), 0), n_in - 1)
    last = min(math.floor(float(source[-1])) + 2, n_in)
    return slice(first, last), ((source - first + 0.5) / (last - first) * 2.0 - 1.0).float()


def _resize_crop(x: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """(N, C, H, W) -> the output region (N, C, h, w) of the resized frame, not yet flipped.

    Enlarging (a zoomed-in crop) samples only the output pixels, bilinearly, from the input band
    they need, instead of resizing the whole frame and throwing most of it away.  For an
    enlargement the antialiased resize is plain bilinear with clamped borders, which is what
    grid_sample computes with border padding: same values, a fraction of the work.
    """
    if not _enlarges(tuple(x.shape[-2:]), geometry):
        return _crop(_resize(x, geometry.resized_hw), geometry)
    rows, cols, grid = _band(tuple(x.shape[-2:]), geometry)
    return _sample(x[..., rows, cols], grid)


def _band(in_hw: tuple[int, int], geometry: Geometry) -> tuple[slice, slice, torch.Tensor]:
    """Rows and columns of the input an enlargement reads, and the (h, w, 2) sampling grid over them."""
    (h_res, w_res), (x0, y0), (h, w) = geometry.resized_hw, geometry.crop_xy, geometry.out_hw
    rows, grid_y = _axis_samples(h, y0, in_hw[0], h_res)
    cols, grid_x = _axis_samples(w, x0, in_hw[1], w_res)
    return rows, cols, torch.stack([grid_x.view(1, w).expand(h, w), grid_y.view(h, 1).expand(h, w)], dim=-1)


def _sample(band: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    grid = grid.to(band.dtype).expand(band.shape[0], *grid.shape)
    return F.grid_sample(band, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _masked_resize_crop(values: torch.Tensor, valid: torch.Tensor,
                        geometry: Geometry) -> tuple[torch.Tensor, torch.Tensor]:
    """values (T, C, H, W), valid (T, H, W) -> the output region, resized with invalid pixels weighted 0."""
    in_hw = tuple(values.shape[-2:])
    if in_hw == tuple(geometry.resized_hw):
        return _crop(values, geometry), _crop(valid, geometry)
    if _enlarges(in_hw, geometry):  # only the band of input pixels the output reads
        rows, cols, grid = _band(in_hw, geometry)
        values, valid = values[..., rows, cols], valid[..., rows, cols]
        resample = partial(_sample, grid=grid)
    else:
        resample = partial(_resize_crop, geometry=geometry)
    weight = valid.unsqueeze(1).float()
    numerator = resample(values.masked_fill(~valid.unsqueeze(1), 0.0))  # also drops inf / NaN of invalid pixels
    support = resample(weight)
    new_valid = support[:, 0] >= VALID_SUPPORT
    resized = numerator / support.clamp_min(1e-6)
    return resized.masked_fill_(~new_valid.unsqueeze(1), 0.0), new_valid


def _crop(x: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    (x0, y0), (h, w) = geometry.crop_xy, geometry.out_hw
    return x[..., y0 : y0 + h, x0 : x0 + w]


def _flip(x: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    return torch.flip(x, dims=[-1]) if geometry.flip else x


def apply_rgb(rgb: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """rgb (T, 3, H, W) float in [0, 1]."""
    return _flip(_resize_crop(rgb, geometry).clamp(0.0, 1.0), geometry).contiguous()


def apply_rgb_uint8(frames: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """Decoded frames (T, H, W, 3) uint8 -> ``apply_rgb`` of them as (T, 3, H, W) float in [0, 1].

    Without a resize the crop and flip happen on the uint8 pixels and the conversion writes the
    channel-first float result in one pass (same values as converting first; ~4x less work).
    An enlargement converts only the band of input pixels the output reads.
    """
    pixels = frames.permute(0, 3, 1, 2)
    if tuple(frames.shape[1:3]) == tuple(geometry.resized_hw):
        pixels = _flip(_crop(pixels, geometry), geometry)
        return torch.empty(pixels.shape, dtype=torch.float32).copy_(pixels).div_(255.0)
    if not _enlarges(tuple(frames.shape[1:3]), geometry):
        return apply_rgb(pixels.float() / 255.0, geometry)
    rows, cols, grid = _band(tuple(frames.shape[1:3]), geometry)
    band = pixels[..., rows, cols].float().div_(255.0)
    return _flip(_sample(band, grid).clamp_(0.0, 1.0), geometry).contiguous()


def apply_flow(flow: torch.Tensor, valid: torch.Tensor, geometry: Geometry) -> tuple[torch.Tensor, torch.Tensor]:
    """flow (T, 2, H, W) internal pixels, valid (T, H, W): vectors scale with the resize."""
    flow, valid = _masked_resize_crop(flow, valid, geometry)
    scale = torch.tensor(geometry.scale_xy, dtype=flow.dtype).view(1, 2, 1, 1)
    flow = _flip(flow * scale, geometry)
    if geometry.flip:
        flow = flow * torch.tensor([-1.0, 1.0], dtype=flow.dtype).view(1, 2, 1, 1)
    return flow.contiguous(), _flip(valid, geometry).contiguous()


def apply_depth(depth: torch.Tensor, valid: torch.Tensor, geometry: Geometry) -> tuple[torch.Tensor, torch.Tensor]:
    """depth (T, H, W) metres, valid (T, H, W)."""
    depth, valid = _masked_resize_crop(depth.unsqueeze(1), valid, geometry)
    return _flip(depth[:, 0], geometry).contiguous(), _flip(valid, geometry).contiguous()


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
