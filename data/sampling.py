"""Which frames of a scene form one training or evaluation window.

A window is ``num_frames`` frames ``stride`` steps apart.  Training draws the start at random
(the jitter that makes every epoch see different windows); evaluation is deterministic and,
by default, starts at the first frame, because physics is judged from the initial state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WindowSpec:
    """How to cut a window out of a scene."""

    num_frames: int = 49
    """Frames per window; 1 + 4k so the VAE's 4x temporal grouping is exact (49 -> 13 latents)."""
    stride: int = 2
    """Simulator steps between consecutive window frames; flow targets are composed over it."""
    eval_anchor: str = "start"
    """Deterministic window position for evaluation: 'start' or 'center'."""
    supervised_frames: int = 0
    """Training only: supervise K random frames of each window per sample (0 = all frames).
    The heads still see the whole window's features; only K frames are decoded at full
    resolution and only their targets are read, which is where the step time goes at 480^2.
    Fewer frames per step want proportionally more steps (docs/performance.md, speed knobs)."""

    def __post_init__(self) -> None:
        if self.num_frames < 2:
            raise ValueError(f"num_frames must be >= 2, got {self.num_frames}")
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        if not 0 <= self.supervised_frames <= self.num_frames:
            raise ValueError(f"supervised_frames must lie in [0, num_frames={self.num_frames}], "
                             f"got {self.supervised_frames}")
        if self.eval_anchor not in ("start", "center"):
            raise ValueError(f"eval_anchor must be 'start' or 'center', got {self.eval_anchor!r}")

    @property
    def span(self) -> int:
        """Simulator frames covered by one window, both ends included."""
        return (self.num_frames - 1) * self.stride + 1


def window_indices(available: int, spec: WindowSpec, rng: np.random.Generator | None) -> np.ndarray:
    """Frame indices (into the scene's step list) of one window.

    ``rng`` None means evaluation (deterministic).  Raises ValueError when the scene is too
    short; callers add the scene path to the message.
    """
    if available < spec.span:
        raise ValueError(
            f"has {available} frames but a window of {spec.num_frames} frames at stride "
            f"{spec.stride} needs {spec.span}"
        )
    slack = available - spec.span
    if rng is not None:
        start = int(rng.integers(0, slack + 1))
    elif spec.eval_anchor == "center":
        start = slack // 2
    else:
        start = 0
    return start + spec.stride * np.arange(spec.num_frames)


def supervised_subset(num_frames: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` distinct window-relative frame indices, sorted, each frame equally likely.

    Uniform coverage keeps the per-step loss an estimate of the whole-window loss (a random
    contiguous block would under-sample both ends, where the initial state is).  Sorted, so
    temporal terms compare frames in time order.
    """
    if count <= 0 or count >= num_frames:
        return np.arange(num_frames)
    return np.sort(rng.choice(num_frames, size=count, replace=False))


def training_subset(num_frames: int, count: int, seed: int, epoch: int, index: int) -> np.ndarray | None:
    """The supervised frames of training item ``index`` (None = all), a function of (seed, epoch,
    index) like every training draw, from a stream of its own so that choosing frames leaves the
    window and crop draws unchanged."""
    if not count:
        return None
    return supervised_subset(num_frames, count, np.random.default_rng([seed, epoch, index, 1]))
