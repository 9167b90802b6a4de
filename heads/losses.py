"""Losses for the flow and depth heads, shared by both training stages.

Form: `(pred, target, mask, ...) -> (loss, metrics)`; `loss` is a 0-dim tensor with grad, `metrics`
a dict of detached 0-dim tensors. Invalid targets (inf, 0, NaN in the distance files) never enter the
arithmetic: they are replaced by `torch.where` *before* any subtraction, because a NaN that is only
multiplied by a zero mask still produces NaN gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from heads.blocks import backward_warp
from heads.physics_kinematics import inside_frame

Metrics = dict[str, torch.Tensor]


def _safe_norm(v: torch.Tensor, dim: int) -> torch.Tensor:
    """Euclidean norm with a zero (not NaN) gradient at exactly zero, so loss(GT) is exactly 0."""
    sq = (v * v).sum(dim=dim)
    pos = sq > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, sq, torch.ones_like(sq))), torch.zeros_like(sq))


def _zero_loss(pred: torch.Tensor) -> torch.Tensor:
    """0 that stays connected to the graph (keeps DDP happy when a batch has no valid pixel)."""
    return pred.sum() * 0.0


def flow_valid_mask(target: torch.Tensor, mask: torch.Tensor | None, skip_first_frame: bool = True,
                    frame_index: torch.Tensor | None = None) -> torch.Tensor:
    """Valid pixels of a flow target. target: (B, T, 2, H, W); mask: (B, T, H, W) bool or None.

    ``frame_index`` (B, T): the window frame each target frame is, when only some are given
    (None: all frames in order). The skipped frame is window frame 0, which has no previous
    frame, wherever it sits (or nowhere).
    """
    valid = torch.isfinite(target).all(dim=2)
    if mask is not None:
        valid = valid & mask.bool()
    if skip_first_frame:
        if frame_index is None:
            frame_index = torch.arange(target.shape[1], device=valid.device)[None]
        valid = valid & (frame_index != 0).to(valid.device)[:, :, None, None]
    return valid


def moving_mask(target: torch.Tensor, valid: torch.Tensor, threshold: float) -> torch.Tensor:
    """(B, T, H, W) bool: valid pixels whose target flow (B, T, 2, H, W) is longer than ``threshold``
    px -- the pixels the flow loss weighs up (and ``LossConfig.depth_moving_weight`` in depth)."""
    return valid & (_safe_norm(torch.where(valid[:, :, None], target, torch.zeros_like(target)), dim=2) > threshold)


def flow_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None,
    moving_weight: float = 5.0,
    moving_threshold: float = 0.5,
    skip_first_frame: bool = True,
    frame_index: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Metrics]:
    """Weighted mean endpoint error over valid pixels (``frame_index``: see `flow_valid_mask`).

    pred, target: (B, T, 2, H, W) backward flow in px; mask: (B, T, H, W) bool (None = all valid).
    Pixels whose target moves more than `moving_threshold` px get weight `moving_weight`, others 1:
    most pixels are static in these scenes, so an unweighted loss rewards predicting zero.
    """
    valid = flow_valid_mask(target, mask, skip_first_frame, frame_index)
    tgt = torch.where(valid[:, :, None], target, torch.zeros_like(target))
    epe = _safe_norm(torch.where(valid[:, :, None], pred - tgt, torch.zeros_like(pred)), dim=2)
    moving = moving_mask(tgt, valid, moving_threshold)
    weight = valid.to(pred.dtype) * torch.where(moving, moving_weight, 1.0).to(pred.dtype)
    # Each valid pixel weighs >= 1, so clamping at 1 only matters (and gives 0) when none is valid;
    # no data-dependent Python branch, hence no GPU sync.
    loss = (weight * epe).sum() / weight.sum().clamp_min(1.0)
    n_valid, n_moving = valid.sum(), moving.sum()
    with torch.no_grad():
        metrics = {
            "flow_epe": (epe * valid).sum() / n_valid.clamp_min(1),
            "flow_epe_moving": (epe * moving).sum() / n_moving.clamp_min(1),
            "flow_frac_moving": n_moving / n_valid.clamp_min(1),
        }
    return loss, metrics


def depth_valid_mask(target: torch.Tensor, mask: torch.Tensor | None, far: float = float("inf")) -> torch.Tensor:
    """Valid depth pixels: finite, > 0, < far, and inside `mask`. target, mask: (B, T, H, W)."""
    valid = torch.isfinite(target) & (target > 0) & (target < far)
    return valid & mask.bool() if mask is not None else valid


def safe_log_depth(target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """log(target) on valid pixels, 0 elsewhere (never log of inf/0/NaN)."""
    return torch.log(torch.where(valid, target, torch.ones_like(target)))


def _masked_mean(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Mean of x over m (x must already be finite everywhere); 0 if m is empty."""
    return (x * m).sum() / m.sum().clamp_min(1)


def align_scale_shift(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-clip least-squares s, b minimising |s*pred + b - target|^2 on valid pixels; returns s*pred+b.

    pred, target, valid: (B, T, H, W). One (s, b) per clip (not per frame) keeps the alignment
    temporally consistent. Degenerate clips (constant pred / no pixel) fall back to s=1, b=mean diff.
    """
    m = valid.to(pred.dtype).flatten(1)
    p, t = pred.flatten(1), target.flatten(1)
    n = m.sum(1).clamp_min(1)
    pm, tm = (m * p).sum(1) / n, (m * t).sum(1) / n
    pc, tc = (p - pm[:, None]) * m, (t - tm[:, None]) * m
    var = (pc * pc).sum(1)
    s = torch.where(var > 1e-12, (pc * tc).sum(1) / var.clamp_min(1e-12), torch.ones_like(var))
    b = tm - s * pm
    return s[:, None, None, None] * pred + b[:, None, None, None]


def gradient_matching(residual: torch.Tensor, valid: torch.Tensor, scales: int = 4) -> torch.Tensor:
    """Multi-scale spatial gradient matching (MiDaS/VDA) of residual = pred - target (log depth).

    residual, valid: (B, T, H, W); residual must already be 0 where invalid. At scale k the maps are
    subsampled with step 2**k; a gradient counts only where both pixels are valid.
    """
    total, used = _zero_loss(residual), 0
    for k in range(scales):
        step = 2**k
        r, v = residual[..., ::step, ::step], valid[..., ::step, ::step]
        if r.shape[-1] < 2 or r.shape[-2] < 2:
            break
        vx, vy = v[..., :, 1:] & v[..., :, :-1], v[..., 1:, :] & v[..., :-1, :]
        gx, gy = (r[..., :, 1:] - r[..., :, :-1]).abs(), (r[..., 1:, :] - r[..., :-1, :]).abs()
        n = (vx.sum() + vy.sum()).clamp_min(1)
        total, used = total + ((gx * vx).sum() + (gy * vy).sum()) / n, used + 1
    return total / max(used, 1)


def temporal_gradient_matching(
    residual: torch.Tensor,
    valid: torch.Tensor,
    max_change: float | None = None,
    target: torch.Tensor | None = None,
    frame_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """TGM (Video Depth Anything): |(p_t - p_{t-1}) - (g_t - g_{t-1})| where both frames are valid.

    residual = pred - target in log space, (B, T, H, W), 0 where invalid. If `max_change` is given
    (with the log `target`), pixels whose GT log depth changes more than that are ignored, as VDA
    does to skip occlusion boundaries. ``frame_index`` (B, T): the window frame each given frame
    is, when only some are supervised; only pairs one window frame apart count, since a change
    over a longer gap is not the per-frame change this term matches (None: consecutive frames).
    """
    if residual.shape[1] < 2:
        return _zero_loss(residual)
    v = valid[:, 1:] & valid[:, :-1]
    if frame_index is not None:
        adjacent = (frame_index[:, 1:] - frame_index[:, :-1]) == 1
        v = v & adjacent.to(v.device)[:, :, None, None]
    if max_change is not None and target is not None:
        v = v & ((target[:, 1:] - target[:, :-1]).abs() <= max_change)
    return _masked_mean((residual[:, 1:] - residual[:, :-1]).abs(), v)


def track_gradient_matching(
    residual: torch.Tensor,
    valid: torch.Tensor,
    flow: torch.Tensor,
    moving: torch.Tensor,
    frame_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """TGM along the ground-truth tracks of moving pixels: |r_t(p) - r_{t-1}(p + f_t(p))| with
    r = log(pred / gt), so a body may be off by a steady factor but not by one that changes from
    frame to frame.  Per-pixel TGM compares a moving pixel with whatever lay there a frame earlier.

    residual, valid, moving: (B, T, H, W) (moving: frame t's target moves); flow: (B, T, 2, H, W)
    the backward flow target (finite where moving); ``frame_index`` as in
    `temporal_gradient_matching` (only pairs one window frame apart count).
    """
    if residual.shape[1] < 2:
        return _zero_loss(residual)
    b, t, h, w = residual.shape
    flow_t = torch.where(moving[:, 1:, None], flow[:, 1:], torch.zeros_like(flow[:, 1:])).reshape(-1, 2, h, w)
    earlier = torch.stack([residual[:, :-1], valid[:, :-1].to(residual.dtype)], dim=2).reshape(-1, 2, h, w)
    warped = backward_warp(earlier, flow_t.to(residual.dtype)).reshape(b, t - 1, 2, h, w)
    # Every bilinear corner read must be valid and inside the frame (the warp pads with the border).
    inside = inside_frame(flow_t.reshape(b, t - 1, 2, h, w))
    v = moving[:, 1:] & valid[:, 1:] & inside & (warped[:, :, 1] > 0.999)
    if frame_index is not None:
        v = v & ((frame_index[:, 1:] - frame_index[:, :-1]) == 1).to(v.device)[:, :, None, None]
    return _masked_mean((residual[:, 1:] - warped[:, :, 0]).abs(), v)


def depth_loss(
    pred_log: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None,
    l1_weight: float = 1.0,
    ssi_weight: float = 0.0,
    grad_weight: float = 0.5,
    grad_scales: int = 4,
    tgm_weight: float = 1.0,
    tgm_max_change: float | None = None,
    far: float = float("inf"),
    frame_index: torch.Tensor | None = None,
    pixel_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Metrics]:
    """Log-depth L1 (+ optional scale-shift-invariant L1) + gradient matching + TGM, on valid pixels.

    pred_log: (B, T, H, W) predicted log distance; target: (B, T, H, W) GT distance in metres (raw:
    inf/0/NaN allowed, they are masked); mask: (B, T, H, W) bool or None; `far` is the far clip;
    ``frame_index`` (B, T) when only some window frames are given (see `temporal_gradient_matching`);
    ``pixel_weight`` (B, T, H, W) >= 1 weighs the log-depth L1 per pixel (None = all 1).
    """
    valid = depth_valid_mask(target, mask, far)
    tgt = safe_log_depth(target, valid)
    residual = torch.where(valid, pred_log - tgt, torch.zeros_like(pred_log))
    l1 = _masked_mean(residual.abs(), valid)
    metrics: Metrics = {"depth_l1_log": l1.detach()}
    if pixel_weight is not None:
        w = valid.to(pred_log.dtype) * pixel_weight.to(pred_log.dtype)
        l1 = (w * residual.abs()).sum() / w.sum().clamp_min(1.0)
    loss = l1_weight * l1
    if ssi_weight > 0:
        aligned = align_scale_shift(torch.where(valid, pred_log, torch.zeros_like(pred_log)), tgt, valid)
        ssi = _masked_mean(torch.where(valid, aligned - tgt, torch.zeros_like(aligned)).abs(), valid)
        loss = loss + ssi_weight * ssi
        metrics["depth_ssi_l1"] = ssi.detach()
    if grad_weight > 0:
        grad = gradient_matching(residual, valid, grad_scales)
        loss = loss + grad_weight * grad
        metrics["depth_grad"] = grad.detach()
    if tgm_weight > 0:
        tgm = temporal_gradient_matching(residual, valid, tgm_max_change, tgt, frame_index)
        loss = loss + tgm_weight * tgm
        metrics["depth_tgm"] = tgm.detach()
    return loss, metrics


@dataclass
class LossConfig:
    """Weights and thresholds of the combined head loss."""

    flow_weight: float = 1.0
    """Weight of the flow loss in the total (seed recipe: 1.0)."""
    depth_weight: float = 1.0
    """Weight of the depth loss in the total (seed recipe: 1.0)."""
    moving_weight: float = 5.0
    """Extra weight of moving pixels in the flow EPE (static pixels weigh 1)."""
    moving_threshold: float = 0.5
    """|GT flow| in px above which a pixel counts as moving."""
    skip_first_frame: bool = True
    """Drop flow frame 0 (it has no previous frame)."""
    depth_l1_weight: float = 1.0
    """Weight of L1 in log-depth space."""
    depth_moving_weight: float = 1.0
    """Extra weight of moving pixels (GT flow above `moving_threshold`, when a flow target is
    given) in the log-depth L1 (1 = none): small moving bodies are otherwise blended into the
    background, whose pixels outnumber theirs ~100:1 in the demo scenes."""
    depth_ssi_weight: float = 0.0
    """Weight of the per-clip scale-shift-invariant log-depth L1 (0 = off)."""
    depth_grad_weight: float = 0.5
    """Weight of multi-scale spatial gradient matching."""
    depth_grad_scales: int = 4
    """Number of scales (steps 1, 2, 4, ...) of gradient matching."""
    depth_tgm_weight: float = 1.0
    """Weight of temporal gradient matching."""
    depth_track_weight: float = 0.0
    """Weight of `track_gradient_matching` on moving pixels (0 = off): a body's distance must not
    jump from frame to frame.  The demo heads' does by 2 % (median) to 15 % (p90), which at 1/15 s
    between frames is 11-84 m/s^2 of false acceleration in the physics residuals and the verifier."""
    depth_tgm_max_change: float | None = None
    """Ignore TGM where GT log depth changes more than this between frames (None = keep all)."""
    depth_far: float = float("inf")
    """Far clip in metres: GT depth at or beyond this is invalid."""


class HeadLoss:
    """Weighted sum of `flow_loss` and `depth_loss`; either part may be skipped by passing None."""

    def __init__(self, cfg: LossConfig | None = None) -> None:
        self.cfg = cfg or LossConfig()

    def _track_term(self, pred_log: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None,
                    flow_target: torch.Tensor, moving: torch.Tensor, frame_index: torch.Tensor | None) -> torch.Tensor:
        """`track_gradient_matching` of the log-depth residual on the flow target's moving pixels."""
        valid = depth_valid_mask(target, mask, self.cfg.depth_far)
        residual = torch.where(valid, pred_log - safe_log_depth(target, valid), torch.zeros_like(pred_log))
        return track_gradient_matching(residual, valid, flow_target, moving, frame_index)

    def __call__(
        self,
        flow_pred: torch.Tensor | None = None,
        flow_target: torch.Tensor | None = None,
        flow_mask: torch.Tensor | None = None,
        depth_pred_log: torch.Tensor | None = None,
        depth_target: torch.Tensor | None = None,
        depth_mask: torch.Tensor | None = None,
        frame_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Metrics]:
        """Shapes as in `flow_loss` / `depth_loss`; ``frame_index`` (B, K) when only K window
        frames are supervised. Returns (total, metrics incl. each part)."""
        c = self.cfg
        terms: list[torch.Tensor] = []
        metrics: Metrics = {}
        if flow_pred is not None and flow_target is not None:
            lf, mf = flow_loss(flow_pred, flow_target, flow_mask, c.moving_weight, c.moving_threshold, c.skip_first_frame,
                               frame_index)
            terms.append(c.flow_weight * lf)
            metrics.update(mf, loss_flow=lf.detach())
        if depth_pred_log is not None and depth_target is not None:
            pixel_weight = moving = None
            if (c.depth_moving_weight != 1.0 or c.depth_track_weight > 0) and flow_target is not None:
                valid = flow_valid_mask(flow_target, flow_mask, skip_first_frame=False)
                moving = moving_mask(flow_target, valid, c.moving_threshold)
            if c.depth_moving_weight != 1.0 and moving is not None:
                pixel_weight = torch.where(moving, c.depth_moving_weight, 1.0)
            ld, md = depth_loss(
                depth_pred_log, depth_target, depth_mask, c.depth_l1_weight, c.depth_ssi_weight,
                c.depth_grad_weight, c.depth_grad_scales, c.depth_tgm_weight, c.depth_tgm_max_change, c.depth_far,
                frame_index, pixel_weight,
            )  # fmt: skip
            if c.depth_track_weight > 0 and moving is not None:
                track = self._track_term(depth_pred_log, depth_target, depth_mask, flow_target, moving, frame_index)
                ld = ld + c.depth_track_weight * track
                md["depth_track"] = track.detach()
            terms.append(c.depth_weight * ld)
            metrics.update(md, loss_depth=ld.detach())
        if not terms:
            raise ValueError("HeadLoss needs a flow (pred, target) or a depth (pred, target) pair")
        total = torch.stack(terms).sum()
        metrics["loss"] = total.detach()
        return total, metrics


__all__ = [
    "HeadLoss",
    "LossConfig",
    "align_scale_shift",
    "depth_loss",
    "depth_valid_mask",
    "flow_loss",
    "flow_valid_mask",
    "gradient_matching",
    "temporal_gradient_matching",
    "track_gradient_matching",
]
