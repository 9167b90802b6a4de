"""On-disk format of generated scenes (identical to the real sim_physics data).

``ROOT/<scene>/env_0/0/0/{rgb/step_XXXX.png, motion_vectors/step_XXXX.npy,
distance_to_camera/step_XXXX.npy, scene.json}``.  A scene is written into a hidden temporary
directory under ROOT and renamed into place only when complete, so a killed run never leaves a
half-written scene that a reader would accept.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from data.layout import DEPTH_DIR, FLOW_DIR, RGB_DIR, SCENE_SUBPATH

TMP_PREFIX = ".tmp-"
SCENE_JSON = "scene.json"


def scene_name(family: str, seed: int) -> str:
    """``ball_collide_00012``: family plus zero-padded seed, unique per (family, seed)."""
    return f"{family}_{seed:05d}"


def step_name(step: int) -> str:
    return f"step_{step:04d}"


class SceneWriter:
    """Writes one scene's frames into a temp dir; :meth:`commit` moves it to ``root/name``."""

    def __init__(self, root: Path, name: str) -> None:
        self.final = root / name
        self.tmp = root / f"{TMP_PREFIX}{name}-{os.getpid()}"
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.leaf = self.tmp / SCENE_SUBPATH
        for sub in (RGB_DIR, FLOW_DIR, DEPTH_DIR):
            (self.leaf / sub).mkdir(parents=True)

    def write_frame(self, step: int, rgb: np.ndarray, motion: np.ndarray, distance: np.ndarray) -> None:
        """rgb (H,W,3) uint8; motion (H,W,4) float32; distance (H,W) float32."""
        name = step_name(step)
        # Low zlib effort: PNG is lossless either way and encoding dominates at 480².
        Image.fromarray(rgb).save(self.leaf / RGB_DIR / f"{name}.png", compress_level=1)
        np.save(self.leaf / FLOW_DIR / f"{name}.npy", motion.astype(np.float32, copy=False))
        np.save(self.leaf / DEPTH_DIR / f"{name}.npy", distance.astype(np.float32, copy=False))

    def write_json(self, meta: dict) -> None:
        with open(self.leaf / SCENE_JSON, "w") as f:
            json.dump(json_safe(meta), f, indent=1)

    def commit(self, overwrite: bool) -> None:
        """Atomically publish the scene; an existing one is replaced only with ``overwrite``."""
        if self.final.exists():
            if not overwrite:
                raise FileExistsError(self.final)
            trash = self.final.with_name(f"{TMP_PREFIX}old-{self.final.name}-{os.getpid()}")
            os.rename(self.final, trash)
            shutil.rmtree(trash)
        os.rename(self.tmp, self.final)

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def clean_stale_tmp(root: Path) -> int:
    """Remove temp dirs left by killed runs; returns how many were removed."""
    stale = [p for p in root.glob(f"{TMP_PREFIX}*") if p.is_dir()] if root.is_dir() else []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return len(stale)


def json_safe(value):
    """JSON has no inf: write it as the string "inf" (the documented background value)."""
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
