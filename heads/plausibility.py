"""How plausible is a clip's motion?  One score per clip from distance and flow (higher = more
plausible), used by the verifier command, best-of-N selection and stage 2's reward.

The rule measures the laws instead of assuming them.  Free flight is found from the motion
itself: pixels whose acceleration points along the vertical (up *or* down), whatever its size; g
is then what the clip shows, not a filter on which pixels count.  The vertical comes from the
scene: the floor plane fitted to the static points (a camera looks down on a floor), so only the
frames and the intrinsics are needed, never the camera pose or the simulator's tracks.

Terms (each 0 for a clip that keeps the law, about 1 for a clear break; the score is minus
their sum, one weight each):
- ``gravity``: |g_fit - 9.81| / 9.81, g_fit the median vertical acceleration of free flight
  (0.5 g and 2 g give 0.5 and 1; g pointing up gives 2);
- ``impulse``: acceleration changes along tracks with no surface to explain them, as a share of
  g per frame (a teleport, a changed time base, an object that starts moving by itself);
- ``vanish``: moving surface of frame t-1 that no valid track of frame t continues, as a share of
  all moving surface (objects that disappear or sink into a floor);
- ``friction``: horizontal acceleration *along* the horizontal velocity, as a share of g (friction
  only ever slows a slide: in a clip played backwards it speeds it up).
"""

from __future__ import annotations

import math

import torch

from heads.physics import STANDARD_GRAVITY, moving_pixels
from heads.physics_kinematics import Kinematics, kinematics, time_derivative

MIN_SPEED = 0.1
"""m/s: slower pixels count as at rest (noise floor of the tracks, see heads.physics)."""
FREE_MIN_ACCEL = 1.5
"""m/s^2: free flight must accelerate at least this much (a slide or a roll at constant speed does
not); far below any gravity a plausible clip could show, so it selects without assuming g."""
VERTICAL_SHARE = 0.8
"""|a . down| / |a| above this = acceleration along the vertical (free flight, either sign)."""
STEADY_SHARE = 0.3
"""Free flight keeps its acceleration: |a_t - a_{t-1}| along the track below this share of |a|."""
GRAVITY_BIN = 1.0
"""m/s^2: width of the window in which the free-flight accelerations are densest (densest_value)."""
MIN_FREE_PIXELS = 20
"""Fewer free-flight pixels than this: no gravity evidence (the term is 0)."""
TERMS = ("gravity", "impulse", "vanish", "friction")


def _masked(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return x[m] if m.any() else x.new_zeros(0)


def floor_down(points: torch.Tensor, valid: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
    """Unit 'down' (3,) in the camera frame: minus the normal of the plane through the static points
    of the lower half of the image, fitted by least squares with two rounds of outlier rejection;
    image-down (0, 1, 0) when too few points.  points (T, 3, H, W), valid/static (T, H, W)."""
    h = points.shape[-2]
    lower = torch.zeros_like(valid)
    lower[..., h // 2:, :] = True
    m = valid & static & lower
    xyz = points.permute(0, 2, 3, 1)[m].double()
    fallback = torch.tensor([0.0, 1.0, 0.0], dtype=points.dtype, device=points.device)
    if xyz.shape[0] < 50:
        return fallback
    keep = torch.ones(xyz.shape[0], dtype=torch.bool, device=xyz.device)
    for _ in range(3):
        centre = xyz[keep].mean(dim=0)
        normal = torch.linalg.svd(xyz[keep] - centre, full_matrices=False).Vh[-1]
        residual = ((xyz - centre) @ normal).abs()
        keep = residual <= 2.0 * residual[keep].median() + 1e-6
    if normal @ centre < 0:  # the normal that points away from the camera is 'down' (camera above floor)
        normal = -normal
    return normal.to(points.dtype)


def _vertical(a: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """(T, 3, H, W) . down -> (T, H, W)."""
    return (a * down.view(1, 3, 1, 1)).sum(dim=1)


def acceleration_change(kin: Kinematics) -> tuple[torch.Tensor, torch.Tensor]:
    """a_t - a_{t-1} along each track (T, 3, H, W) and where it is defined (T, H, W)."""
    change, ok = time_derivative(kin["acceleration"], kin["acceleration_valid"], kin["flow"], kin["link_valid"],
                                 torch.ones_like(kin["dt"]))
    return change[0], ok[0]


def densest_value(values: torch.Tensor, width: float = GRAVITY_BIN) -> float:
    """Median of the values in the most populated window of ``width``: free flight makes one tight
    cluster, bodies pushed by contacts (toppling, rolling over an edge) spread over many values."""
    ordered = values.sort().values
    upper = torch.searchsorted(ordered, ordered + width, right=True)
    start = int(torch.argmax(upper - torch.arange(len(ordered))))
    return float(ordered[start:int(upper[start])].median())


def gravity_term(kin: Kinematics, change: tuple[torch.Tensor, torch.Tensor], down: torch.Tensor,
                 moving: torch.Tensor, g: float) -> tuple[float, float, int]:
    """(term, fitted g, free-flight pixels): the densest vertical acceleration of free flight, i.e.
    of pixels whose acceleration is vertical (either sign), not small, and steady along the track."""
    a, ok = kin["acceleration"][0], kin["acceleration_valid"][0] & moving
    delta, steady_ok = change
    size = a.norm(dim=1)
    vertical = _vertical(a, down)
    steady = steady_ok & (delta.norm(dim=1) < STEADY_SHARE * size)
    free = ok & steady & (size > FREE_MIN_ACCEL) & (vertical.abs() > VERTICAL_SHARE * size)
    values = _masked(vertical, free)
    if values.numel() < MIN_FREE_PIXELS:
        return 0.0, math.nan, int(values.numel())
    fitted = densest_value(values)
    return abs(fitted - g) / g, fitted, int(values.numel())


def impulse_term(change: tuple[torch.Tensor, torch.Tensor], moving: torch.Tensor, g: float) -> float:
    """Mean over frames of the 90th percentile |a_t - a_{t-1}| / g along tracks of moving pixels.

    Bounces and pushes count too, in a plausible clip as in its violated twin, so the term ranks
    clips of one scene; its level across scenes depends on how much they collide."""
    delta, ok = change
    ok = ok & moving
    per_frame = [torch.quantile(delta[t].norm(dim=0)[ok[t]], 0.9) / g
                 for t in range(ok.shape[0]) if ok[t].sum() >= MIN_FREE_PIXELS]
    return float(torch.stack(per_frame).mean()) if per_frame else 0.0


def reached(flow: torch.Tensor, link: torch.Tensor) -> torch.Tensor:
    """(T, H, W) bool: pixels of frame t-1 that some valid track of frame t starts from (nearest
    pixel of p + f_t(p)); frame T-1 is reached by nothing (it has no next frame)."""
    t, _, h, w = flow.shape
    out = torch.zeros(t, h, w, dtype=torch.bool, device=flow.device)
    ys, xs = torch.meshgrid(torch.arange(h, device=flow.device), torch.arange(w, device=flow.device), indexing="ij")
    for k in range(1, t):
        qx = (xs + flow[k, 0]).round().long().clamp(0, w - 1)
        qy = (ys + flow[k, 1]).round().long().clamp(0, h - 1)
        m = link[k]
        out[k - 1].view(-1)[(qy * w + qx)[m]] = True
    return out


def vanish_term(kin: Kinematics, moving: torch.Tensor) -> float:
    """Share of moving pixels of frames 0..T-2 that no valid track of the next frame continues,
    beyond what the clip's own occlusions explain (both twins of a pair share those)."""
    seen = reached(kin["flow"][0], kin["link_valid"][0])
    lost = moving[:-1] & ~seen[:-1]
    return float(lost.sum()) / max(int(moving[:-1].sum()), 1)


def friction_term(kin: Kinematics, down: torch.Tensor, moving: torch.Tensor, g: float) -> float:
    """Mean of max(0, a_h . v_h / |v_h|) / g over moving pixels (horizontal speed-up)."""
    a, v = kin["acceleration"][0], kin["velocity"][0]
    d = down.view(1, 3, 1, 1)
    a_h, v_h = a - (a * d).sum(1, keepdim=True) * d, v - (v * d).sum(1, keepdim=True) * d
    along = (a_h * v_h).sum(dim=1) / v_h.norm(dim=1).clamp_min(1e-6)
    ok = kin["acceleration_valid"][0] & moving
    values = _masked(along.clamp_min(0.0), ok)
    return float(values.mean()) / g if values.numel() else 0.0


@torch.no_grad()
def plausibility(distance: torch.Tensor, distance_valid: torch.Tensor | None, flow: torch.Tensor,
                 flow_valid: torch.Tensor | None, intrinsics: torch.Tensor, dt: float,
                 g: float = STANDARD_GRAVITY) -> dict:
    """One clip: distance (T, H, W) m, flow (T, 2, H, W) backward px (frame 0 unused), intrinsics
    (4,), dt seconds between frames -> {"score", terms, "g_fit", "free_pixels", "down"}."""
    kin = kinematics(distance[None].double(), None if distance_valid is None else distance_valid[None],
                     flow[None].double(), None if flow_valid is None else flow_valid[None],
                     intrinsics[None].double(), dt)
    moving = moving_pixels(kin, MIN_SPEED)[0]
    static = kin["velocity_valid"][0] & ~moving
    down = floor_down(kin["points"][0], kin["points_valid"][0], static)
    change = acceleration_change(kin)
    grav, fitted, free = gravity_term(kin, change, down, moving, g)
    terms = {"gravity": grav, "impulse": impulse_term(change, moving, g), "vanish": vanish_term(kin, moving),
             "friction": friction_term(kin, down, moving, g)}
    return {"score": -sum(terms.values()), **terms, "g_fit": fitted, "free_pixels": free,
            "down": [round(float(x), 4) for x in down]}
