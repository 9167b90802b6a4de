"""What a run reports, and how: metrics through one `log(metrics, step)` interface, console lines,
phase timings.

Named `tracking` so it does not shadow the standard `logging` module. Backends are imported
lazily: neither tensorboard nor wandb is needed unless chosen. wandb runs offline unless the
environment sets WANDB_MODE (clusters rarely have outbound network; `wandb sync` uploads later).
Only the main process tracks; on other ranks every call is a no-op, so callers need no rank checks.

Console: modelscope (which ``import diffsynth`` pulls in) sets every plain ``StreamHandler`` on the root
logger to ERROR when torch.distributed is already initialised, to quiet its own rank>0 output.
In a multi-process run that import happens after accelerate set up the process group, so every
step line, checkpoint and resume message vanished.  Our handler is a subclass, which that reset
skips, and it writes through ``tqdm.write`` so log lines land above the progress bar, not in it.

Timing: CUDA kernels run asynchronously, so each phase synchronises the device at both ends; otherwise
a phase would be charged for the previous one's queued work.  Those syncs stall the host's
queueing of work, so a disabled timer does nothing at all: training keeps its timers off and
only the benchmarks turn them on.
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Protocol

import torch
from tqdm import tqdm

from stages.trainer.sections import LOG_BACKENDS, LogConfig

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


class _Backend(Protocol):
    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


def check_backend(backend: str) -> None:
    """Fail at start-up, not after hours of feature caching, when the chosen backend is missing."""
    if backend == "tensorboard":
        _summary_writer()
    elif backend == "wandb":
        _wandb()


def _summary_writer() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:  # torch's wrapper needs the separate `tensorboard` package
        raise RuntimeError(
            "log.backend=tensorboard needs the tensorboard package: `pip install tensorboard`, "
            "or set log.backend=none (metrics.jsonl is written either way)"
        ) from error
    return SummaryWriter


def _wandb() -> Any:
    try:
        import wandb
    except ImportError as error:
        raise RuntimeError("log.backend=wandb needs `pip install wandb`, or set log.backend=none") from error
    return wandb


class _TensorBoard:
    def __init__(self, run_dir: Path) -> None:
        self.writer = _summary_writer()(log_dir=str(run_dir / "tensorboard"))

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _Wandb:
    def __init__(self, run_dir: Path, project: str, run_name: str, config: dict[str, Any] | None) -> None:
        wandb = _wandb()
        mode = os.environ.get("WANDB_MODE", "offline")
        self.run = wandb.init(project=project, name=run_name, dir=str(run_dir), config=config, mode=mode)
        logger.info("wandb run %s (mode %s)", run_name, mode)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


def _to_float(value: Any) -> float:
    return float(value.detach().float().mean()) if isinstance(value, torch.Tensor) else float(value)


class Tracker:
    """Rank-0 metric sink: metrics.jsonl in `run_dir` always, plus the chosen backend."""

    def __init__(
        self,
        run_dir: str | os.PathLike,
        backend: str = "none",
        project: str = "physics-world-model",
        run_name: str = "",
        config: dict[str, Any] | None = None,
        is_main_process: bool = True,
    ) -> None:
        if backend not in LOG_BACKENDS:
            raise ValueError(f"unknown log backend {backend!r}; choose one of {LOG_BACKENDS}")
        self.enabled = is_main_process
        self.run_dir = Path(run_dir)
        self._backend: _Backend | None = None
        self._file = None
        if not self.enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        name = run_name or self.run_dir.name
        if backend == "tensorboard":
            self._backend = _TensorBoard(self.run_dir)
        elif backend == "wandb":
            self._backend = _Wandb(self.run_dir, project, name, config)
        # Append: a resumed run continues the same curve file (steps may repeat after a crash).
        self._file = (self.run_dir / METRICS_FILE).open("a", encoding="utf-8")

    def log(self, metrics: dict[str, Any], step: int) -> None:
        """Record scalar metrics (floats or 0-d/any tensors, averaged) at optimizer step `step`."""
        if not self.enabled or self._file is None:
            return
        values = {key: _to_float(value) for key, value in metrics.items()}
        # Strict JSON has no NaN/inf: write null so any reader can parse the file.
        record = {"step": step, "time": time.time(), **{k: (v if math.isfinite(v) else None) for k, v in values.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._backend is not None:
            self._backend.log(values, step)

    def close(self) -> None:
        """Flush and close; safe to call twice (entry points call it in `finally`)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_tracker(log: LogConfig, run_dir: str | os.PathLike, config: dict[str, Any] | None = None, is_main_process: bool = True) -> Tracker:
    """Tracker from a `LogConfig`; `config` (e.g. `to_dict(cfg)`) is attached to wandb runs."""
    return Tracker(run_dir, log.backend, log.project, log.run_name, config, is_main_process)


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a run's metrics.jsonl (for tests, plots and reports)."""
    path = Path(run_dir) / METRICS_FILE
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def peak_memory_gib(device: torch.device | str | None = None) -> float:
    """Peak memory in GiB: CUDA max allocated on a GPU, else this process's peak RSS."""
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated(dev) / 2**30
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


_FORMATS = {
    "loss": ("loss", "{:.4f}"),
    "grad_norm": ("grad_norm", "{:.3f}"),
    "lr": ("lr", "{:.2e}"),
    "samples_per_s": ("samples/s", "{:.2f}"),
    "mfu": ("mfu", "{:.1%}"),
    "memory_gib": ("mem", "{:.2f} GiB"),
}


def format_step_line(step: int, metrics: dict[str, Any], total_steps: int | None = None) -> str:
    """One console line: `step 120/1000 | loss 0.1234 | grad_norm 1.234 | lr 1.00e-04 | ...`.

    Known keys (loss, grad_norm, lr, samples_per_s, mfu, memory_gib) come first in that order with
    fixed formats; any other metric follows as `name value` with 4 significant digits.
    """
    parts = [f"step {step}/{total_steps}" if total_steps else f"step {step}"]
    values = {key: _to_float(value) for key, value in metrics.items()}
    for key, (label, fmt) in _FORMATS.items():
        if key in values:
            parts.append(f"{label} {fmt.format(values[key])}")
    parts.extend(f"{key} {value:.4g}" for key, value in values.items() if key not in _FORMATS)
    return " | ".join(parts)


FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class TqdmHandler(logging.StreamHandler):
    """A stderr handler that prints through tqdm, keeping any active progress bar intact."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # logging must never take the run down
            self.handleError(record)


def configure_logging(level: int | str = logging.INFO) -> None:
    """One TqdmHandler on the root logger at ``level``, in place of plain stream handlers (other
    handlers, such as pytest's capture, stay)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler or isinstance(handler, TqdmHandler):
            root.removeHandler(handler)
    handler = TqdmHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    root.setLevel(level)


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
