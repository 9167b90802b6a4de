"""Running a stage: resume, the step loop, periodic validation with EMA weights, the export.

A stage object provides ``run`` (a TrainRun), ``loss_fn``, ``validate() -> dict`` (main process,
EMA weights already swapped in), ``export(final_dir)``, ``before_training()`` and
``report(metrics)``; both stages share this one loop and this one entry point.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from tqdm import tqdm

from data.metadata import read_metadata
from stages.trainer import all_ranks, parse_cli, resolve_resume, save_config
from stages.trainer.backend import make_accelerator
from stages.trainer.config import expand_aliases
from stages.trainer.loop import (
    batch_stream,
    check_init_from,
    log_step,
    optimizer_step,
    resume,
    save,
)
from stages.trainer.preemption import Preempted, StopRequest
from stages.trainer.tracking import check_backend, configure_logging
from world_model.loading import WeightsLayout

log = logging.getLogger(__name__)


def run_entry(config_cls: type, build: Any, argv: list[str] | None, description: str) -> dict[str, float]:
    """parse -> build -> train -> close: the whole entry point of either stage."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--preflight", action="store_true",
                        help="check the config and the files it names, then exit (the launcher does this once "
                             "before it starts several processes)")
    config, args = parse_cli(config_cls, expand_aliases(sys.argv[1:] if argv is None else argv), parser=parser)
    configure_logging()
    if args.preflight:
        preflight(config)
        print(f"{Path(sys.argv[0]).name}: preflight passed", file=sys.stderr)
        return {}
    check_backend(config.log.backend)
    accelerator = make_accelerator()
    stage = build(config, accelerator)
    stage.before_training()
    try:
        metrics = train(stage)
    finally:
        stage.run.tracker.close()
    if accelerator.is_main_process:
        stage.report(metrics)
    return metrics


def preflight(config: Any) -> None:
    """Raise the error training would raise later for a missing or malformed input (either stage).

    A mistake found inside a multi-process launch is printed once per rank and then buried under
    torchrun's failure summary, after every process has loaded torch and claimed its GPU, so the
    launcher runs these checks first (``stage*.py --preflight``), with the functions training
    calls later.  Checks that read checkpoints (a changed config on resume) stay with training."""
    check_backend(config.log.backend)
    run, data = config.run, config.data
    for split in (run.train_split, run.val_split):
        if split:
            read_metadata(data.metadata, data.root, split=split)
    if config.backbone.model_dir:
        WeightsLayout.resolve(config.backbone.model_dir)
    if config.checkpoint.init_from:
        check_init_from(config.checkpoint.init_from)
    if config.checkpoint.resume.strip().lower() not in ("none", "latest"):
        resolve_resume(config.run.output_dir, config.checkpoint.resume)
    objective = getattr(config, "objective", None)
    if objective is not None:  # stage 2 starts from stage 1's exported heads
        from stages.model import HeadPair

        HeadPair.load(objective.heads_dir)


def run_script(main: Any) -> None:
    """The ``__main__`` of a stage: a mistake in the config, the data or the launch, and a diverged
    run, end with one line saying what is wrong and exit status 2, not a traceback of the
    machinery that found it (``PWM_TRACEBACK=1`` shows that too)."""
    from data.errors import DataFormatError
    from heads.io import HeadLoadError
    from stages.trainer import CheckpointError, ConfigError, NonFiniteLossError
    from world_model.cache import CacheError
    from world_model.loading import WeightsError

    try:
        main()
    except (ConfigError, CheckpointError, DataFormatError, WeightsError, HeadLoadError, NonFiniteLossError,
            CacheError, ExportError, FileNotFoundError) as error:
        if os.environ.get("PWM_TRACEBACK"):
            raise
        print(f"{Path(sys.argv[0]).name}: error: {error}\n(PWM_TRACEBACK=1 shows where it was raised)", file=sys.stderr)
        raise SystemExit(2) from None


def ema_weights(stage: Any) -> contextlib.AbstractContextManager:
    """Validation and export use the EMA weights when EMA is enabled."""
    run = stage.run
    return run.ema.swap_in(run.unwrapped) if run.ema is not None else contextlib.nullcontext()


def run_validation(stage: Any) -> dict[str, float]:
    """Metrics on the validation windows (main process, EMA weights), logged under val/."""
    run = stage.run
    metrics: dict[str, float] = {}
    if run.accelerator.is_main_process:
        with ema_weights(stage):
            metrics = stage.validate()
        if metrics:
            run.tracker.log({f"val/{k}": v for k, v in metrics.items()}, run.step)
    run.accelerator.wait_for_everyone()
    return metrics


def train(stage: Any) -> dict[str, float]:
    """Train to ``total_steps`` (resuming if a checkpoint exists); returns the last validation."""
    run, config = stage.run, stage.run.config
    resumed = resume(run, config.checkpoint)
    if run.accelerator.is_main_process:  # only now: a refused resume must not overwrite the run's config
        save_config(config, run.run_dir / "config.toml")
    with StopRequest() as stop:  # from here a SIGTERM stops at a step boundary (stages/trainer/preemption.py)
        train_steps(stage, stop, saved_at=run.step if resumed else -1)
    metrics = run_validation(stage)
    export(stage, metrics)
    return metrics


def train_steps(stage: Any, stop: StopRequest, saved_at: int) -> None:
    """The step loop: log, checkpoint and validate on schedule; on SIGTERM (any rank), checkpoint
    the step reached unless that is done (``saved_at``), and exit with status 143."""
    run, config = stage.run, stage.run.config
    stream, per_step = batch_stream(run), config.run.batch_size * config.optim.grad_accum * run.accelerator.num_processes
    started, samples = time.perf_counter(), 0
    bar = tqdm(total=run.total_steps, initial=run.step, desc=type(stage).__name__, disable=not run.accelerator.is_main_process)
    while run.step < run.total_steps:
        # Checked before each step, skipped ones included; every rank takes the same branch.
        sigterm, bad_data = step_boundary(run, stop)
        if sigterm:
            bar.close()
            stop_here(run, saved=saved_at == run.step)
        if bad_data:
            bar.close()
            stop_on_bad_data(run, bad_data, saved=saved_at == run.step)
        tick = time.perf_counter()
        step_metrics = optimizer_step(run, stream, stage.loss_fn, config.optim)
        samples += per_step
        if step_metrics.get("skipped"):
            continue  # no update happened: nothing new to log, save or validate
        bar.update(run.step - bar.n)
        step_rate = per_step / (time.perf_counter() - tick)
        bar.set_postfix(loss=f"{step_metrics['loss']:.4f}", samples_per_s=f"{step_rate:.2f}")
        if run.step % config.log.every_steps == 0:
            log_step(run, step_metrics, samples, time.perf_counter() - started)
            started, samples = time.perf_counter(), 0
        if run.step % config.checkpoint.every_steps == 0 or run.step == run.total_steps:
            save(run, config.checkpoint)
            saved_at = run.step
        if run.step % config.run.val_every == 0 and run.step < run.total_steps:
            run_validation(stage)
    bar.close()
    _, bad_data = step_boundary(run, stop)  # what the last step's batches carried
    if bad_data:
        stop_on_bad_data(run, bad_data, saved=saved_at == run.step)


def step_boundary(run: Any, stop: StopRequest) -> tuple[bool, tuple[str, dict] | None]:
    """What every rank agrees on between steps, in one collective: whether any rank received
    SIGTERM, and, when the bad samples met since the last boundary call for it, why the run
    stops and the first of them."""
    bad, new = run.bad_samples, []
    if bad is not None:
        new, bad.new = bad.new, []
    flags = torch.tensor([1.0 if stop.received else 0.0, float(len(new))], device=run.accelerator.device)
    sigterm, new_total = run.accelerator.reduce(flags, "sum").tolist()
    why = bad.agreed_count(int(new_total)) if bad is not None else None
    if why is None:
        return sigterm > 0, None
    first = next(f for f in all_ranks(new[0] if new else None) if f is not None)  # collective too
    return sigterm > 0, (why, first)


def stop_on_bad_data(run: Any, bad_data: tuple[str, dict], saved: bool) -> None:
    """data.on_error=stop, or too many bad samples: checkpoint the step reached (unless done),
    then end with the one-line DataFormatError naming the file (status 2)."""
    if not saved:
        save(run, run.config.checkpoint)
    why, first = bad_data
    raise run.bad_samples.stop_error(first, why, run.step)


def stop_here(run: Any, saved: bool) -> None:
    """SIGTERM: checkpoint the step reached (unless done), then leave with status 143."""
    if not saved:
        save(run, run.config.checkpoint)
    log.warning("SIGTERM: stopped at step %d of %d with checkpoint-%d saved; run the same command to resume",
                run.step, run.total_steps, run.step)
    raise Preempted()


class ExportError(RuntimeError):
    """The final export could not be written (a full disk, any write error); the checkpoints are
    intact, so the same command resumes at the last step and exports again."""


def export(stage: Any, metrics: dict[str, float]) -> Path:
    """OUTPUT/final/: the stage's (EMA) weights, the resolved config and the metrics."""
    run = stage.run
    final = run.run_dir / "final"
    if run.accelerator.is_main_process:
        try:
            write_export(stage, final, metrics)
        except (OSError, SafetensorError) as error:
            raise ExportError(f"could not write the export to {final}: {error}; the checkpoints are intact: free "
                              "space and run the same command to export again") from error
        log.info("exported %s", final)
    run.accelerator.wait_for_everyone()
    return final


def write_export(stage: Any, final: Path, metrics: dict[str, float]) -> None:
    run = stage.run
    with ema_weights(stage):
        stage.export(final)
    save_config(run.config, final / "config.toml")
    payload = {"step": run.step, "skipped_steps": run.guard.state_dict(), "validation": metrics}
    (final / "metrics.json").write_text(json.dumps(payload, indent=2, default=float))
