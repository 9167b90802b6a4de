"""Physics terms on lifted 3D tracks: stage-2 losses and evaluation residuals.

Every term is ~0 on an exact simulated trajectory and grows when gravity, the direction of
motion or the smoothness of the trajectory is wrong (see tests/test_physics.py, which renders a
ball in projectile motion analytically). Kinematics come from `heads.physics_kinematics`:
per-pixel camera-frame points, velocities and accelerations along flow-linked tracks (m, m/s,
m/s^2). Losses return `(loss, metrics)` with detached 0-dim metrics; evaluation functions return
per-clip (B,) tensors, NaN where a clip has no usable pixel (an honest "no data", not a 0).

Assumptions shared by the terms:
- Gravity is the only force on a body that is neither in contact nor at rest: such pixels are
  ballistic, a = g * down_cam. Air drag and rotation-induced surface accelerations are ignored
  (surface points of a spinning body have centripetal acceleration; rolling is a contact).
- "At rest" pixels are removed by a speed threshold (`moving_pixels`); contacts (collisions,
  rolling, sliding, resting on something) are removed by a contact mask: from the simulator if it
  records contacts, else `contact_pixels` on the *ground-truth* kinematics (deviation from g).
- A finite difference at frame t uses positions t-2..t (acceleration) or t-3..t (jerk), so a
  bounce anywhere in that window shows up as "contact" in GT acceleration; a simulator contact
  mask must cover the whole window (dilate it in time).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from heads.losses import depth_valid_mask, safe_log_depth, temporal_gradient_matching
from heads.physics_kinematics import (
    Kinematics,
    follow,
    follow_points,
    inside_frame,
    kinematics,
    per_clip,
    project,
    ray_directions,
    sanitise_flow,
    time_derivative,
    track_points,
    unproject,
)

logger = logging.getLogger(__name__)
Metrics = dict[str, torch.Tensor]
STANDARD_GRAVITY = 9.81


def _norm(v: torch.Tensor, dim: int, eps: float = 0.0) -> torch.Tensor:
    """|v| along `dim`; Charbonnier sqrt(|v|^2 + eps^2) - eps if eps > 0 (smooth at 0).

    With eps = 0 the gradient at exactly 0 is 0, not NaN (sqrt is guarded by torch.where)."""
    sq = (v * v).sum(dim=dim)
    if eps > 0:
        return torch.sqrt(sq + eps * eps) - eps
    pos = sq > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, sq, torch.ones_like(sq))), torch.zeros_like(sq))


def _masked_mean(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Mean of finite x over bool m; 0 (still attached to the graph) when m is empty."""
    return torch.where(m, x, torch.zeros_like(x)).sum() / m.sum().clamp_min(1)


def _down(down_cam: torch.Tensor | None, batch: int, like: torch.Tensor) -> torch.Tensor:
    """(B, 3) or (3,) or None (= image-down (0, 1, 0) of a level camera) -> (B, 3) unit vectors."""
    if down_cam is None:
        down_cam = torch.tensor([0.0, 1.0, 0.0])
    d = down_cam.to(dtype=like.dtype, device=like.device).expand(batch, 3)
    return d / d.norm(dim=1, keepdim=True)


def speed(kin: Kinematics) -> torch.Tensor:
    """(B, T, H, W) speed in m/s, 0 where the velocity is invalid."""
    return _norm(kin["velocity"], dim=2)


def moving_pixels(kin: Kinematics, min_speed: float = 0.1) -> torch.Tensor:
    """(B, T, H, W) bool: valid velocity faster than `min_speed` m/s (removes pixels at rest).

    Noise floor: with distance noise sigma (m), static pixels show ~sigma * sqrt(2) / dt m/s, so
    0.1 m/s at 30 fps tolerates ~2 mm of depth noise."""
    return kin["velocity_valid"] & (speed(kin) > min_speed)


def gravity_residual(kin: Kinematics, down_cam: torch.Tensor | None = None, g: float = STANDARD_GRAVITY) -> torch.Tensor:
    """(B, T, 3, H, W) a - g * down_cam (0 where the acceleration is invalid)."""
    a = kin["acceleration"]
    gd = g * _down(down_cam, a.shape[0], a)[:, None, :, None, None]
    return torch.where(kin["acceleration_valid"][:, :, None], a - gd, torch.zeros_like(a))


def contact_pixels(
    kin: Kinematics, down_cam: torch.Tensor | None = None, g: float = STANDARD_GRAVITY, tolerance: float = 2.5
) -> torch.Tensor:
    """(B, T, H, W) bool heuristic contact mask: |a - g * down_cam| > `tolerance` m/s^2.

    Apply it to **ground-truth** kinematics only: anything not ballistic in the simulator was
    pushed by a contact (impact, rolling, sliding, support). On the prediction itself it would
    be circular (it would exclude exactly the pixels the free-fall prior should correct). The
    default (~g/4) sits above the finite-difference noise of GT tracks and below any real contact
    force worth modelling. Invalid accelerations count as contact (= excluded)."""
    r = _norm(gravity_residual(kin, down_cam, g), dim=2)
    return ~kin["acceleration_valid"] | (r > tolerance)


def acceleration_consistency(
    pred_kin: Kinematics, gt_kin: Kinematics, moving_mask: torch.Tensor | None = None, charbonnier_eps: float = 0.0
) -> tuple[torch.Tensor, Metrics]:
    """Mean |a_pred - a_gt| (m/s^2) over pixels with valid acceleration in both and moving.

    moving_mask: (B, T, H, W) bool, None = `moving_pixels(gt_kin)`. Accelerations are compared
    per pixel of frame t (both tracks end at the same pixel)."""
    moving = moving_pixels(gt_kin) if moving_mask is None else moving_mask.bool()
    m = pred_kin["acceleration_valid"] & gt_kin["acceleration_valid"] & moving
    r = _norm(pred_kin["acceleration"] - gt_kin["acceleration"].detach(), dim=2, eps=charbonnier_eps)
    loss = _masked_mean(r, m)
    return loss, {"phys_accel": loss.detach(), "phys_accel_px": m.sum().detach()}


def _free_mask(
    kin: Kinematics, contact_mask: torch.Tensor | None, moving_mask: torch.Tensor | None
) -> torch.Tensor:
    """Moving pixels (given or by speed) that are not in contact."""
    m = moving_pixels(kin) if moving_mask is None else moving_mask.bool()
    return m if contact_mask is None else m & ~contact_mask.bool()


def free_fall_prior(
    kin: Kinematics,
    down_cam: torch.Tensor | None = None,
    g: float = STANDARD_GRAVITY,
    contact_mask: torch.Tensor | None = None,
    moving_mask: torch.Tensor | None = None,
    charbonnier_eps: float = 0.0,
) -> tuple[torch.Tensor, Metrics]:
    """Mean |a - g * down_cam| (m/s^2) on moving pixels that are not in contact.

    Assumes those pixels are ballistic (module docstring). contact_mask: (B, T, H, W) bool, True =
    in contact (excluded); moving_mask: (B, T, H, W) bool, None = `moving_pixels(kin)`;
    down_cam: (B, 3) gravity direction in the camera frame, None = (0, 1, 0)."""
    m = kin["acceleration_valid"] & _free_mask(kin, contact_mask, moving_mask)
    loss = _masked_mean(_norm(gravity_residual(kin, down_cam, g), dim=2, eps=charbonnier_eps), m)
    return loss, {"phys_free_fall": loss.detach(), "phys_free_fall_px": m.sum().detach()}


def jerk(kin: Kinematics, contact_mask: torch.Tensor | None = None,
         support: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """da/dt along tracks (B, T, 3, H, W) in m/s^3 and its validity (B, T, H, W), frames >= 3.

    Pixels in contact at t, or whose track was in contact at t-1, are invalid: a contact force
    switching on or off is a legitimate jump of acceleration.  ``support`` (B, T, H, W): where the
    jerk is valid instead (the ground truth's, for a prediction)."""
    free = kin["acceleration_valid"] if contact_mask is None else kin["acceleration_valid"] & ~contact_mask.bool()
    return time_derivative(kin["acceleration"], free, kin["flow"], kin["link_valid"], kin["dt"], valid=support)


def jerk_penalty(
    kin: Kinematics,
    contact_mask: torch.Tensor | None = None,
    moving_mask: torch.Tensor | None = None,
    charbonnier_eps: float = 0.0,
    support: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Metrics]:
    """Mean |jerk| (m/s^3) on moving pixels outside contacts: momentum smoothness.

    Constant acceleration (ballistic motion, or any constant force) has zero jerk; jittered
    positions of amplitude sigma give ~sigma * sqrt(20) / dt^3, hence very large values: weight
    this term low (e.g. 1e-3) next to m/s^2 terms."""
    j, ok = jerk(kin, contact_mask, support)
    m = ok & _free_mask(kin, None, moving_mask)
    loss = _masked_mean(_norm(j, dim=2, eps=charbonnier_eps), m)
    return loss, {"phys_jerk": loss.detach(), "phys_jerk_px": m.sum().detach()}


def fitted_gravity(
    kin: Kinematics, down_cam: torch.Tensor | None = None, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares g (m/s^2) of the vertical acceleration a . down_cam, per clip.

    mask: (B, T, H, W) bool of free-falling pixels (moving, no contact); None = moving pixels.
    The least-squares fit of a constant is the mean over the pixels; report it beside 9.81.
    Returns (g_est (B,), NaN where a clip has no pixel; n (B,) number of pixels used)."""
    a = kin["acceleration"]
    m = kin["acceleration_valid"] & (moving_pixels(kin) if mask is None else mask.bool())
    vertical = (a * _down(down_cam, a.shape[0], a)[:, None, :, None, None]).sum(dim=2)
    n = m.flatten(1).sum(1)
    total = torch.where(m, vertical, torch.zeros_like(vertical)).flatten(1).sum(1)
    g_est = torch.where(n > 0, total / n.clamp_min(1), torch.full_like(total, math.nan))
    return g_est, n


def rest_drift(kin: Kinematics, static_mask: torch.Tensor) -> torch.Tensor:
    """Mean speed (m/s) per clip of pixels that should be static; (B,), NaN where none is valid.

    static_mask: (B, T, H, W) bool (e.g. GT speed below a threshold, or the scene's background)."""
    m = kin["velocity_valid"] & static_mask.bool()
    n = m.flatten(1).sum(1)
    total = torch.where(m, speed(kin), torch.zeros_like(m, dtype=kin["velocity"].dtype)).flatten(1).sum(1)
    return torch.where(n > 0, total / n.clamp_min(1), torch.full_like(total, math.nan))


def flow_warp_consistency(
    frames: torch.Tensor, flow: torch.Tensor, valid: torch.Tensor | None = None, support: torch.Tensor | None = None
) -> tuple[torch.Tensor, Metrics]:
    """Photometric L1 between frame t and frame t-1 warped to t by the backward flow.

    frames: (B, T, 3, H, W) in [0, 1]; flow: (B, T, 2, H, W) backward flow (the verified sign:
    I_t(p) ~ I_{t-1}(p + f_t(p))); valid: (B, T, H, W) bool or None. Pixels whose sample point
    leaves the frame and frame 0 are excluded; occlusions must be excluded through `valid`.
    support: (B, T, H, W) bool, the pixels judged whatever this flow does (the ground truth's:
    a predicted flow that leaves the frame reads the border there, and is penalised)."""
    flow, ok = sanitise_flow(flow, valid)
    ok = ok & inside_frame(flow) if support is None else support.bool()
    warped = follow(frames, flow)
    err = (frames - warped).abs().mean(dim=2)
    loss = _masked_mean(err, ok)
    return loss, {"phys_warp": loss.detach(), "phys_warp_px": ok.sum().detach()}


def temporal_depth_consistency(
    pred_log: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, max_change: float | None = None
) -> tuple[torch.Tensor, Metrics]:
    """Temporal gradient matching (Video Depth Anything) of log distance, as a standalone measure.

    Training counts TGM once, in the head depth loss (`heads.losses.depth_loss`, weight
    `LossConfig.depth_tgm_weight`); `PhysicsLoss` does not add it again.
    pred_log: (B, T, H, W) predicted log distance; target: (B, T, H, W) GT distance (raw);
    mask: (B, T, H, W) bool or None; max_change: skip pixels whose GT log depth jumps more."""
    valid = depth_valid_mask(target, mask)
    tgt = safe_log_depth(target, valid)
    residual = torch.where(valid, pred_log - tgt, torch.zeros_like(pred_log))
    loss = temporal_gradient_matching(residual, valid, max_change, tgt)
    return loss, {"phys_tgm": loss.detach()}


def log_scale_to_truth(pred_log: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, 1, 1, 1) shift that gives the predicted log distance (B, T, H, W) the ground truth's mean
    over a clip's valid pixels.  It keeps its gradient, so ``pred_log + shift`` does not change when
    the prediction is scaled as a whole: what the physics terms then see is the shape of the depth
    over space and time, never its overall size."""
    tgt = safe_log_depth(target, valid)
    gap = torch.where(valid, tgt - pred_log, torch.zeros_like(pred_log)).flatten(1).sum(1)
    return (gap / valid.flatten(1).sum(1).clamp_min(1)).view(-1, 1, 1, 1)


@dataclass
class PhysicsLossConfig:
    """Weights and thresholds of the stage-2 physics loss. Terms with weight 0 are not computed.

    Depth TGM is not here: it belongs to the head depth loss (`LossConfig.depth_tgm_weight`),
    which stage 2 adds beside this one, so it is counted once."""

    acceleration_weight: float = 0.1
    """Weight of |a_pred - a_gt| (m/s^2; ~g-sized when wrong, hence below 1)."""
    free_fall_weight: float = 0.1
    """Weight of the free-fall prior |a_pred - g down| on moving, contact-free GT pixels (m/s^2)."""
    jerk_weight: float = 1e-3
    """Weight of the jerk penalty (m/s^3: one frame of dt = 1/30 s turns 1 m/s^2 into 30 m/s^3)."""
    warp_weight: float = 1.0
    """Weight of the photometric flow-warp L1 (needs `frames`; skipped when they are not given)."""
    g: float = STANDARD_GRAVITY
    """Gravitational acceleration in m/s^2."""
    min_speed: float = 0.1
    """GT speed (m/s) above which a pixel counts as moving; slower pixels are at rest (excluded)."""
    contact_tolerance: float = 2.5
    """|a_gt - g down| (m/s^2) above which a GT pixel counts as in contact (when no mask is given)."""
    charbonnier_eps: float = 0.1
    """Charbonnier epsilon (in the term's unit) for the 3D residual norms; 0 = plain Euclidean norm."""
    edge_tolerance: float = 0.05
    """Relative distance spread inside a sampled 2x2 cell above which a GT link is untrusted."""
    occlusion_tolerance: float = 0.1
    """Relative distance jump along one GT link above which it is treated as an occlusion."""
    max_log_distance: float = 10.0
    """Predicted log distance is clamped to +-this before exp (keeps points finite early on)."""
    scale_invariant: bool = False
    """Judge the prediction's distance after matching its per-clip mean log distance to the ground
    truth's (the shift keeps its gradient): accelerations scale with distance, so without this a
    model can lower the metric terms by rescaling its depth as a whole (which the depth loss and
    held-out perception pay for) instead of by moving its bodies right."""
    flow_only: bool = False
    """Judge the predicted flow on the ground truth's distance: the terms then give depth no
    gradient at all (it learns from the supervised head loss alone), so they can be lowered only by
    moving the bodies right, never by reshaping the depth they are read through.  It makes
    `scale_invariant` moot: the distance judged is the truth's."""

    def __post_init__(self) -> None:
        weights = (self.acceleration_weight, self.free_fall_weight, self.jerk_weight, self.warp_weight)
        if min(weights) < 0:
            raise ValueError(f"physics loss weights must be >= 0, got {weights}")
        if self.g <= 0 or self.min_speed < 0 or self.contact_tolerance <= 0 or self.charbonnier_eps < 0:
            raise ValueError("g and contact_tolerance must be > 0; min_speed and charbonnier_eps >= 0")


class PhysicsLoss:
    """Weighted sum of the physics terms for a predicted (log distance, flow) against GT.

    The GT kinematics decide *where* each term applies: GT links (no edges, no occlusions),
    GT velocity / acceleration / jerk validity, GT moving pixels, and GT contacts (given, or by
    `contact_pixels` on GT). The prediction's own points and flow decide only the values, so
    gradients reach both heads and no prediction can shrink the set it is judged on (zero flow,
    flow leaving the frame, or far depth are judged on the same pixels and score worse)."""

    def __init__(self, cfg: PhysicsLossConfig | None = None) -> None:
        self.cfg = cfg or PhysicsLossConfig()
        logger.info("physics loss: %s", self.cfg)

    def _distance(self, pred_log: torch.Tensor, gt_distance: torch.Tensor, gt_valid: torch.Tensor | None) -> torch.Tensor:
        """The predicted log distance as the terms read it: clamped, matched in scale if asked, exp."""
        pred_log = pred_log.clamp(-self.cfg.max_log_distance, self.cfg.max_log_distance)
        if self.cfg.scale_invariant:
            pred_log = pred_log + log_scale_to_truth(pred_log, gt_distance, depth_valid_mask(gt_distance, gt_valid))
        return pred_log.exp()

    def __call__(
        self,
        pred_log_distance: torch.Tensor,
        pred_flow: torch.Tensor,
        gt_distance: torch.Tensor,
        gt_valid: torch.Tensor | None,
        gt_flow: torch.Tensor,
        gt_flow_valid: torch.Tensor | None,
        intrinsics: torch.Tensor,
        dt: float | torch.Tensor,
        frames: torch.Tensor | None = None,
        down_cam: torch.Tensor | None = None,
        contact_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Metrics]:
        """pred_log_distance, gt_distance, gt_valid, gt_flow_valid, contact_mask: (B, T, H, W);
        pred_flow, gt_flow: (B, T, 2, H, W); intrinsics (B, 4); dt seconds between sampled frames
        (scalar or (B,)); frames (B, T, 3, H, W) in [0, 1]; down_cam (B, 3).
        Returns (total, metrics with every term and its pixel count)."""
        c = self.cfg
        with torch.no_grad():
            gt = kinematics(gt_distance, gt_valid, gt_flow, gt_flow_valid, intrinsics, dt,
                            edge_tol=c.edge_tolerance, occlusion_tol=c.occlusion_tolerance)  # fmt: skip
            moving = moving_pixels(gt, c.min_speed)
            contact = contact_pixels(gt, down_cam, c.g, c.contact_tolerance) if contact_mask is None else contact_mask.bool()
            jerk_support = jerk(gt, contact)[1]
            gt_flow_clean, warp_support = sanitise_flow(gt_flow, gt_flow_valid)
            warp_support = warp_support & inside_frame(gt_flow_clean)
        pred_distance = gt_distance if c.flow_only else self._distance(pred_log_distance, gt_distance, gt_valid)
        pred = kinematics(pred_distance, gt["points_valid"], pred_flow, gt_flow_valid, intrinsics, dt, support=gt)
        terms: list[torch.Tensor] = []
        metrics: Metrics = {}

        def add(weight: float, result: tuple[torch.Tensor, Metrics]) -> None:
            terms.append(weight * result[0])
            metrics.update(result[1])

        if c.acceleration_weight > 0:
            add(c.acceleration_weight, acceleration_consistency(pred, gt, moving, c.charbonnier_eps))
        if c.free_fall_weight > 0:
            add(c.free_fall_weight, free_fall_prior(pred, down_cam, c.g, contact, moving, c.charbonnier_eps))
        if c.jerk_weight > 0:
            add(c.jerk_weight, jerk_penalty(pred, contact, moving, c.charbonnier_eps, jerk_support))
        if c.warp_weight > 0 and frames is not None:
            add(c.warp_weight, flow_warp_consistency(frames, pred_flow, gt_flow_valid, warp_support))
        total = torch.stack(terms).sum() if terms else pred_log_distance.sum() * 0.0
        with torch.no_grad():
            free = moving & ~contact
            metrics["phys_fitted_g_gt"] = fitted_gravity(gt, down_cam, free)[0].nanmean()
            metrics["phys_fitted_g_pred"] = fitted_gravity(pred, down_cam, free)[0].nanmean()
            metrics["phys_loss"] = total.detach()
        return total, metrics


__all__ = [
    "STANDARD_GRAVITY",
    "Kinematics",
    "PhysicsLoss",
    "PhysicsLossConfig",
    "acceleration_consistency",
    "contact_pixels",
    "fitted_gravity",
    "flow_warp_consistency",
    "follow",
    "follow_points",
    "free_fall_prior",
    "gravity_residual",
    "jerk",
    "jerk_penalty",
    "kinematics",
    "log_scale_to_truth",
    "moving_pixels",
    "per_clip",
    "project",
    "ray_directions",
    "rest_drift",
    "sanitise_flow",
    "speed",
    "temporal_depth_consistency",
    "time_derivative",
    "track_points",
    "unproject",
]
