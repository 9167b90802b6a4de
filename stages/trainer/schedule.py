"""Learning-rate schedule: linear warmup, then cosine decay to `min_lr_ratio` x the peak lr.

The schedule is a picklable callable object rather than a closure so that `LambdaLR.state_dict()`
stores its parameters (LambdaLR saves the `__dict__` of non-function lambdas) and a resumed run
continues the same curve. The scheduler is stepped once per *optimizer* step, so its index is the
number of optimizer steps already taken.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from stages.trainer.sections import OptimConfig


@dataclass
class WarmupCosine:
    """Multiplier of the peak lr at optimizer step `step` (0-based).

    Warmup: (step + 1) / warmup_steps, so step 0 already trains (a zero lr would waste a step)
    and step warmup_steps - 1 reaches 1. Then cosine from 1 at step warmup_steps to
    min_lr_ratio at step total_steps, constant afterwards.
    """

    warmup_steps: int
    total_steps: int
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.warmup_steps < 0 or self.total_steps < 1:
            raise ValueError(f"need warmup_steps >= 0 and total_steps >= 1, got {self.warmup_steps}, {self.total_steps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine


def warmup_cosine(
    optimizer: Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0, last_epoch: int = -1
) -> LambdaLR:
    """LambdaLR applying `WarmupCosine` to every param group's initial lr; supports state_dict."""
    return LambdaLR(optimizer, WarmupCosine(warmup_steps, total_steps, min_lr_ratio), last_epoch=last_epoch)


def scheduler_from_config(optimizer: Optimizer, optim: OptimConfig, total_steps: int) -> LambdaLR:
    """The schedule described by an `OptimConfig` over a run of `total_steps` optimizer steps."""
    return warmup_cosine(optimizer, optim.warmup_steps, total_steps, optim.min_lr_ratio)


def load_scheduler_state(scheduler: LambdaLR, state: dict) -> None:
    """Load a LambdaLR state and re-apply the lr it implies to the optimizer's param groups.

    `LambdaLR.load_state_dict` restores `last_epoch` but not the groups' current lr, and building
    the scheduler after loading the optimizer state resets that lr to the step-0 value: the next
    optimizer step would then use the wrong lr. Setting lr = initial_lr x lambda(last_epoch) makes
    the result independent of the order in which optimizer and scheduler are restored.
    """
    scheduler.load_state_dict(state)
    for group, fn in zip(scheduler.optimizer.param_groups, scheduler.lr_lambdas):
        group["lr"] = group["initial_lr"] * fn(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]  # what get_last_lr() reports
