"""Stage export directories: existence checks, file hashes, the backbone they were trained on,
their heads, and the checks that the evaluation geometry fits those heads."""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

from heads.io import CONFIG_NAME, WEIGHTS_NAME, HeadLoadError
from stages.evaluation.eval_config import EvalConfig, EvaluationError
from stages.model import HeadPair
from stages.stage1 import Stage1Config
from stages.trainer import ConfigError, load_config
from stages.trainer.sections import BackboneConfig
from world_model.presets import get_preset

log = logging.getLogger(__name__)

LORA_NAME = "lora.safetensors"
STAGE2_HEADS = "heads"


def check_stage_dir(path: str, kind: str) -> Path:
    """The export directory of a stage, or EvaluationError naming what is missing."""
    directory = Path(path)
    required = [CONFIG_NAME, WEIGHTS_NAME] if kind == "stage1" else [LORA_NAME, f"{STAGE2_HEADS}/{CONFIG_NAME}",
                                                                     f"{STAGE2_HEADS}/{WEIGHTS_NAME}"]
    if not directory.is_dir():
        raise EvaluationError(f"{kind} checkpoint directory {directory} does not exist "
                              f"(expected the run's final/ export with {', '.join(required)})")
    missing = [name for name in required if not (directory / name).is_file()]
    if missing:
        raise EvaluationError(f"{kind} checkpoint directory {directory} lacks {', '.join(missing)}")
    return directory


def sha256_files(directory: Path) -> dict[str, str]:
    """sha256 of every file under an export directory, keyed by its path relative to it."""
    hashes = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        hashes[str(path.relative_to(directory))] = digest.hexdigest()
    return hashes


def stage1_config(directory: Path) -> Stage1Config:
    """The resolved config the stage-1 run saved next to its heads."""
    path = directory / "config.toml"
    if not path.is_file():
        raise EvaluationError(f"{path} is missing: the stage-1 export must carry its resolved config")
    try:
        return load_config(Stage1Config, path)
    except ConfigError as error:
        raise EvaluationError(f"cannot read {path}: {error}") from error


def backbone_config(trained: BackboneConfig, model_dir: str) -> BackboneConfig:
    """The backbone the heads were trained on, with local weights from --model-dir when given."""
    if model_dir and not Path(model_dir).is_dir():
        raise EvaluationError(f"--model-dir {model_dir} does not exist")
    return replace(trained, model_dir=model_dir or trained.model_dir)


def load_pair(directory: Path, device) -> HeadPair:
    """A HeadPair (flow, depth) from a head directory, on device, in eval mode."""
    from stages.stage2 import load_stage1_heads

    try:
        return load_stage1_heads(str(directory)).to(device).eval()
    except (HeadLoadError, FileNotFoundError) as error:
        raise EvaluationError(str(error)) from error


@dataclass(frozen=True)
class Geometry:
    """Frames, stride and square size of the evaluation windows and rollouts."""

    frames: int
    stride: int
    size: int


def resolve_geometry(config: EvalConfig, trained: Stage1Config) -> Geometry:
    """CLI values, else the stage-1 run's window and frame size."""
    data = trained.data
    size = config.size or data.height
    return Geometry(frames=config.frames or data.window.num_frames, stride=config.stride or data.window.stride,
                    size=size)


def check_geometry(pair: HeadPair, backbone: BackboneConfig, geometry: Geometry, where: Path) -> None:
    """The heads must fit the backbone's width and taps, and the frames their up-sampling factors."""
    preset = get_preset(backbone.preset)
    taps = preset.taps(tuple(backbone.taps) or None)
    for name, head in (("flow", pair.flow), ("depth", pair.depth)):
        cfg = head.cfg
        if cfg.in_channels != preset.hidden_dim or cfg.num_taps != len(taps):
            raise EvaluationError(f"{name} head in {where} reads {cfg.num_taps} taps of width {cfg.in_channels}, "
                                  f"but backbone preset {preset.name!r} gives {len(taps)} taps of width "
                                  f"{preset.hidden_dim}")
        if geometry.size % cfg.spatial_factor:
            raise EvaluationError(f"--size {geometry.size} is not a multiple of the heads' spatial factor "
                                  f"{cfg.spatial_factor} ({where})")
        if (geometry.frames - 1) % cfg.temporal_factor:
            raise EvaluationError(f"--frames {geometry.frames} is not 1 + {cfg.temporal_factor}k, which the "
                                  f"heads in {where} need")
    try:
        preset.check_video_size(geometry.frames, geometry.size, geometry.size)
    except ValueError as error:
        raise EvaluationError(f"frames/size do not fit backbone {preset.name!r}: {error}") from error


def check_stage2_backbone(stage2: Path, backbone: BackboneConfig) -> None:
    """The LoRA must have been trained on the same backbone as the stage-1 heads."""
    from stages.stage2 import Stage2Config

    path = stage2 / "config.toml"
    if not path.is_file():
        log.warning("%s has no config.toml; cannot check that the LoRA fits backbone %s", stage2, backbone.preset)
        return
    try:
        other = load_config(Stage2Config, path).backbone
    except ConfigError as error:
        raise EvaluationError(f"cannot read {path}: {error}") from error
    if (other.preset, other.seed if not other.model_dir else 0) != (backbone.preset, backbone.seed if not backbone.model_dir else 0):
        raise EvaluationError(f"stage-2 run {stage2} used backbone {other.preset!r} (seed {other.seed}), "
                              f"stage 1 used {backbone.preset!r} (seed {backbone.seed})")


def fuse_stage2_lora(path: str, backbone: BackboneConfig, dit, pipe=None) -> Path:
    """Check a stage-2 export (its files, the backbone it was trained on) and fuse its LoRA into
    ``dit`` through diffsynth's own loader; -> the export directory."""
    from world_model.lora_export import load_lora_into_dit

    stage2 = check_stage_dir(path, "stage2")
    check_stage2_backbone(stage2, backbone)
    load_lora_into_dit(dit, stage2 / LORA_NAME, pipe=pipe)
    return stage2


def finite(value):
    """NaN / inf -> None, recursively, so metrics.json and verify.json are strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
