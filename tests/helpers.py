"""Helpers several test files share (not fixtures: those live in conftest.py): the stage demo
configs, the override lists the stage tests run them with, and the stage-1 launchers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import SMALL_WINDOWS

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "stages/configs/stage1_demo.toml"
DEMO2 = REPO / "stages/configs/stage2_demo.toml"


def overrides(root: Path, csv: Path, out: Path, cache: Path, **extra) -> list[str]:
    """Stage-1 demo overrides for a short run on the generated scenes (64 px, 5-frame windows)."""
    base = {"data.root": root, "data.metadata": csv, "run.output_dir": out, "features.cache_dir": cache,
            "data.height": 64, "data.width": 64, "data.window.num_frames": 5, "data.window.stride": 2,
            "features.windows_per_scene": 2, "heads.features": 16, "optim.max_steps": 6, "optim.warmup_steps": 1,
            "checkpoint.every_steps": 2, "checkpoint.keep_last": 0, "run.val_every": 1000, "run.val_max_windows": 2,
            "log.every_steps": 1, "run.report_splits": "[]"}
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def run_stage1(args: list[str]) -> dict:
    from stages.stage1 import main

    return main(["--config", str(DEMO), *args])


def run_two_process_stage1(args: list[str], port: int) -> subprocess.CompletedProcess:
    """The demo recipe under `accelerate launch --multi_gpu --num_processes 2` (gloo on CPUs)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
               str(port), str(REPO / "stages/stage1.py"), "--config", str(DEMO), *args]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def as_args(values: dict) -> list[str]:
    return [f"{k}={v}" for k, v in values.items()]


def eval_args(generated_dataset, exports, out: Path, **extra) -> list[str]:
    """scripts/evaluate_physics.py arguments for a fast run on the tiny stage-1 / stage-2 ``exports``."""
    root, csv = generated_dataset
    values = {"--stage1": exports[0], "--stage2": exports[1], "--root": root, "--metadata": csv, "--split": "holdout",
              "--out": out, "--cache-dir": out.parent / "eval_cache", "--steps": 2, "--frames": 5, "--size": 64,
              "--cfg-scale": 1.0, "--max-scenes": 2, "--log-level": "WARNING", **extra}
    return [str(x) for kv in values.items() for x in kv if x != ""]


def stage2_args(generated_dataset, stage1_heads, out: Path, **extra) -> list[str]:
    """Stage-2 demo overrides for a 4-step run on top of the ``stage1_heads`` export."""
    root, csv = generated_dataset
    values = {**SMALL_WINDOWS, "data.root": root, "data.metadata": csv, "run.output_dir": out,
              "features.cache_dir": out.parent / "cache2", "objective.heads_dir": stage1_heads,
              "optim.max_steps": 4, "optim.warmup_steps": 1, "checkpoint.every_steps": 2, "checkpoint.keep_last": 0,
              "run.val_split": "", "lora.rank": 4, "lora.alpha": 8.0, "log.every_steps": 1}
    values.update(extra)
    return as_args(values)


def assert_perception_sheet(path: Path, rows: int, frame_hw: tuple[int, int]) -> None:
    """``path`` is a perception contact sheet (heads.visualize) of ``rows`` scenes of frames
    ``frame_hw``: exactly the documented size, and every panel holds a picture, not the background."""
    import numpy as np
    from PIL import Image

    from heads.visualize import (
        BACKGROUND,
        COLUMNS,
        GAP_PX,
        LABEL_PX,
        SHEET_PX,
        TITLE_PX,
    )

    h, w = frame_hw
    scale = SHEET_PX / max(h, w)
    ph, pw = round(h * scale), round(w * scale)
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    expected = (TITLE_PX + rows * ph + (rows - 1) * GAP_PX, LABEL_PX + len(COLUMNS) * pw + (len(COLUMNS) - 1) * GAP_PX)
    assert pixels.shape[:2] == expected, (path.name, pixels.shape, expected)
    for r in range(rows):
        for c in range(len(COLUMNS)):
            y, x = TITLE_PX + r * (ph + GAP_PX), LABEL_PX + c * (pw + GAP_PX)
            panel = pixels[y:y + ph, x:x + pw]
            assert (panel != BACKGROUND).any(axis=-1).mean() > 0.5, (path.name, r, COLUMNS[c])
