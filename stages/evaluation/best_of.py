"""Best-of-N rollouts: generate N samples per conditioning, keep the one a verifier finds most
plausible, and keep what the first sample scored so the gain can be read off.

Sample j of scene k uses seed ``seed + k + j * SEED_SPACING``; sample 0 is the rollout a plain
evaluation makes, so ``--best-of 1`` changes nothing.  The score is the verifier command's
(``stages.evaluation.verifiers.clip_scores``) on the generated frames at the backbone's frame rate.
"""

from __future__ import annotations

import torch

from stages.evaluation import rollout
from stages.evaluation.verifiers import NEEDS_MODEL, clip_scores, heads_over_clip

SEED_SPACING = 100_003
"""Seeds of further samples: far from the next scenes' seeds (seed + k)."""


def rollout_score(video: torch.Tensor, verifier: str, pair, source, intrinsics: torch.Tensor, fps: float,
                  prompt: str, name: str) -> dict:
    """One generated video (T, 3, H, W) -> the verifier's {score, terms}."""
    sample = {"rgb": video, "intrinsics": intrinsics, "dt": torch.tensor(1.0 / fps), "video": name, "prompt": prompt}
    outputs = heads_over_clip(pair, source, video, prompt, video.shape[0]) if verifier in NEEDS_MODEL else None
    return clip_scores(sample, (verifier,), outputs)[verifier]


def choose(pipe, pair, source, first_frame: torch.Tensor, prompt: str, intrinsics: torch.Tensor, *,
           seed: int, n: int, verifier: str, frames: int, steps: int, cfg_scale: float,
           scene: str) -> tuple[torch.Tensor, torch.Tensor, dict | None]:
    """(chosen video, first video, record) — with n == 1 the first is chosen and no record is made."""
    fps = source.preset.fps
    videos, scores = [], []
    for j in range(n):
        s = seed + j * SEED_SPACING
        videos.append(rollout.generate(pipe, first_frame, prompt, seed=s, frames=frames, steps=steps,
                                       cfg_scale=cfg_scale))
        if n > 1:
            scores.append(rollout_score(videos[-1], verifier, pair, source, intrinsics, fps, prompt, f"{scene}#{s}"))
    if n == 1:
        return videos[0], videos[0], None
    values = [x["score"] for x in scores]
    best = max(range(n), key=lambda j: (values[j] == values[j], values[j]))  # NaN never wins
    record = {"n": n, "verifier": verifier, "seeds": [seed + j * SEED_SPACING for j in range(n)],
              "scores": values, "chosen": best}
    return videos[best], videos[0], record
