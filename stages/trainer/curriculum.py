"""A curriculum: simple items more often early in training, every item equally often later.

Each training item has a complexity rank r in [0, 1] (0 = simplest; stage 1 ranks scenes by
data.complexity).  At training progress p (samples drawn / samples the run will draw) an item
is drawn with weight

    w(r, p) = exp(-beta * max(0, 1 - p / ramp) * r)

so at the start the most complex item comes e^-beta times as often as the simplest, and from
p = ramp on sampling is uniform.  Items are drawn with replacement.  The order of epoch e is a
pure function of (seed, e, the ranks and the run length), so it is identical in every process
and after a resume; rank sharding, positions and skipping come from ResumableSampler unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stages.trainer.sampler import ResumableSampler
from stages.trainer.sections import require

PROGRESS_CHUNK = 64
"""Consecutive positions that share one progress value (one weight vector per chunk)."""


@dataclass
class CurriculumConfig:
    """Order training from simple to complex scenes (complexity from scene.json; scenes without one
    rank in the middle)."""

    enabled: bool = False
    """Weight items by complexity rank early in training (off: a uniform shuffle per epoch)."""
    beta: float = 3.0
    """At the start the most complex item is drawn e^-beta times as often as the simplest."""
    ramp: float = 0.5
    """Fraction of the run over which the weighting fades to uniform (1 = the whole run)."""

    def __post_init__(self) -> None:
        require(self.beta >= 0 and math.isfinite(self.beta), f"beta must be a finite number >= 0, got {self.beta}")
        require(0 < self.ramp <= 1, f"ramp must lie in (0, 1], got {self.ramp}")


def curriculum_weights(ranks: np.ndarray, progress: float, beta: float, ramp: float) -> np.ndarray:
    """Normalised sampling weights of items with ``ranks`` at training ``progress`` in [0, 1]."""
    strength = beta * max(0.0, 1.0 - progress / ramp)
    weights = np.exp(-strength * ranks)
    return weights / weights.sum()


class CurriculumSampler(ResumableSampler):
    """ResumableSampler whose epoch order is drawn by curriculum weights instead of shuffled."""

    def __init__(self, ranks: Sequence[float], config: CurriculumConfig, num_replicas: int | None = None,
                 rank: int | None = None, seed: int = 0) -> None:
        super().__init__(len(ranks), num_replicas, rank, shuffle=True, seed=seed)
        self.ranks = np.asarray(ranks, dtype=np.float64)
        if self.ranks.min() < 0 or self.ranks.max() > 1:
            raise ValueError(f"complexity ranks must lie in [0, 1], got [{self.ranks.min()}, {self.ranks.max()}]")
        self.beta, self.ramp = config.beta, config.ramp
        self.run_samples: int | None = None

    def plan_run(self, total_samples: int) -> None:
        """The run draws ``total_samples`` samples over all ranks: progress is measured against it."""
        self.run_samples = max(int(total_samples), 1)

    def global_order(self, epoch: int) -> list[int]:
        if self.run_samples is None:
            raise RuntimeError("CurriculumSampler: plan_run(total_samples) must be called before iterating")
        uniforms = np.random.default_rng([self.seed, epoch]).random(self.total_size)
        order = np.empty(self.total_size, dtype=np.int64)
        for start in range(0, self.total_size, PROGRESS_CHUNK):
            progress = min(1.0, (epoch * self.total_size + start) / self.run_samples)
            cdf = np.cumsum(curriculum_weights(self.ranks, progress, self.beta, self.ramp))
            chunk = uniforms[start:start + PROGRESS_CHUNK]
            order[start:start + len(chunk)] = np.minimum(np.searchsorted(cdf, chunk, side="right"), len(cdf) - 1)
        return order.tolist()
