"""The training loop both stages share: accumulation, guard, clipping, EMA, schedule, checkpoints.

A stage supplies ``loss_fn(batch, micro) -> (loss, metrics)`` and the trainable module; everything
about stepping, saving and exact resumption lives here once.  Exact resume rests on four facts:
the sampler records how many samples each epoch has consumed; data randomness is a function of
(seed, epoch, index); checkpoints hold optimizer, scheduler, EMA, guard and every rank's RNG;
and the step counter counts optimizer steps, so the schedule continues where it stopped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader

from stages.trainer import (
    EMA,
    CheckpointError,
    NonFiniteGuard,
    ResumableSampler,
    Tracker,
    all_ranks,
    capture_rng_all_ranks,
    format_step_line,
    list_checkpoints,
    load_checkpoint,
    load_scheduler_state,
    peak_memory_gib,
    resolve_resume,
    restore_rng,
    rng_for_rank,
    save_checkpoint,
)
from stages.trainer.backend import AccelerateBackend
from stages.trainer.bad_samples import BAD_KEY, BadSampleLog
from stages.trainer.config import ConfigError
from stages.trainer.prefetch import prefetch_to_device
from stages.trainer.sections import CheckpointConfig, OptimConfig
from stages.trainer.tracking import PhaseTimer

log = logging.getLogger(__name__)
LossFn = Callable[[dict, int], tuple[torch.Tensor, dict[str, torch.Tensor]]]
"""``loss_fn(batch, micro) -> (loss, metrics)``; ``micro`` counts the micro-batches of the step."""


@dataclass
class TrainRun:
    """Everything a running stage holds; ``step`` counts optimizer steps taken."""

    accelerator: Any
    backend: AccelerateBackend
    """How gradients are made, synchronised and applied (one process, DDP or ZeRO): stages.trainer.backend."""
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    sampler: ResumableSampler
    loader: DataLoader
    guard: NonFiniteGuard
    tracker: Tracker
    run_dir: Path
    total_steps: int
    config: Any
    ema: EMA | None = None
    bad_samples: BadSampleLog | None = None
    """Failures the training set's items carried (stages/trainer/bad_samples.py); None in benchmarks."""
    step: int = 0
    timer: PhaseTimer = field(default_factory=lambda: PhaseTimer(enabled=False))

    @property
    def unwrapped(self) -> nn.Module:
        return self.accelerator.unwrap_model(self.model)


def batch_stream(run: TrainRun) -> Iterator[dict]:
    """Batches on the device across epochs (copied one batch ahead on a GPU), reporting what is
    handed out to the sampler so checkpoints know the position."""
    epoch = run.sampler.epoch
    while True:
        run.sampler.set_epoch(epoch)
        dataset = run.loader.dataset
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        for batch in prefetch_to_device(run.loader, run.accelerator.device):
            run.sampler.advance(run.loader.batch_size or 1)
            if run.bad_samples is not None:
                run.bad_samples.take(batch, run.step, epoch)
            batch.pop(BAD_KEY, None)
            yield batch
        epoch += 1


def optimizer_step(run: TrainRun, stream: Iterator[dict], loss_fn: LossFn, optim: OptimConfig) -> dict[str, float]:
    """One optimizer step over ``grad_accum`` micro-batches; a non-finite loss or gradient norm skips
    the update (and counts toward the guard's limit).  ``loss_fn`` gets the micro-batch's index within
    the step, so a recipe that draws randomness per micro-batch keeps no counter of its own."""
    backend, total, metrics = run.backend, torch.zeros((), device=run.accelerator.device), {}
    for micro in range(optim.grad_accum):
        last = micro == optim.grad_accum - 1
        with run.timer.phase("data"):
            batch = next(stream)
        with backend.accumulate(last), run.timer.phase("forward_backward"):
            with backend.autocast():
                loss, parts = loss_fn(batch, micro)
            total = total + loss.detach() / optim.grad_accum
            backend.backward(loss / optim.grad_accum, last, total)
        for key, value in parts.items():
            metrics[key] = metrics.get(key, 0.0) + float(value) / optim.grad_accum
    with run.timer.phase("optimizer"):
        if not run.guard.check(total, step=run.step):
            backend.discard_gradients()
            return {"loss": float("nan"), "skipped": 1.0}
        norm = backend.apply_gradients(optim.grad_clip)
        if norm is not None and not run.guard.check_grad_norm(norm, step=run.step):
            return {"loss": float(total), "skipped": 1.0}
        run.scheduler.step()
        if run.ema is not None:
            run.ema.update(run.unwrapped)
    run.step += 1
    if norm is not None:
        metrics["grad_norm"] = norm
    return {**metrics, "loss": float(total), "lr": run.scheduler.get_last_lr()[0]}


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only what trains (all heads in stage 1; LoRA, and heads when co-trained, in stage 2):
    the frozen 5B backbone is never re-saved."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach() for k, v in model.state_dict().items() if k in names}


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor], where: Path) -> None:
    """Strict about the trainable part: every trainable tensor must be in the checkpoint with its
    shape, nothing else, so a changed architecture is named rather than dumped by torch."""
    expected = trainable_state(model)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    reshaped = [f"{k} {tuple(state[k].shape)} -> {tuple(v.shape)}" for k, v in expected.items()
                if k in state and state[k].shape != v.shape]
    if missing or unexpected or reshaped:
        raise ConfigError(f"{where}: checkpoint does not match the trainable parameters of this run (missing "
                          f"{missing[:3]}, unexpected {unexpected[:3]}, shape changed {reshaped[:3]}); was the config "
                          "changed? Resume with the config saved beside the checkpoint, or use a new run.output_dir")
    model.load_state_dict(state, strict=False)


def check_init_from(folder: str | Path) -> Path:
    """``checkpoint.init_from`` must name a checkpoint folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"checkpoint.init_from={str(folder)!r} is not a checkpoint folder")
    return folder


def init_weights(run: TrainRun, folder: Path) -> None:
    """Start a fresh run from another run's weights (and EMA); optimizer, schedule, data order and
    step count start anew, so a finished run can train longer under a schedule of its own."""
    saved = load_checkpoint(check_init_from(folder))
    load_trainable_state(run.unwrapped, saved.tensors["trainable"], folder)
    run.backend.weights_loaded()
    if run.ema is not None:
        if "ema" in saved.tensors:
            run.ema.load_state_dict(saved.tensors["ema"])
        else:
            run.ema.restart_from(run.unwrapped)
    log.info("initialised the weights from %s (step %d of that run); training starts at step 0", folder, saved.step)


def refuse_to_mix_runs(run_dir: Path) -> None:
    """Starting fresh where another run left checkpoints would interleave the two: pruning would
    delete the new run's checkpoints and a later --resume latest would pick the old run's."""
    found = list_checkpoints(run_dir)
    if found:
        raise ConfigError(f"{run_dir} already holds checkpoints (newest: {found[-1][1].name}) and resume=none starts "
                          "a new run: use a new run.output_dir, or delete them")


def save(run: TrainRun, ckpt: CheckpointConfig) -> None:
    """Checkpoint on the main process (RNG of every rank gathered first: a collective)."""
    rng = capture_rng_all_ranks()
    optimizer = run.backend.optimizer_state()
    if run.accelerator.is_main_process:
        tensors = {"trainable": trainable_state(run.unwrapped)}
        if run.ema is not None:
            tensors["ema"] = run.ema.state_dict()
        save_checkpoint(run.run_dir, run.step, tensors=tensors,
                        state={"optimizer": optimizer, "scheduler": run.scheduler.state_dict()},
                        meta={"step": run.step, "total_steps": run.total_steps, "sampler": run.sampler.state_dict(),
                              "guard": run.guard.state_dict(),
                              "bad_samples": run.bad_samples.state_dict() if run.bad_samples else None},
                        rng={"ranks": rng}, config=run.config, keep_last=ckpt.keep_last)
    run.accelerator.wait_for_everyone()


def _resolve_on_main(run: TrainRun, ckpt: CheckpointConfig) -> Path | None:
    """The checkpoint to resume from, chosen by the main process alone (it hashes the files and
    moves damaged ones aside; ranks doing it at once would race on the renames) and shared with
    every rank; a CheckpointError there is raised on every rank."""
    answer: Path | CheckpointError | None
    if run.accelerator.is_main_process:
        try:
            answer = resolve_resume(run.run_dir, ckpt.resume, ckpt.start_fresh_if_damaged)
        except CheckpointError as error:
            answer = error
    else:
        answer = None
    answer = all_ranks(answer)[0]
    if isinstance(answer, CheckpointError):
        raise answer
    return answer


def resume(run: TrainRun, ckpt: CheckpointConfig) -> bool:
    """Restore the newest (or a named) checkpoint; returns False when starting fresh."""
    path = _resolve_on_main(run, ckpt)
    if path is None:
        refuse_to_mix_runs(run.run_dir)
        if ckpt.init_from:
            init_weights(run, Path(ckpt.init_from))
        return False
    saved = load_checkpoint(path, verify=False)  # resolve_resume has just verified it
    check_same_schedule(saved.meta.get("total_steps"), run.total_steps, path)
    load_trainable_state(run.unwrapped, saved.tensors["trainable"], path)
    if run.ema is not None:
        run.ema.load_state_dict(saved.tensors["ema"])
    run.backend.load_optimizer_state(saved.state["optimizer"])
    load_scheduler_state(run.scheduler, saved.state["scheduler"])
    run.sampler.load_state_dict(saved.meta["sampler"])
    run.guard.load_state_dict(saved.meta["guard"])
    if run.bad_samples is not None:
        run.bad_samples.load_state_dict(saved.meta.get("bad_samples"))
    run.step = int(saved.meta["step"])
    mine = rng_for_rank(saved.rng["ranks"], run.accelerator.process_index)
    if mine is not None:
        restore_rng(mine)
    log.info("resumed from %s at step %d", path, run.step)
    return True


def mean_over_ranks(metrics: dict[str, float]) -> dict[str, float]:
    """Each rank's loss terms cover only its own micro-batches; the log shows their mean over ranks.
    Gathered as objects, per key over the ranks that report it, so a data-dependent term present on
    one rank only cannot desynchronise a collective. Collective: call on every rank."""
    gathered = all_ranks(metrics)
    if len(gathered) == 1:
        return metrics
    keys = dict.fromkeys(key for ranked in gathered for key in ranked)
    return {key: sum(r[key] for r in gathered if key in r) / sum(key in r for r in gathered) for key in keys}


def check_same_schedule(saved_total: int | None, total: int, where: Path) -> None:
    """The restored LR schedule decays over the saved number of steps; a run that computes another
    total (from epochs, with a different process count, batch or data) would train past its end
    at the floor learning rate, and over more data than one epoch holds."""
    if saved_total is not None and int(saved_total) != total:
        raise ConfigError(
            f"{where}: this checkpoint's schedule has {saved_total} optimizer steps, but this run computes {total} "
            "(another number of processes, batch size, grad_accum, epochs or data set?). To continue it, set "
            f"optim.max_steps={saved_total}; to train a new schedule from its weights, use a new run.output_dir "
            f"with checkpoint.init_from={where}.")


def log_step(run: TrainRun, metrics: dict[str, float], samples: int, seconds: float) -> None:
    """Collective (metrics are averaged over ranks): every rank calls it at the same steps."""
    metrics = {**mean_over_ranks(metrics), "samples_per_s": samples / max(seconds, 1e-9),
               "memory_gib": peak_memory_gib(run.accelerator.device)}
    run.tracker.log(metrics, run.step)
    if run.accelerator.is_main_process:
        log.info(format_step_line(run.step, metrics, run.total_steps))

