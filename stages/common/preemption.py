"""Stop a run cleanly on SIGTERM: checkpoint at the next step boundary, then exit.

Schedulers (SLURM preemption and time limits, Kubernetes evictions) and torchrun itself send
SIGTERM and wait a grace period before SIGKILL.  Without a handler the steps since the last
periodic checkpoint are lost; with it every rank finishes its current step, all agree on the
step to stop at (one rank may get the signal and another not), save one checkpoint and exit
with status 143, so a requeued job resumes exactly where it stopped.  A second SIGTERM kills at
once.  DataLoader workers forked after ``install`` inherit the handler, so a signal sent to the
whole process group does not take the loader down before the checkpoint is written.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any, Callable

import torch

log = logging.getLogger(__name__)

EXIT_STATUS = 128 + signal.SIGTERM
"""What a process killed by SIGTERM reports; schedulers read it as 'stopped, not finished'."""


class Preempted(SystemExit):
    """Raised after the stop checkpoint is written; exits with ``EXIT_STATUS``."""

    def __init__(self) -> None:
        super().__init__(EXIT_STATUS)


class StopRequest:
    """The SIGTERM flag of this process, and the agreement of all ranks on it."""

    def __init__(self) -> None:
        self.received = False
        self._previous: Any = None

    def install(self) -> "StopRequest":
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received:  # asked twice: stop waiting for the step to end
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        self.received = True

    def agreed(self, reduce_sum: Callable[[torch.Tensor], torch.Tensor], device: torch.device) -> bool:
        """True on every rank once any rank received SIGTERM (a collective: call it on all ranks)."""
        flag = torch.tensor(1.0 if self.received else 0.0, device=device)
        return bool(reduce_sum(flag).item() > 0)

    def __enter__(self) -> "StopRequest":
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.uninstall()
