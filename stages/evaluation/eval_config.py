"""The evaluation's resolved arguments as one dataclass (recorded verbatim in metrics.json)."""

from __future__ import annotations

from dataclasses import dataclass

ROLLOUT_VERIFIERS = ("heads", "features", "frame_difference", "random")
"""Verifiers that can score a generated video (stages.evaluation.verifiers; oracle needs ground truth)."""


class EvaluationError(ValueError):
    """A problem with the evaluation's inputs, with a message that names the file or value."""


@dataclass
class EvalConfig:
    """Everything that decides what an evaluation computes."""

    stage1: str
    """Stage-1 export directory (heads.safetensors, heads.json, config.toml), e.g. runs/stage1_demo/final."""
    root: str
    """Data root holding <scene>/env_0/0/0/..."""
    metadata: str
    """Metadata CSV (video,prompt,split)."""
    stage2: str = ""
    """Stage-2 export directory (lora.safetensors + heads/); empty = evaluate the base model only."""
    split: str = "holdout"
    """Metadata split to evaluate; make_metadata --holdout-families puts the held-out families, and
    nothing else, in 'holdout' ('test_seen': unseen scenes of seen families)."""
    model_dir: str = ""
    """Local Wan2.2-TI2V-5B weights; empty = the weights the stage-1 run used (tiny: random, seeded)."""
    out: str = "runs/eval"
    """Output directory: metrics.json, report.md, plots, contact sheets, gallery.html."""
    cache_dir: str = "runs/cache"
    """Latent and text-context caches (shared with training; keys include the weights' identity)."""
    steps: int = 30
    """Denoising steps of the TI2V rollouts."""
    frames: int = 0
    """Frames per window and per rollout (1 + 4k); 0 = the stage-1 run's window."""
    stride: int = 0
    """Simulator steps between window frames; 0 = the stage-1 run's stride."""
    size: int = 0
    """Square frame size in pixels (a multiple of 32); 0 = the stage-1 run's height."""
    seed: int = 0
    """Base seed of the rollouts: scene i uses seed + i, identical for every model."""
    cfg_scale: float = 5.0
    """Classifier-free guidance scale of the rollouts (Wan default 5; 1 = one forward per step)."""
    max_scenes: int = 0
    """Evaluate at most this many scenes of the split (0 = all)."""
    iq_downsample: int = 0
    """Physics-IQ comparison downsampling (official: 4); 0 = 4 at >= 256 px, else 1."""
    device: str = ""
    """torch device; empty = cuda when available, else cpu."""
    flow_baselines: bool = True
    """Score OpenCV DIS and Farneback flow on each window beside zero flow (heads.classical_flow)."""
    pairs: str = ""
    """Violation-pair manifest (plausible,implausible,kind) under root: the physics verifiers are
    scored on it too (scripts/verify_physics.py; results in verify/ and a report section)."""
    best_of: int = 1
    """Rollouts generated per scene; the verifier's most plausible one is scored, the first one's
    metrics are kept beside it (stages.evaluation.best_of).  1 = one rollout, as before."""
    verifier: str = "heads"
    """Verifier that picks among best_of rollouts: heads, features, frame_difference or random
    (stages.evaluation.verifiers; oracle needs ground truth a rollout lacks)."""

    def __post_init__(self) -> None:
        if not self.stage1:
            raise EvaluationError("--stage1 must name the stage-1 export directory")
        if self.steps < 1:
            raise EvaluationError(f"--steps must be >= 1, got {self.steps}")
        if self.size and (self.size < 32 or self.size % 32):
            raise EvaluationError(f"--size must be a positive multiple of 32 (VAE 16x times the DiT's 2x2 "
                                  f"patches), got {self.size}")
        if self.frames and (self.frames < 5 or (self.frames - 1) % 4):
            raise EvaluationError(f"--frames must be 1 + 4k with k >= 1 (the VAE groups 4 frames), got {self.frames}")
        for name in ("stride", "max_scenes", "iq_downsample"):
            if getattr(self, name) < 0:
                raise EvaluationError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.best_of < 1:
            raise EvaluationError(f"--best-of must be >= 1, got {self.best_of}")
        if self.verifier not in ROLLOUT_VERIFIERS:
            raise EvaluationError(f"--verifier must be one of {', '.join(ROLLOUT_VERIFIERS)}, got {self.verifier!r}")
        if self.cfg_scale <= 0:
            raise EvaluationError(f"--cfg-scale must be > 0, got {self.cfg_scale}")
