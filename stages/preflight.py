"""What a launch can check in one process before it starts several: the config's values and the
files it names.

A mistake found inside a multi-process launch is printed once per rank and then buried under
torchrun's failure summary, after every process has loaded torch and claimed its GPU.  The
launcher runs these checks first (``stage*.py --preflight``), with the same functions training
calls later, so a wrong path or value ends with one line and exit status 2.  Checks that read
checkpoints (a changed config on resume, say) stay with training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from data.metadata import read_metadata
from stages.common import ConfigError, resolve_resume
from stages.common.tracking import check_backend
from world_model.loading import WeightsLayout


def check_init_from(folder: str | Path) -> Path:
    """``checkpoint.init_from`` must name a checkpoint folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"checkpoint.init_from={str(folder)!r} is not a checkpoint folder")
    return folder


def preflight(config: Any) -> None:
    """Raise the error training would raise later for a missing or malformed input (either stage)."""
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
