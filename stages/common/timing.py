"""Wall time per named phase, for step breakdowns in benchmarks.

CUDA kernels run asynchronously, so each phase synchronises the device at both ends; otherwise
a phase would be charged for the previous one's queued work.  Those syncs stall the host's
queueing of work, so a disabled timer does nothing at all: training keeps its timers off and
only the benchmarks turn them on.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import torch


def synchronize(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


class PhaseTimer:
    """Accumulates seconds per phase while ``enabled`` (off: no sync, no timing, e.g. warm-up)."""

    def __init__(self, device: torch.device | None = None, enabled: bool = True) -> None:
        self.device, self.totals, self.enabled = device, {}, enabled

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        synchronize(self.device)
        start = time.perf_counter()
        yield
        synchronize(self.device)
        self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - start

    def clear(self) -> None:
        self.totals.clear()

    def per_step_ms(self, steps: int) -> dict[str, float]:
        """``<phase>_ms``: milliseconds per step."""
        return {f"{k}_ms": 1000.0 * v / steps for k, v in self.totals.items()}
