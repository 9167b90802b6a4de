"""Physics residuals of depth + flow lifted to 3D, temporal coherence, and the pass/fail heuristics.

Three sources are scored per scene (all in SI units):
- ``gt``: ground-truth distance and flow (checks the data path: dt, gravity direction, intrinsics);
- ``heads``: the heads' predictions on ground-truth frames, linked along the ground truth's
  trustworthy links (as the stage-2 physics loss does);
- ``generated``: the heads run on a generated rollout, with its own links (there is no GT for it).

Residuals:
- ``g_fit`` (m/s^2): least-squares g of the vertical acceleration (`heads.physics.fitted_gravity`)
  on free-falling pixels. For ``gt``/``heads`` those are GT-moving pixels (> MIN_SPEED) outside GT
  contacts (`contact_pixels`, |a - g down| > CONTACT_TOLERANCE). On ``gt`` that mask is partly
  circular (it keeps pixels near g), so the gt number checks the pipeline, not the simulator.
  For ``generated`` no contact mask exists: all of its own moving pixels are used.
- ``g_rel_error`` = |g_fit - g| / g, with g from the scene's scene.json (else 9.81).
- ``free_fall_residual`` (m/s^2): mean |a - g down| on the same pixels (`free_fall_prior`).
- ``rest_drift`` (m/s): mean speed of pixels that never move in the GT window (`rest_drift`).
- ``coherent_frames``: share of frames t >= 1 whose flow explains the frame: the mean photometric
  L1 between frame t and frame t-1 backward-warped by the predicted flow (`flow_warp_consistency`,
  RGB in [0, 1], in-frame pixels) is at most WARP_L1_MAX.
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
                   g: float, own_links: bool) -> dict[str, float]:
    """Residuals of predicted distance (T, H, W) m and flow (T, 2, H, W) px on a GT window's camera.

    own_links=False: judged on the GT links and GT free-fall mask (predictions on GT frames);
    True: own links and own moving pixels (generated videos have no GT correspondence)."""
    s = _batched(sample)
    d, f = distance[None].double(), flow[None].double()
    if own_links:
        kin = kinematics(d, None, f, None, s["intrinsics"].double(), s["dt"].double())
        free = moving_pixels(kin, MIN_SPEED)
    else:
        kin = kinematics(d, gt_kin["points_valid"], f, s["flow_valid"], s["intrinsics"].double(), s["dt"].double(),
                         link_valid=gt_kin["link_valid"])
        free = masks["free"]
    return residuals(kin, s["down_cam"], g, free, masks["static"])


def coherence(frames: torch.Tensor, flow: torch.Tensor) -> dict[str, float]:
    """Per-frame flow-warp L1 of frames (T, 3, H, W) under flow (T, 2, H, W); share <= WARP_L1_MAX."""
    errors = []
    for t in range(1, frames.shape[0]):
        pair = frames[t - 1 : t + 1][None].double()
        err, _ = flow_warp_consistency(pair, flow[t - 1 : t + 1][None].double())
        errors.append(float(err))
    coherent = [e <= WARP_L1_MAX for e in errors]
    return {"warp_l1_mean": float(np.mean(errors)) if errors else math.nan,
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
                   f"share of frames with flow-warp L1 <= {WARP_L1_MAX} is >= {COHERENCE_PASS:.0%}")
