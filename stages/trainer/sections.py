"""Config sections that stage 1 and stage 2 share: optimiser, checkpointing, logging, EMA, guard.

Each stage's top-level dataclass composes these with its own sections (data, backbone, heads,
LoRA), so each component receives only its own sub-config (torchtitan #2386). Checks live in
`__post_init__`, which `load_config` runs after all overrides are applied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def require(condition: bool, message: str) -> None:
    """Config validation: a ValueError with the message (the config loader adds the section name)."""
    if not condition:
        raise ValueError(message)


@dataclass
class OptimConfig:
    """AdamW, gradient clipping/accumulation and the warmup + cosine learning-rate schedule."""

    lr: float = 1e-4
    """Peak learning rate after warmup (heads: 1e-4; TI2V-5B LoRA collapses at 1e-4, use 1e-5..5e-5)."""

    weight_decay: float = 0.01
    """AdamW decoupled weight decay."""

    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW (beta1, beta2)."""

    eps: float = 1e-8
    """AdamW epsilon (denominator floor)."""

    grad_clip: float = 1.0
    """Clip the global gradient norm to this value before each optimizer step; 0 disables clipping."""

    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step (effective batch = batch x grad_accum x processes)."""

    warmup_steps: int = 0
    """Optimizer steps of linear warmup from lr/warmup_steps to lr."""

    min_lr_ratio: float = 0.1
    """The cosine decay ends at lr x min_lr_ratio (0 decays to zero)."""

    max_steps: int | None = None
    """Total optimizer steps; None derives it from `epochs` and the loader length (see total_steps)."""

    epochs: int = 10
    """Passes over the (repeated) dataset; used only when max_steps is None."""

    def __post_init__(self) -> None:
        require(self.lr > 0 and math.isfinite(self.lr), f"lr must be a positive finite number, got {self.lr}")
        require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"betas must be two values in [0, 1), got {self.betas}")
        require(self.eps > 0, f"eps must be > 0, got {self.eps}")
        require(self.grad_clip >= 0, f"grad_clip must be >= 0 (0 disables), got {self.grad_clip}")
        require(self.grad_accum >= 1, f"grad_accum must be >= 1, got {self.grad_accum}")
        require(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        require(0 <= self.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        require(self.max_steps is None or self.max_steps >= 1, f"max_steps must be >= 1 or None, got {self.max_steps}")
        require(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        if self.max_steps is not None:
            require(self.warmup_steps <= self.max_steps, f"warmup_steps ({self.warmup_steps}) exceeds max_steps ({self.max_steps})")

    def total_steps(self, batches_per_epoch: int) -> int:
        """Optimizer steps of the whole run: max_steps if set, else epochs x ceil(batches / grad_accum)."""
        if self.max_steps is not None:
            return self.max_steps
        require(batches_per_epoch >= 1, f"the data loader is empty ({batches_per_epoch} batches per epoch)")
        return self.epochs * math.ceil(batches_per_epoch / self.grad_accum)


@dataclass
class CheckpointConfig:
    """When to write `checkpoint-<step>/` folders, how many to keep, and what to resume from."""

    every_steps: int = 500
    """Save a checkpoint every this many optimizer steps (and always at the end of training)."""

    keep_last: int = 3
    """Keep only the newest k complete checkpoints; 0 keeps all. The newest is never deleted."""

    resume: str = "latest"
    """Either "latest" (resume from the newest complete checkpoint in the run dir, if any), "none"
    (start fresh), or the path of a checkpoint folder to resume from."""

    init_from: str = ""
    """A checkpoint folder whose trainable weights (and EMA) start a fresh run, with a new optimizer,
    schedule and data order: how to train a finished run longer or on other data. Ignored when
    the run resumes from its own checkpoint."""

    def __post_init__(self) -> None:
        require(self.every_steps >= 1, f"every_steps must be >= 1, got {self.every_steps}")
        require(self.keep_last >= 0, f"keep_last must be >= 0 (0 keeps all), got {self.keep_last}")
        require(bool(self.resume.strip()), "resume must be 'none', 'latest' or a checkpoint path, got an empty string")


LOG_BACKENDS = ("none", "tensorboard", "wandb")


@dataclass
class LogConfig:
    """Experiment tracking. metrics.jsonl is always written to the run dir, whatever the backend."""

    backend: str = "none"
    """One of none / tensorboard / wandb. wandb runs offline unless WANDB_MODE says otherwise."""

    every_steps: int = 10
    """Log metrics and print the one-line step summary every this many optimizer steps."""

    project: str = "physics-world-model"
    """wandb project name (ignored by other backends)."""

    run_name: str = ""
    """Run name for the tracker; empty uses the run directory's name."""

    def __post_init__(self) -> None:
        require(self.backend in LOG_BACKENDS, f"backend must be one of {LOG_BACKENDS}, got {self.backend!r}")
        require(self.every_steps >= 1, f"every_steps must be >= 1, got {self.every_steps}")


@dataclass
class EMAConfig:
    """Exponential moving average of the trainable weights, saved beside them in checkpoints."""

    enabled: bool = False
    """Keep an fp32 EMA copy of the trainable parameters (costs one fp32 copy of them in memory)."""

    decay: float = 0.999
    """Per-update decay d: shadow = d * shadow + (1 - d) * param. Averaging window ~ 1 / (1 - d) updates."""

    update_every: int = 1
    """Update the EMA every this many optimizer steps (decay applies per update, not per step)."""

    def __post_init__(self) -> None:
        require(0 <= self.decay < 1, f"decay must be in [0, 1), got {self.decay}")
        require(self.update_every >= 1, f"update_every must be >= 1, got {self.update_every}")


@dataclass
class GuardConfig:
    """What to do about NaN/inf losses: skip the step, and stop after too many in a row."""

    max_consecutive_nonfinite: int = 5
    """Abort training with NonFiniteLossError after this many consecutive skipped (non-finite) steps."""

    def __post_init__(self) -> None:
        require(self.max_consecutive_nonfinite >= 1, f"max_consecutive_nonfinite must be >= 1, got {self.max_consecutive_nonfinite}")
