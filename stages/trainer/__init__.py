"""Training machinery shared by stage 1 (heads) and stage 2 (LoRA): the entry point and step loop
(runner, loop), the backend that hides the parallelism (backend: one process, DDP or ZeRO), config
loading and the shared config sections, LR schedule, EMA, non-finite-loss guard, atomic
checkpoints with RNG state, metric tracking, seeding and a resumable distributed sampler.
Stages import from here; nothing here knows a stage's model or loss: the stage supplies them.
"""

from stages.trainer.checkpoint import (
    Checkpoint,
    CheckpointError,
    latest_checkpoint,
    latest_intact_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    resolve_resume,
    save_checkpoint,
    verify_checkpoint,
)
from stages.trainer.config import ConfigError, load_config, parse_cli, split_cli
from stages.trainer.config_text import field_docs, help_text, missing_docstrings, save_config, to_dict
from stages.trainer.ema import EMA
from stages.trainer.guard import NonFiniteGuard, NonFiniteLossError
from stages.trainer.rng import (
    all_ranks,
    capture_rng,
    capture_rng_all_ranks,
    make_generator,
    restore_rng,
    rng_for_rank,
    seed_everything,
    seed_worker,
    set_determinism,
)
from stages.trainer.sampler import ResumableSampler
from stages.trainer.schedule import WarmupCosine, load_scheduler_state, scheduler_from_config, warmup_cosine
from stages.trainer.sections import CheckpointConfig, EMAConfig, GuardConfig, LogConfig, OptimConfig
from stages.trainer.tracking import Tracker, build_tracker, format_step_line, peak_memory_gib, read_metrics

__all__ = [
    "EMA", "Checkpoint", "CheckpointError", "all_ranks", "CheckpointConfig", "ConfigError", "EMAConfig", "GuardConfig", "LogConfig",
    "NonFiniteGuard", "NonFiniteLossError", "OptimConfig", "ResumableSampler", "Tracker", "WarmupCosine",
    "build_tracker", "capture_rng", "capture_rng_all_ranks", "field_docs", "format_step_line", "help_text",
    "latest_checkpoint", "latest_intact_checkpoint", "list_checkpoints", "load_checkpoint", "load_config", "load_scheduler_state", "make_generator",
    "missing_docstrings", "parse_cli", "peak_memory_gib", "prune_checkpoints", "read_metrics", "resolve_resume",
    "restore_rng", "rng_for_rank", "save_checkpoint", "save_config", "scheduler_from_config", "seed_everything",
    "seed_worker", "set_determinism", "split_cli", "to_dict", "verify_checkpoint", "warmup_cosine",
]
