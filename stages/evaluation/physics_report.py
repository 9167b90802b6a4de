"""Physics residuals of depth + flow lifted to 3D, temporal coherence, and the pass/fail heuristics.

Three sources are scored per scene (all in SI units), each on the ground-truth window resampled to
the backbone's frame rate (`stages.evaluation.timebase`), so every row covers the same seconds:
- ``gt``: ground-truth distance and flow (checks the data path: dt, gravity direction, intrinsics);
- ``heads``: the heads' predictions on ground-truth frames, linked along the ground truth's
  trustworthy links (as the stage-2 physics loss does), differentiated on the GT frames' times;
- ``generated``: the heads run on a generated rollout, linked along its own flow (there is no GT
  correspondence) and differentiated at the backbone's rate, dt = 1 / fps.

One rule for every row: the pixels judged are chosen from the ground truth alone (a model cannot
lower a residual by moving less), and are the same pixels for gt, heads and generated.

Residuals:
- ``g_fit`` (m/s^2): least-squares g of the vertical acceleration (`heads.physics.fitted_gravity`)
  on free-falling pixels: GT-moving pixels (> MIN_SPEED) outside GT contacts (`contact_pixels`,
  |a - g down| > CONTACT_TOLERANCE). On ``gt`` that mask is partly circular (it keeps pixels near
  g), so the gt number checks the pipeline, not the simulator; on predictions it is a fixed support.
- ``g_rel_error`` = |g_fit - g| / g, with g from the scene's scene.json (else 9.81).
- ``free_fall_residual`` (m/s^2): mean |a - g down| on the same pixels (`free_fall_prior`).
- ``rest_drift`` (m/s): mean speed of pixels that never move in the GT window (`rest_drift`).
- ``coherent_frames``: share of scored frames whose flow explains the frame's motion. Scored are the
  frames t >= 1 with moving pixels (`motion_support`: GT flow above a threshold, else frame
  differences of the reference video); on those pixels, the photometric L1 between frame t and frame
  t-1 backward-warped by the flow (`flow_warp_consistency`, RGB in [0, 1]) must be at most
  WARP_L1_MAX *and* below the L1 of not moving at all (|I_t - I_{t-1}|). A frozen video changes
  nowhere, so no flow can beat "not moving" on it: it fails, as does zero flow on a moving video.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from heads.physics import (
    STANDARD_GRAVITY,
    contact_pixels,
    fitted_gravity,
    flow_warp_consistency,
    free_fall_prior,
    kinematics,
    moving_pixels,
    rest_drift,
)

MIN_SPEED = 0.1
"""m/s: slower GT pixels are at rest (the physics loss's default min_speed)."""
CONTACT_TOLERANCE = 2.5
"""m/s^2: GT pixels deviating more from g * down are in contact (the physics loss's default)."""
WARP_L1_MAX = 0.03
"""Mean |I_t - warp(I_{t-1}, f_t)| (RGB in [0, 1], ~8 of 255 levels) at or below which a frame counts
as temporally coherent. Ground-truth flow on ground-truth frames is reported beside it as the floor."""
COHERENCE_PASS = 0.8
"""Temporal coherence passes when at least this share of frames is coherent."""
FRAME_CHANGE_LEVEL = 10 / 255
"""Mean RGB change above which a reference pixel counts as moving when no GT flow is at hand (the
Physics-IQ motion threshold, 10 gray levels)."""
G_TOLERANCE = 0.25
"""Physics passes when |g_fit - g| / g is below this."""


def scene_gravity(meta: dict | None) -> float:
    """|gravity| from scene.json (m/s^2), else standard gravity."""
    if meta and "gravity" in meta:
        return float(np.linalg.norm(np.asarray(meta["gravity"], dtype=np.float64)))
    return STANDARD_GRAVITY


def _batched(sample: dict) -> dict:
    return {k: v.unsqueeze(0) for k, v in sample.items() if isinstance(v, torch.Tensor)}


def gt_physics(sample: dict, g: float) -> tuple[dict, dict]:
    """GT kinematics and the masks every source is judged on: free (B, T, H, W), static (B, T, H, W)."""
    s = _batched(sample)
    kin = kinematics(s["depth"].double(), s["depth_valid"], s["flow"].double(), s["flow_valid"],
                     s["intrinsics"].double(), s["dt"].double())
    moving = moving_pixels(kin, MIN_SPEED)
    free = moving & ~contact_pixels(kin, s["down_cam"], g, CONTACT_TOLERANCE)
    # Static over the whole window: a pixel any object crosses is not "should be static".
    still = (kin["velocity_valid"] & ~moving).any(dim=1, keepdim=True) & ~moving.any(dim=1, keepdim=True)
    return kin, {"free": free, "static": still.expand_as(moving)}


def residuals(kin: dict, down: torch.Tensor, g: float, free: torch.Tensor, static: torch.Tensor) -> dict[str, float]:
    """g_fit, g_rel_error, free-fall residual, rest drift and pixel counts of one clip's kinematics."""
    g_fit, n = fitted_gravity(kin, down, free)
    ff, _ = free_fall_prior(kin, down, g, moving_mask=free)
    g_fit = float(g_fit[0])
    return {"g_fit": g_fit, "g_scene": g, "g_rel_error": abs(g_fit - g) / g if not math.isnan(g_fit) else math.nan,
            "free_fall_px": int(n[0]), "free_fall_residual": float(ff) if int(n[0]) else math.nan,
            "rest_drift": float(rest_drift(kin, static)[0]), "static_px": int(static.sum())}


def source_physics(distance: torch.Tensor, flow: torch.Tensor, sample: dict, gt_kin: dict, masks: dict,
                   g: float, rollout_fps: float | None = None) -> dict[str, float]:
    """Residuals of predicted distance (T, H, W) m and flow (T, 2, H, W) px on a GT window's camera.

    Always judged on the GT masks (free fall, static), so every row of a table covers the same pixels.
    rollout_fps None: predictions on the GT frames, on the GT's tracks and validity (only the values are
    the prediction's: a flow that leaves the frame cannot drop pixels), on the GT frames' times;
    a number: a generated video at that rate, linked along its own flow, dt = 1 / rollout_fps."""
    s = _batched(sample)
    d, f = distance[None].double(), flow[None].double()
    if rollout_fps is not None:
        kin = kinematics(d, None, f, None, s["intrinsics"].double(), 1.0 / rollout_fps)
    else:
        kin = kinematics(d, gt_kin["points_valid"], f, s["flow_valid"], s["intrinsics"].double(), s["dt"].double(),
                         support=gt_kin)
    return residuals(kin, s["down_cam"], g, masks["free"], masks["static"])


def motion_support(sample: dict, threshold_px: float) -> torch.Tensor:
    """(T, H, W) moving pixels of a GT window: valid GT flow above threshold_px (frame 0: none)."""
    return sample["flow_valid"] & (sample["flow"].norm(dim=1) > threshold_px)


def change_support(reference: torch.Tensor, level: float = FRAME_CHANGE_LEVEL) -> torch.Tensor:
    """(T, H, W) moving pixels of a reference video (T, 3, H, W) by frame differences (frame 0: none)."""
    change = torch.zeros(reference.shape[0], *reference.shape[2:], dtype=torch.bool)
    change[1:] = (reference[1:] - reference[:-1]).abs().mean(dim=1) > level
    return change


def _frame_scores(pair: torch.Tensor, flow: torch.Tensor, support: torch.Tensor) -> tuple[float, float]:
    """Warp L1 and no-motion L1 of frame 1 of a (2, ...) pair on ``support`` (1, H, W)."""
    valid = torch.stack([torch.zeros_like(support[0]), support[0]])[None]
    warp, stats = flow_warp_consistency(pair[None].double(), flow[None].double(), valid)
    still = (pair[1] - pair[0]).abs().mean(dim=0)[support[0]].double().mean()
    return (float(warp) if int(stats["phys_warp_px"]) else math.nan), float(still)


def coherence(frames: torch.Tensor, flow: torch.Tensor, moving: torch.Tensor | None = None) -> dict[str, float]:
    """Flow-warp L1 of frames (T, 3, H, W) under flow (T, 2, H, W) on moving pixels (T, H, W).

    ``moving`` should come from the ground truth (`motion_support`); None = frame differences of
    ``frames`` themselves (`change_support`). Frames without moving pixels are not scored."""
    moving = change_support(frames) if moving is None else moving
    errors, coherent = [], []
    for t in range(1, frames.shape[0]):
        if not bool(moving[t].any()):
            continue
        warp, still = _frame_scores(frames[t - 1 : t + 1], flow[t - 1 : t + 1], moving[t : t + 1])
        errors.append(warp)
        coherent.append(warp <= WARP_L1_MAX and warp < still)
    return {"warp_l1_mean": float(np.nanmean(errors)) if errors else math.nan,
            "coherent_frames": float(np.mean(coherent)) if coherent else math.nan, "frames_scored": len(errors)}


def pooled_g(per_scene: list[dict], g: float = STANDARD_GRAVITY) -> dict[str, float]:
    """Pixel-weighted g_fit over scenes and its relative error (NaN when no scene has free pixels)."""
    pairs = [(r["g_fit"], r["free_fall_px"]) for r in per_scene if r["free_fall_px"] > 0 and not math.isnan(r["g_fit"])]
    n = sum(p[1] for p in pairs)
    g_fit = sum(a * b for a, b in pairs) / n if n else math.nan
    scene_g = float(np.mean([r["g_scene"] for r in per_scene])) if per_scene else g
    drift = [r["rest_drift"] for r in per_scene if not math.isnan(r["rest_drift"])]
    ff = [r["free_fall_residual"] for r in per_scene if not math.isnan(r["free_fall_residual"])]
    return {"g_fit": g_fit, "g_scene": scene_g, "g_rel_error": abs(g_fit - scene_g) / scene_g if n else math.nan,
            "free_fall_px": int(n), "free_fall_residual": float(np.mean(ff)) if ff else math.nan,
            "rest_drift": float(np.mean(drift)) if drift else math.nan}


def verdict(value: float, passes: bool, rule: str) -> dict:
    """One pass/fail entry: the measured value, the rule in words, and PASS/FAIL (FAIL on NaN)."""
    ok = bool(passes) and not (isinstance(value, float) and math.isnan(value))
    return {"value": value, "rule": rule, "pass": ok}


def g_verdict(pooled: dict[str, float]) -> dict:
    return verdict(pooled["g_rel_error"], pooled["g_rel_error"] < G_TOLERANCE,
                   f"|g_fit - g| / g < {G_TOLERANCE:.0%} (pixel-weighted over scenes)")


def coherence_verdict(share: float) -> dict:
    return verdict(share, share >= COHERENCE_PASS,
                   f"share of moving frames whose flow-warp L1 on moving pixels is <= {WARP_L1_MAX} and below "
                   f"the L1 of no motion is >= {COHERENCE_PASS:.0%}")
