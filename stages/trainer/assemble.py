"""Build the generic TrainRun of either stage: optimizer over what trains, sampler, loader, schedule,
guard, tracker and EMA, with the model and optimizer prepared by accelerate."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from stages.trainer import (
    EMA,
    NonFiniteGuard,
    ResumableSampler,
    build_tracker,
    make_generator,
    scheduler_from_config,
    seed_worker,
    to_dict,
)
from stages.trainer import backend as backends
from stages.trainer.bad_samples import BadSampleLog, SkippingDataset
from stages.trainer.loop import TrainRun
from stages.trainer.preemption import shield_worker
from stages.trainer.sections import OptimConfig
from stages.trainer.tracking import PhaseTimer

log = logging.getLogger(__name__)


def init_train_worker(worker_id: int) -> None:
    """Each training-loader worker: its own seed, and it outlives a SIGTERM to the process group."""
    seed_worker(worker_id)
    shield_worker()


def make_optimizer(model: nn.Module, optim: OptimConfig, device: torch.device,
                   lr_scales: Mapping[str, float] | None = None) -> torch.optim.Optimizer:
    """AdamW over what trains; fused on CUDA (one kernel for all parameters, not a few per tensor).

    ``lr_scales`` maps a parameter-name prefix to a factor on ``optim.lr`` (first match wins, the
    rest get 1): e.g. pretrained heads fine-tuned slower than a fresh LoRA.  One param group per
    factor, so the schedule scales every group alike."""
    groups: dict[float, list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            scale = next((s for prefix, s in (lr_scales or {}).items() if name.startswith(prefix)), 1.0)
            groups.setdefault(scale, []).append(param)
    if not groups:
        raise ValueError("nothing to train: no parameter requires grad")
    return torch.optim.AdamW([{"params": params, "lr": optim.lr * scale} for scale, params in groups.items()],
                             lr=optim.lr, betas=optim.betas, eps=optim.eps, weight_decay=optim.weight_decay,
                             fused=True if device.type == "cuda" else None)


def make_step_run(accelerator, model: nn.Module, optim: OptimConfig) -> TrainRun:
    """A TrainRun holding what ``optimizer_step`` needs and nothing else (no data, a constant
    schedule, no EMA, phase timers on): how the benchmarks time the trainer's own step, with the
    same optimizer and backend, on inputs they make up."""
    backend = backends.prepare(accelerator, model, make_optimizer(model, optim, accelerator.device), 1,
                               optim.grad_accum, optim.grad_clip)
    scheduler = torch.optim.lr_scheduler.LambdaLR(backend.optimizer, lambda step: 1.0)
    return TrainRun(accelerator=accelerator, backend=backend, model=backend.model, optimizer=backend.optimizer,
                    scheduler=scheduler, sampler=None, loader=None, guard=NonFiniteGuard(), tracker=None,
                    run_dir=None, total_steps=0, config=None, timer=PhaseTimer(accelerator.device))


def make_train_run(config: Any, accelerator, model: nn.Module, train_set: Dataset,
                   sampler: ResumableSampler | None = None, lr_scales: Mapping[str, float] | None = None) -> TrainRun:
    """``config`` needs the run, optim, ema, guard and log sections shared by both stage configs;
    ``sampler`` replaces the seeded shuffle (e.g. a curriculum), sharded over the same processes;
    ``lr_scales`` as in `make_optimizer`."""
    optim = config.optim
    optimizer = make_optimizer(model, optim, accelerator.device, lr_scales)
    backend = backends.prepare(accelerator, model, optimizer, config.run.batch_size, optim.grad_accum, optim.grad_clip)
    model, optimizer = backend.model, backend.optimizer
    run_dir, data, bad_samples = Path(config.run.output_dir), getattr(config, "data", None), None
    if data is not None:  # items carry read failures instead of raising them: stages/trainer/bad_samples.py
        train_set = SkippingDataset(train_set)
        bad_samples = BadSampleLog(run_dir, data.on_error, data.max_bad_samples, accelerator.process_index)
    # The sampler shards by rank itself, so the loader is not passed through accelerate.prepare.
    if sampler is None:
        sampler = ResumableSampler(train_set, accelerator.num_processes, accelerator.process_index, seed=config.run.seed)
    # Its own generator: creating a loader iterator must not draw from the global RNG, or a resumed
    # run (which creates its iterator at a different point) would see different random numbers.
    # Pinned batches make the copies in stages.trainer.prefetch asynchronous on CUDA.
    loader = DataLoader(train_set, batch_size=config.run.batch_size, sampler=sampler,
                        num_workers=config.run.num_workers, worker_init_fn=init_train_worker,
                        generator=make_generator(config.run.seed), pin_memory=accelerator.device.type == "cuda")
    total_steps = optim.total_steps(len(loader))
    sampler.plan_run(total_steps * optim.grad_accum * config.run.batch_size * accelerator.num_processes)
    ema = None
    if config.ema.enabled:
        ema = EMA(accelerator.unwrap_model(model), decay=config.ema.decay, update_every=config.ema.update_every)
    return TrainRun(accelerator=accelerator, backend=backend, model=model, optimizer=optimizer,
                    scheduler=scheduler_from_config(optimizer, optim, total_steps), sampler=sampler, loader=loader,
                    guard=NonFiniteGuard(config.guard.max_consecutive_nonfinite),
                    tracker=build_tracker(config.log, run_dir, to_dict(config), accelerator.is_main_process),
                    run_dir=run_dir, total_steps=total_steps, config=config, ema=ema, bad_samples=bad_samples,
                    timer=PhaseTimer(accelerator.device, enabled=False))
