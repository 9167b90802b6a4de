"""Verifiers: one plausibility score per clip (higher = more plausible), from what each may see.

- ``heads``: the stage-1 heads' depth and flow over the whole clip (sliding windows of the heads'
  own length), judged by the rule of ``heads.plausibility``;
- ``oracle``: the same rule on the ground-truth distance and flow (the ceiling of ``heads``);
- ``features``: statistics of the trajectory of the backbone's tapped features, frame to frame;
- ``frame_difference``: mean absolute change between frames (a trivial baseline: less is better);
- ``random``: a uniform draw seeded by the clip's name;
- diagnostics, only when named (``DIAGNOSTICS``): ``heads_true_depth`` (the rule on the heads' flow
  with the ground-truth distance) and ``heads_true_flow`` (the heads' distance with the
  ground-truth flow), which say which half of the heads' output holds ``heads`` back.
``heads`` and ``features`` read the RGB frames and the intrinsics only.  ``clip_scores`` serves the
verifier command and best-of-N selection; the rule behind ``heads`` and ``oracle``
(``heads.plausibility``) is also stage 2's ``reward.verifier_weight`` term, differentiated.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch

from heads.metrics import depth_from_log
from heads.plausibility import plausibility

VERIFIERS = ("heads", "oracle", "features", "frame_difference", "random")
DIAGNOSTICS = ("heads_true_depth", "heads_true_flow")
NEEDS_MODEL = ("heads", "features", *DIAGNOSTICS)


def window_starts(frames: int, window: int) -> list[int]:
    """Starts of windows of ``window`` frames covering ``frames``, consecutive ones sharing one
    frame (a window's frame 0 has no flow; the previous window's last frame gives it)."""
    if frames < window:
        raise ValueError(f"a clip of {frames} frames is shorter than the heads' window of {window}")
    starts = list(range(0, frames - window + 1, window - 1))
    if starts[-1] + window < frames:
        starts.append(frames - window)
    return starts


@torch.no_grad()
def heads_over_clip(pair, source, rgb: torch.Tensor, prompt: str, window: int) -> dict:
    """rgb (T, 3, H, W) -> flow (T, 2, H, W) px, distance (T, H, W) m, and the per-latent-frame
    feature trajectory (N, C): the spatial mean of every tap, concatenated."""
    device = next(pair.parameters()).device
    frames = rgb.shape[0]
    flow = torch.zeros(frames, 2, *rgb.shape[-2:])
    distance = torch.zeros(frames, *rgb.shape[-2:])
    done = torch.zeros(frames, dtype=torch.bool)
    trajectory = []
    for start in window_starts(frames, window):
        batch = rgb[start:start + window].unsqueeze(0).to(device)
        taps = source.extract(batch, [prompt], store_latents=False)
        f, log_depth = pair(taps, batch)
        new = ~done[start:start + window]  # a window's first frame has no flow: the earlier window's stays
        idx = torch.arange(start, start + window)[new]
        flow[idx], distance[idx] = f[0].float().cpu()[new], depth_from_log(log_depth[0].float().cpu())[new]
        done[idx] = True
        pooled = torch.cat([t[0].float().mean(dim=(-2, -1)).T for t in taps], dim=1)  # (F', sum C)
        trajectory.append(pooled[1:] if trajectory else pooled)
    return {"flow": flow, "distance": distance, "trajectory": torch.cat(trajectory).cpu()}


def trajectory_score(z: torch.Tensor) -> dict:
    """Statistics of a feature trajectory z (N, C): steps d_t = z_t - z_{t-1}; the score is minus the
    sum of the mean turning angle and its spread (in units of pi), the second difference and the
    linear-prediction residual (relative to the mean step) and the largest step over the median
    one, minus 1 (smooth, steady trajectories score highest)."""
    z = z.double()
    if z.shape[0] < 4:
        return {"score": math.nan}
    d = z[1:] - z[:-1]
    step = d.norm(dim=1)
    cos = (d[1:] * d[:-1]).sum(1) / (step[1:] * step[:-1]).clamp_min(1e-12)
    angle = torch.arccos(cos.clamp(-1, 1)) / math.pi
    second = (d[1:] - d[:-1]).norm(dim=1) / step.mean().clamp_min(1e-12)
    # Linear prediction from the two previous steps: z_{t+1} ~ z_t + 1.5 d_t - 0.5 d_{t-1}.
    predicted = z[2:-1] + 1.5 * d[1:-1] - 0.5 * d[:-2]
    residual = (z[3:] - predicted).norm(dim=1) / step.mean().clamp_min(1e-12)
    stats = {"turning": float(angle.mean()), "turning_spread": float(angle.std()),
             "second_difference": float(second.mean()), "prediction_residual": float(residual.mean()),
             "step_peak": float(step.max() / step.median().clamp_min(1e-12)) - 1.0}
    return {"score": -sum(stats.values()), **stats}


def frame_difference_score(rgb: torch.Tensor) -> dict:
    change = float((rgb[1:] - rgb[:-1]).abs().mean())
    return {"score": -change, "mean_abs_change": change}


def random_score(video: str, seed: int = 0) -> dict:
    return {"score": float(np.random.default_rng([seed, zlib.crc32(video.encode())]).random())}


RULE_INPUTS = {"heads": ("model", "model"), "oracle": ("truth", "truth"),
               "heads_true_depth": ("truth", "model"), "heads_true_flow": ("model", "truth")}
"""Verifiers that apply the plausibility rule: where their (distance, flow) come from."""


def rule_score(sample: dict, model: dict | None, distance_from: str, flow_from: str) -> dict:
    """The plausibility rule on the clip's distance and flow, each from the heads ("model", no
    validity mask) or the ground truth ("truth", with its validity)."""
    distance = (sample["depth"], sample["depth_valid"]) if distance_from == "truth" else (model["distance"], None)
    flow = (sample["flow"], sample["flow_valid"]) if flow_from == "truth" else (model["flow"], None)
    return plausibility(*distance, *flow, sample["intrinsics"], float(sample["dt"]), rgb=sample["rgb"])


def clip_scores(sample: dict, names: tuple[str, ...], model: dict | None = None, seed: int = 0) -> dict[str, dict]:
    """Scores of one clip (a whole-clip sample of data.dataset: rgb, depth, flow, their masks,
    intrinsics, dt, video) under each verifier in ``names``; ``model`` is ``heads_over_clip``'s
    output, needed by heads and features."""
    out = {}
    for name in names:
        if name in RULE_INPUTS:
            out[name] = rule_score(sample, model, *RULE_INPUTS[name])
        elif name == "features":
            out[name] = trajectory_score(model["trajectory"])
        elif name == "frame_difference":
            out[name] = frame_difference_score(sample["rgb"])
        elif name == "random":
            out[name] = random_score(sample["video"], seed)
        else:
            raise ValueError(f"unknown verifier {name!r}; known: {', '.join(VERIFIERS + DIAGNOSTICS)}")
    return out
