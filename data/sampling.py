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

    def __post_init__(self) -> None:
        if self.num_frames < 2:
            raise ValueError(f"num_frames must be >= 2, got {self.num_frames}")
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
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
