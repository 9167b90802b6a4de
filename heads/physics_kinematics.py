"""Lift distance + flow to 3D tracks: camera-frame points, velocities and accelerations per pixel.

Conventions (those of the data layer, `data/flow.py`):
- distance: metres along the ray (not planar z), (B, T, H, W), with a validity mask of the same
  shape; invalid values (inf, 0, NaN) are replaced by `torch.where` before any arithmetic.
- flow: backward flow in pixels, +x right, +y down, stored at the current frame t:
  I_t(p) ~ I_{t-1}(p + f_t(p)); (B, T, 2, H, W); frame 0 has no previous frame.
- intrinsics: (B, 4) = fx, fy, cx, cy in pixels, pixel (x, y) centred at integer (x, y);
  camera frame x right, y down, z forward (OpenCV).

A pixel p of frame t is *linked* to q = p + f_t(p) in frame t-1. A time derivative of any
per-pixel quantity Q is then taken along that link, (Q_t(p) - Q_{t-1}(q)) / dt, with Q_{t-1}(q)
read by bilinear sampling. Chaining the same operator gives acceleration (and jerk) along the
track, so every derivative is Lagrangian (follows the material point), not Eulerian (per pixel).
"""

from __future__ import annotations

from typing import TypedDict

import torch
import torch.nn.functional as F

from heads.blocks import backward_warp

EDGE_TOLERANCE = 0.02
"""Max relative distance spread (max/min - 1) inside the 2x2 cell a link samples from.

Bilinear sampling across a depth discontinuity blends an object with its background into a
point that exists nowhere; one such point, differenced twice over dt = 1/30 s, is an error of
metres/s^2. The same holds, more mildly, at the rim of a curved object, where the surface turns
away from the camera. Planes pass: neighbouring distances on a plane differ by about
cot(grazing angle) / fx, i.e. < 1 % for fx ~ 400 px (480^2 frames) down to ~10 deg grazing.
At low resolution (fx ~ 60-90 px) grazing planes need a larger tolerance."""

OCCLUSION_TOLERANCE = 0.1
"""Max relative change of distance along one link (same threshold as `data.flow`): a larger jump
means the link landed on another surface (disocclusion), not on the same point one frame earlier."""


class Kinematics(TypedDict):
    """Per-pixel 3D kinematics of frame t's pixels (camera frame, metres, seconds).

    points (B, T, 3, H, W), finite everywhere but meaningful only where points_valid (B, T, H, W);
    velocity / acceleration (B, T, 3, H, W), 0 where invalid;
    *_valid (B, T, H, W) bool; flow (B, T, 2, H, W) sanitised flow used for linking;
    link_valid (B, T, H, W) bool; dt (B,) seconds between consecutive frames, or (B, T) when the
    frames are unevenly spaced (dt[:, t] = time of frame t - time of frame t-1; entry 0 unused).
    """

    points: torch.Tensor
    points_valid: torch.Tensor
    velocity: torch.Tensor
    velocity_valid: torch.Tensor
    acceleration: torch.Tensor
    acceleration_valid: torch.Tensor
    flow: torch.Tensor
    link_valid: torch.Tensor
    dt: torch.Tensor


def ray_directions(intrinsics: torch.Tensor, height: int, width: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """(B, 4) intrinsics -> (B, 3, H, W) unit ray directions ((x-cx)/fx, (y-cy)/fy, 1) / norm."""
    k = intrinsics.to(dtype or intrinsics.dtype)
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=k.dtype, device=k.device),
        torch.arange(width, dtype=k.dtype, device=k.device),
        indexing="ij",
    )
    fx, fy, cx, cy = (k[:, i, None, None] for i in range(4))
    d = torch.stack([(xs - cx) / fx, (ys - cy) / fy, torch.ones_like(fx * xs)], dim=1)
    return d / d.norm(dim=1, keepdim=True)


def unproject(distance: torch.Tensor, intrinsics: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Distance along the ray -> camera-frame points: point = distance * unit ray.

    distance: (B, T, H, W) metres; intrinsics: (B, 4); valid: optional (B, T, H, W) bool, where
    False the distance is replaced by 1 *before* multiplying (so the points stay finite and
    gradients NaN-free; such points must be masked by the caller). Returns (B, T, 3, H, W).
    """
    if valid is not None:
        distance = torch.where(valid, distance, torch.ones_like(distance))
    rays = ray_directions(intrinsics, *distance.shape[-2:], dtype=distance.dtype)
    return distance[:, :, None] * rays[:, None]


def project(points: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Camera-frame points (B, T, 3, H, W) -> pixel positions (B, T, 2, H, W); needs z > 0."""
    k = intrinsics.to(points.dtype)[:, None, :, None, None]
    x, y, z = points.unbind(dim=2)
    return torch.stack([k[:, :, 0] * x / z + k[:, :, 2], k[:, :, 1] * y / z + k[:, :, 3]], dim=2)


def per_clip(value: float | torch.Tensor, batch: int, like: torch.Tensor) -> torch.Tensor:
    """A scalar or (B,) value (dt, g, ...) as a (B,) tensor with `like`'s dtype and device."""
    v = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    return v.expand(batch).clone() if v.dim() == 0 else v.reshape(batch)


def intervals(dt: float | torch.Tensor, batch: int, frames: int, like: torch.Tensor) -> torch.Tensor:
    """dt as (B,) (one interval per clip) or (B, T) (per-frame intervals, for unevenly spaced frames)."""
    v = torch.as_tensor(dt, dtype=like.dtype, device=like.device)
    if v.dim() == 2:
        return v.reshape(batch, frames)
    return per_clip(v, batch, like)


def midpoint_intervals(dt: torch.Tensor) -> torch.Tensor:
    """Spacing of consecutive backward-difference velocities: they sit at interval midpoints, so an
    acceleration at frame t spans (dt_t + dt_{t-1}) / 2; equal to dt when the frames are even."""
    if dt.dim() < 2:
        return dt
    return (dt + torch.cat([dt[:, :1], dt[:, :-1]], dim=1)) / 2


def _frames(x: torch.Tensor) -> torch.Tensor:
    """(B, T, ...) -> (B*T, ...)."""
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def follow(values: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Read frame t-1 of `values` at p + f_t(p) for every pixel p of frame t (bilinear).

    values: (B, T, C, H, W) (finite everywhere); flow: (B, T, 2, H, W) finite.
    Returns (B, T, C, H, W); frame 0 (no previous frame) is 0.
    """
    b, t = values.shape[:2]
    if t < 2:
        return torch.zeros_like(values)
    prev = _frames(values[:, :-1])
    sampled = backward_warp(prev, _frames(flow[:, 1:]).to(values.dtype)).reshape(b, t - 1, *values.shape[2:])
    return torch.cat([torch.zeros_like(values[:, :1]), sampled], dim=1)


def follow_points(points: torch.Tensor, flow: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """`follow` for camera-frame points, interpolating inverse planar depth 1/z instead of xyz.

    1/z is affine in pixel coordinates on *any* plane, so a bilinear read of it followed by
    P(q) = ((qx-cx)/fx, (qy-cy)/fy, 1) / w(q) is exact on planar surfaces of any orientation
    (bilinear xyz is exact only on fronto-parallel ones); curved surfaces keep an O(h^2) error.
    points: (B, T, 3, H, W) with z > 0 everywhere (see `unproject`); flow: (B, T, 2, H, W).
    Returns (B, T, 3, H, W), frame 0 = 0.
    """
    inverse = follow(1.0 / points[:, :, 2:3], flow)[:, :, 0]
    h, w = points.shape[-2:]
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=points.dtype, device=points.device),
        torch.arange(w, dtype=points.dtype, device=points.device),
        indexing="ij",
    )
    k = intrinsics.to(points.dtype)[:, None, :, None, None]
    ray_x = (xs + flow[:, :, 0] - k[:, :, 2]) / k[:, :, 0]
    ray_y = (ys + flow[:, :, 1] - k[:, :, 3]) / k[:, :, 1]
    ray = torch.stack([ray_x, ray_y, torch.ones_like(ray_x)], dim=2)
    # Frame 0 and links leaving the valid region read w <= 0 or garbage: guard the division.
    safe = torch.where(inverse > 0, inverse, torch.ones_like(inverse))
    return torch.where((inverse > 0)[:, :, None], ray / safe[:, :, None], torch.zeros_like(ray))


def _cell_min(x: torch.Tensor) -> torch.Tensor:
    """(N, H, W) -> min over the 2x2 cell whose top-left corner is each pixel (edge replicated)."""
    padded = F.pad(x[:, None], (0, 1, 0, 1), mode="replicate")
    return -F.max_pool2d(-padded, 2, stride=1)[:, 0]


def _at_cell(cell: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Frame t-1 of a per-cell bool map (B, T, H, W) read at the cell containing p + f_t(p).

    Index lookup (not interpolation): a link is trusted only if all four bilinear corners it reads
    pass the test. Frame 0 is False. flow: (B, T, 2, H, W) finite.
    """
    b, t, h, w = cell.shape
    out = torch.zeros_like(cell)
    if t < 2:
        return out
    ys, xs = torch.meshgrid(torch.arange(h, device=flow.device), torch.arange(w, device=flow.device), indexing="ij")
    f = flow[:, 1:].detach()
    x = (xs + f[:, :, 0]).floor().clamp(0, w - 1).long()
    y = (ys + f[:, :, 1]).floor().clamp(0, h - 1).long()
    prev = cell[:, :-1].reshape(b, t - 1, h * w)
    out[:, 1:] = prev.gather(2, (y * w + x).reshape(b, t - 1, h * w)).reshape(b, t - 1, h, w)
    return out


def inside_frame(flow: torch.Tensor) -> torch.Tensor:
    """(B, T, 2, H, W) flow -> (B, T, H, W) bool: p + f(p) inside the image (pixel-centre extent)."""
    h, w = flow.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h, device=flow.device), torch.arange(w, device=flow.device), indexing="ij")
    x, y = xs + flow[:, :, 0], ys + flow[:, :, 1]
    return (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)


def sanitise_flow(flow: torch.Tensor, flow_valid: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace non-finite / invalid flow by 0 before use. Returns (flow, valid (B, T, H, W) bool);
    frame 0 is always invalid (it has no previous frame)."""
    ok = torch.isfinite(flow).all(dim=2)
    if flow_valid is not None:
        ok = ok & flow_valid.bool()
    ok = ok.clone()
    ok[:, 0] = False
    return torch.where(ok[:, :, None], flow, torch.zeros_like(flow)), ok


def track_points(
    points: torch.Tensor,
    flow: torch.Tensor,
    valid: torch.Tensor,
    intrinsics: torch.Tensor | None = None,
    edge_tol: float = EDGE_TOLERANCE,
    occlusion_tol: float = OCCLUSION_TOLERANCE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where was the surface point seen at pixel p of frame t one frame earlier?

    points: (B, T, 3, H, W) from `unproject` (finite everywhere); flow: (B, T, 2, H, W) finite
    (see `sanitise_flow`); valid: (B, T, H, W) bool = point valid & flow valid at frame t;
    intrinsics: (B, 4); with them previous points come from `follow_points` (exact on planes),
    without, from bilinear xyz.
    Returns (previous (B, T, 3, H, W) = points_{t-1} read at p + f_t(p), link_valid (B, T, H, W)).
    A link is valid where p is valid, q = p + f_t(p) is inside the frame, all four corners of the
    cell around q are valid in frame t-1 and lie on one smooth surface (`edge_tol`), and the
    distance changes by at most `occlusion_tol` (relative) along the link.
    """
    dist = points.norm(dim=2)
    b, t, h, w = dist.shape
    safe = torch.where(valid, dist, torch.ones_like(dist)).detach()
    flat, ok = _frames(safe), _frames(valid).to(dist.dtype)
    lo, hi = _cell_min(flat), -_cell_min(-flat)
    smooth = (_cell_min(ok) > 0.5) & (hi <= (1.0 + edge_tol) * lo)
    link = valid & inside_frame(flow) & _at_cell(smooth.reshape(b, t, h, w), flow)
    previous = follow(points, flow) if intrinsics is None else follow_points(points, flow, intrinsics)
    jump = (previous.detach().norm(dim=2) - safe).abs() <= occlusion_tol * safe
    return previous, link & jump


def time_derivative(
    quantity: torch.Tensor,
    quantity_valid: torch.Tensor,
    flow: torch.Tensor,
    link_valid: torch.Tensor,
    dt: torch.Tensor,
    previous: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward difference along tracks: (Q_t(p) - Q_{t-1}(p + f_t(p))) / dt.

    quantity: (B, T, C, H, W), finite (0 where invalid); quantity_valid, link_valid: (B, T, H, W);
    dt: (B,) or per-frame (B, T); previous: Q_{t-1}(p + f_t(p)) if already read (default: `follow`).
    Valid where the link and Q_t are valid and all four cell corners of Q_{t-1} are, unless
    ``valid`` (B, T, H, W) says where instead (a support fixed by the ground truth, so that a
    predicted flow cannot move its own pixels out of the judged set).
    Returns (derivative (B, T, C, H, W), 0 where invalid; valid (B, T, H, W) bool).
    """
    if valid is None:
        corners = _cell_min(_frames(quantity_valid).to(quantity.dtype)).reshape(quantity_valid.shape) > 0.5
        ok = link_valid & quantity_valid & _at_cell(corners, flow)
    else:
        ok = valid.bool()
    previous = follow(quantity, flow) if previous is None else previous
    diff = (quantity - previous) / dt.reshape(dt.shape[0], -1, 1, 1, 1)
    return torch.where(ok[:, :, None], diff, torch.zeros_like(diff)), ok


def kinematics(
    distance: torch.Tensor,
    valid: torch.Tensor | None,
    flow: torch.Tensor,
    flow_valid: torch.Tensor | None,
    intrinsics: torch.Tensor,
    dt: float | torch.Tensor,
    link_valid: torch.Tensor | None = None,
    edge_tol: float = EDGE_TOLERANCE,
    occlusion_tol: float = OCCLUSION_TOLERANCE,
    support: Kinematics | None = None,
) -> Kinematics:
    """Points, velocities (frames >= 1) and accelerations (frames >= 2) of every pixel's track.

    distance: (B, T, H, W) metres along the ray (raw: inf/0/NaN allowed where `valid` is False or
    non-finite); valid: (B, T, H, W) bool or None (= finite and > 0); flow: (B, T, 2, H, W)
    backward flow in px; flow_valid: (B, T, H, W) bool or None; intrinsics: (B, 4); dt: seconds
    between *sampled* frames (stride / fps), scalar or (B,); or per-frame intervals (B, T) for
    unevenly spaced frames (e.g. ground truth resampled in time to a generator's frame rate).
    link_valid: optional precomputed link mask (e.g. the ground truth's, to judge a prediction on
    the scene's own trustworthy links); it is ANDed with inside-frame for this flow.
    support: the ground truth's kinematics of the same clip. Then every validity (links, velocity,
    acceleration) is the ground truth's and this distance and flow only supply the values: a
    prediction whose flow leaves the frame or lands on invalid pixels is judged on the same pixels
    (its values there are what the tracks read, and large), never on fewer.
    """
    ok = torch.isfinite(distance) & (distance > 0)
    ok = ok & valid.bool() if valid is not None else ok
    points = unproject(distance, intrinsics, ok)
    flow, flow_ok = sanitise_flow(flow, flow_valid)
    dt_b = intervals(dt, distance.shape[0], distance.shape[1], points)
    fixed = {"velocity": None, "acceleration": None}
    if support is not None:
        previous, link = follow_points(points, flow, intrinsics), support["link_valid"]
        fixed = {"velocity": support["velocity_valid"], "acceleration": support["acceleration_valid"]}
    elif link_valid is None:
        previous, link = track_points(points, flow, ok & flow_ok, intrinsics, edge_tol, occlusion_tol)
    else:
        previous, link = follow_points(points, flow, intrinsics), link_valid.bool() & ok & flow_ok & inside_frame(flow)
    velocity, velocity_ok = time_derivative(points, ok, flow, link, dt_b, previous, fixed["velocity"])
    acceleration, acceleration_ok = time_derivative(velocity, velocity_ok, flow, link, midpoint_intervals(dt_b),
                                                    valid=fixed["acceleration"])
    return Kinematics(
        points=points, points_valid=ok, velocity=velocity, velocity_valid=velocity_ok,
        acceleration=acceleration, acceleration_valid=acceleration_ok, flow=flow, link_valid=link, dt=dt_b,
    )  # fmt: skip
