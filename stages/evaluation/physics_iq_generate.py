"""Generate the Physics-IQ test videos with the evaluated backbone, base and with the stage-2 LoRA.

Image-to-video protocol of the official README: each take-1 scenario's switch frame
(``switch-frames/{ID}_switch-frames_anyFPS_{perspective}_{scenario}.jpg``) and its description
(descriptions.csv) condition a TI2V rollout through diffsynth's WanVideoPipeline
(`stages.evaluation.rollout`); the video must show the 5 s after the switch frame, so the
rollout has 1 + 5 * fps frames at the backbone's rate (121 at Wan2.2's 24 fps), frame 0 (the
conditioning image) is dropped, and the rest is written as ``MODEL_DIR/{ID}_{perspective}_{scenario}.mp4``
at that rate: the official naming, scoreable by `physics_iq_bench` and by the official tool
(whose real videos must then exist at the same rate, e.g. ``split-videos/testing/24FPS``).
The LoRA run fuses the LoRA into the same DiT and uses the same seeds (seed + case index).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from data import physics_iq_layout as layout
from data.errors import DataFormatError
from data.video_io import write_mp4
from heads.video_metrics import EVAL_SECONDS

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class GenerateConfig:
    """What one generation run needs; sizes default to Wan2.2 TI2V-5B's 720p (1280 x 704)."""

    benchmark: str
    out: str
    stage1: str
    stage2: str = ""
    model_dir: str = ""
    height: int = 704
    width: int = 1280
    seconds: float = EVAL_SECONDS
    steps: int = 30
    cfg_scale: float = 5.0
    seed: int = 0
    max_cases: int = 0
    device: str = ""
    cache_dir: str = "runs/cache"


@dataclass(frozen=True)
class SwitchFrame:
    id: str
    perspective: str
    scenario: str
    path: Path
    prompt: str


def switch_frames(benchmark: str | Path) -> list[SwitchFrame]:
    """Every switch frame with its description (empty when descriptions.csv lacks it), by ID."""
    folder = Path(benchmark) / layout.SWITCH_DIR
    if not folder.is_dir():
        raise DataFormatError(folder, "no switch-frames folder: not a Physics-IQ root")
    descriptions = layout.read_descriptions(benchmark)
    frames = []
    for path in sorted(folder.glob("*.jpg")):
        parts = path.stem.split("_")
        if len(parts) != 5 or parts[1] != "switch-frames" or not parts[0].isdigit():
            raise DataFormatError(path, "not an official switch-frame name "
                                        "({ID}_switch-frames_anyFPS_{perspective}_{scenario}.jpg)")
        prompt = descriptions.get(parts[0], {}).get("description", "")
        frames.append(SwitchFrame(parts[0], parts[3], parts[4], path, prompt))
    if not frames:
        raise DataFormatError(folder, "no .jpg switch frames")
    return frames


def rollout_frames(seconds: float, fps: float) -> int:
    """1 + 4k frames covering ``seconds`` after the conditioning frame (the VAE's 4x time grouping)."""
    return 1 + 4 * math.ceil(seconds * fps / 4)


def load_switch(path: Path, height: int, width: int) -> torch.Tensor:
    """(3, H, W) float in [0, 1], resized (bicubic) to the generation size."""
    image = Image.open(path).convert("RGB").resize((width, height), Image.BICUBIC)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)


def _run_model(pipe, cases: list[SwitchFrame], folder: Path, config: GenerateConfig, fps: float) -> Path:
    from stages.evaluation.rollout import generate

    frames = rollout_frames(config.seconds, fps)
    keep = round(config.seconds * fps)
    for k, case in enumerate(cases):
        video = generate(pipe, load_switch(case.path, config.height, config.width), case.prompt, seed=config.seed + k,
                         frames=frames, steps=config.steps, cfg_scale=config.cfg_scale)
        rgb = (video[1:1 + keep].permute(0, 2, 3, 1).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
        write_mp4(folder / layout.generated_name(case.id, case.perspective, case.scenario), rgb, fps)
    return folder


def generate_benchmark(config: GenerateConfig) -> dict[str, Path]:
    """Model name ('base', and 'lora' with a stage-2 export) -> folder of generated videos."""
    from stages.evaluation import exports as ck
    from stages.evaluation.rollout import build_pipeline
    from stages.features import FeatureSource

    cases = switch_frames(config.benchmark)[: config.max_cases or None]
    stage1 = ck.check_stage_dir(config.stage1, "stage1")
    backbone = ck.backbone_config(ck.stage1_config(stage1).backbone, config.model_dir)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    source = FeatureSource(backbone, device, config.cache_dir)
    pipe, fps = build_pipeline(source), source.preset.fps
    out = {"base": _run_model(pipe, cases, Path(config.out) / "base", config, fps)}
    if config.stage2:
        ck.fuse_stage2_lora(config.stage2, backbone, source.backbone.dit, pipe=pipe)
        out["lora"] = _run_model(pipe, cases, Path(config.out) / "lora", config, fps)
    log.info("%d case(s) at %g fps -> %s", len(cases), fps, ", ".join(str(p) for p in out.values()))
    return out
