"""Stop a run cleanly on SIGTERM: checkpoint at the next step boundary, then exit.

Schedulers (SLURM preemption and time limits, Kubernetes evictions) and torchrun itself send
SIGTERM and wait a grace period before SIGKILL.  Without a handler the steps since the last
periodic checkpoint are lost; with it every rank finishes its current step, all agree on the
step to stop at (one rank may get the signal and another not), save one checkpoint and exit
with status 143, so a requeued job resumes exactly where it stopped.  A second SIGTERM kills at
once.  A signal sent to the whole process group (SLURM) reaches the DataLoader workers too, and
torch's own worker handler exits on it, which makes the main process fail at once; training
workers therefore run ``shield_worker`` and outlive it for a grace period.  Stage 1's feature-cache
build uses the same flag: it stops after the window in hand (each entry is written atomically).
"""

from __future__ import annotations

import os
import signal
from typing import Any

EXIT_STATUS = 128 + signal.SIGTERM
"""What a process killed by SIGTERM reports; schedulers read it as 'stopped, not finished'."""


WORKER_GRACE_S = 120
"""How long a DataLoader worker keeps serving after a SIGTERM (SLURM waits 30 s by default)."""


def shield_worker() -> None:
    """In a DataLoader worker (its ``worker_init_fn``): on SIGTERM keep serving batches so the main
    process can finish its step and checkpoint, and end ``WORKER_GRACE_S`` later (SIGALRM's
    default action), in case nothing else does.  Normally the main process shuts the worker down
    first, or the worker notices that it is gone."""
    signal.signal(signal.SIGTERM, lambda signum, frame: signal.alarm(WORKER_GRACE_S))


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

    def __enter__(self) -> "StopRequest":
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.uninstall()
