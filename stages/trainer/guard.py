"""Skip optimizer steps whose loss is NaN/inf, and stop the run when that keeps happening.

One bad batch (an all-invalid depth mask, a rare fp overflow) should cost one step, not the run;
a diverged run should stop with a message rather than train on NaNs for hours. In multi-process
training every rank must take the *same* decision, or DDP's next all-reduce deadlocks/desyncs:
the local "non-finite" flag is MAX-all-reduced, so one bad rank makes all ranks skip.

    if guard.check(loss, step):      # every rank gets the same answer
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

ReduceFn = Callable[[torch.Tensor], torch.Tensor]


class NonFiniteLossError(RuntimeError):
    """Too many consecutive non-finite losses: the run has diverged or the data are broken."""


def _all_reduce_max(flag: torch.Tensor) -> torch.Tensor:
    """MAX over ranks when torch.distributed is initialised (accelerate uses it), else unchanged."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        backend = dist.get_backend()
        if backend == "nccl" and flag.device.type != "cuda":
            flag = flag.to(torch.device("cuda", torch.cuda.current_device()))
        elif backend == "gloo" and flag.device.type != "cpu":
            flag = flag.cpu()
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return flag


class NonFiniteGuard:
    """Counts skipped steps; raises `NonFiniteLossError` after `max_consecutive` in a row."""

    def __init__(self, max_consecutive: int = 5, reduce_fn: ReduceFn | None = None) -> None:
        if max_consecutive < 1:
            raise ValueError(f"max_consecutive must be >= 1, got {max_consecutive}")
        self.max_consecutive = max_consecutive
        self.reduce_fn = reduce_fn or _all_reduce_max
        """Cross-rank MAX of a 0-d float flag; injectable for tests."""
        self.total_skipped = 0
        self.consecutive = 0
        self.checks = 0
        self.last_finite_loss: float | None = None
        self._last_finite: torch.Tensor | None = None  # kept as a tensor: no extra .item() sync per step

    def check(self, loss: torch.Tensor | float, step: int | None = None) -> bool:
        """True: the step is fine on every rank. False: skip it (zero grads, no optimizer/scheduler step)."""
        step = self.checks if step is None else step
        self.checks += 1
        value = loss.detach() if isinstance(loss, torch.Tensor) else torch.tensor(float(loss))
        bad_local = ~torch.isfinite(value.float()).all()
        flag = self.reduce_fn(bad_local.to(torch.float32).reshape(()))
        if not bool(flag.item()):
            self.consecutive = 0
            self._last_finite = value
            return True
        self._skip(step, "loss", "this rank" if bool(bad_local) else "another rank")
        return False

    def check_grad_norm(self, norm: float, step: int) -> bool:
        """A non-finite gradient norm under a finite loss (NaN from the backward of a masked-out
        term, say) must not reach the weights either; it counts toward the same limit. The norm is
        computed after the all-reduce, so every rank already holds the same value."""
        if math.isfinite(norm):
            return True
        self._skip(step, "gradient norm", "every rank")
        return False

    def _skip(self, step: int, what: str, where: str) -> None:
        self.total_skipped += 1
        self.consecutive += 1
        last = self._last_finite_value()
        logger.warning(
            "non-finite %s on %s at step %d: skipping the step (%d in a row, %d in total; last finite loss %s)",
            what, where, step, self.consecutive, self.total_skipped, last,
        )
        if self.consecutive >= self.max_consecutive:
            raise NonFiniteLossError(
                f"{self.consecutive} consecutive non-finite steps at step {step} (the last had a non-finite {what}); "
                f"last finite loss {last}; {self.total_skipped} steps skipped in total. "
                "Try lowering the lr (or raising warmup), "
                "enabling grad clipping, or check the data for NaN/inf targets and empty masks."
            )

    def _last_finite_value(self) -> float | None:
        if self._last_finite is not None:
            self.last_finite_loss = float(self._last_finite.float().mean())
            self._last_finite = None
        return self.last_finite_loss

    def state_dict(self) -> dict[str, Any]:
        """Python primitives only, so it loads with torch.load(weights_only=True)."""
        return {
            "total_skipped": self.total_skipped,
            "consecutive": self.consecutive,
            "checks": self.checks,
            "last_finite_loss": self._last_finite_value(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.total_skipped = int(state["total_skipped"])
        self.consecutive = int(state["consecutive"])
        self.checks = int(state.get("checks", 0))
        last = state.get("last_finite_loss")
        self.last_finite_loss = None if last is None or not math.isfinite(last) else float(last)
        self._last_finite = None
