"""Second takes: a scene re-simulated as a re-recording would differ, for Physics-IQ's physical variance.

Physics-IQ films every scenario twice and normalises its metrics by how much the two real takes
differ. Take 2 here is the same scene (same attempt, so the same look, camera and bodies) whose
free bodies start a few millimetres away and a few mm/s faster or slower than in take 1: the
spread a hand placing the objects again would leave. Horizontal positions only, so a body resting
on a surface is not pushed into it; velocities in all three axes. The perturbation has its own
random stream per (family, seed, attempt, take), so take 2 is reproducible.

Layout: take 2 is written to ``ROOT/<scene>/env_0/0/1`` (``data.layout.TAKE_SUBPATHS``), beside
take 1, atomically, with ``scene.json["take"]`` recording the offsets applied.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from data.layout import DEPTH_DIR, FLOW_DIR, RGB_DIR, SCENE_SUBPATH, TAKE_SUBPATHS
from data.sim.generate import GenConfig, SceneJob, generate_scene, run_pool, simulate
from data.sim.writer import SCENE_JSON, TMP_PREFIX, SceneWriter, json_safe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TakeNoise:
    """How far a re-recording's start differs from take 1's (standard deviations per axis)."""

    position_mm: float = 3.0
    """Horizontal (x, y) offset of each free body's start, mm."""
    velocity_mm_s: float = 5.0
    """Offset of each free body's initial linear velocity (x, y, z), mm/s."""

    def __post_init__(self) -> None:
        if self.position_mm < 0 or self.velocity_mm_s < 0:
            raise ValueError(f"take noise must be >= 0, got {self}")


def take_rng(family: str, seed: int, attempt: int, take: int) -> np.random.Generator:
    """A stream per take, separate from the physics, look and violation streams."""
    return np.random.default_rng([seed, zlib.crc32(family.encode()), attempt, zlib.crc32(f"take{take}".encode())])


def perturber(noise: TakeNoise, rng: np.random.Generator, take: int):
    """``perturb(client, movers) -> record`` for ``generate.simulate``: offsets every free body."""

    def perturb(client, movers) -> dict:
        offsets = {}
        for obj in movers:
            dp = np.array([*rng.normal(0.0, noise.position_mm, 2), 0.0]) / 1000.0
            dv = rng.normal(0.0, noise.velocity_mm_s, 3) / 1000.0
            position, orientation = client.getBasePositionAndOrientation(obj.body_id)
            linear, angular = client.getBaseVelocity(obj.body_id)
            client.resetBasePositionAndOrientation(obj.body_id, np.add(position, dp).tolist(), orientation)
            client.resetBaseVelocity(obj.body_id, np.add(linear, dv).tolist(), angular)
            offsets[obj.name] = {"position_m": dp.tolist(), "velocity_m_s": dv.tolist()}
        return {"number": take, "noise": asdict(noise), "offsets": offsets}

    return perturb


class TakeWriter(SceneWriter):
    """Writes one take into a hidden folder beside take 1 and renames it into place when complete."""

    def __init__(self, root: Path, name: str, take: int) -> None:
        self.final = root / name / TAKE_SUBPATHS[take]
        self.tmp = self.final.with_name(f"{TMP_PREFIX}take{take}-{os.getpid()}")
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.leaf = self.tmp
        for sub in (RGB_DIR, FLOW_DIR, DEPTH_DIR):
            (self.leaf / sub).mkdir(parents=True)


def generate_take(root: Path, job: SceneJob, cfg: GenConfig, noise: TakeNoise, take: int = 2,
                  overwrite: bool = False) -> str:
    """Take ``take`` of an existing scene; returns 'written' or 'skipped' (already there)."""
    leaf = root / job.name / SCENE_SUBPATH
    if (root / job.name / TAKE_SUBPATHS[take]).exists() and not overwrite:
        return "skipped"
    meta = json.loads((leaf / SCENE_JSON).read_text())
    if meta["config"] != json.loads(json.dumps(json_safe(asdict(cfg)))):
        raise ValueError(f"{leaf} was generated with other settings; use --overwrite")
    writer = TakeWriter(root, job.name, take)
    try:
        rng = take_rng(job.family, job.seed, meta["attempt"], take)
        take_meta, _ = simulate(job, cfg, meta["attempt"], writer, perturb=perturber(noise, rng, take))
        writer.write_json(take_meta)
        writer.commit(overwrite)
    finally:
        writer.discard()
    return "written"


def _takes_worker(args: tuple[Path, SceneJob, GenConfig, int, TakeNoise, bool]):
    root, job, cfg, takes, noise, overwrite = args
    start = time.perf_counter()
    status = generate_scene(root, job, cfg, overwrite)
    for take in range(2, takes + 1):
        status += f"+take{take} " + generate_take(root, job, cfg, noise, take, overwrite)
    return job.name, status, time.perf_counter() - start


def generate_with_takes(root: Path, jobs: list[SceneJob], cfg: GenConfig, takes: int = 2,
                        noise: TakeNoise = TakeNoise(), workers: int = 1, overwrite: bool = False,
                        progress: bool = True) -> dict[str, str]:
    """Take 1 of every job (as ``generate_many``) and takes 2..``takes`` beside it; name -> status."""
    if takes not in TAKE_SUBPATHS:
        raise ValueError(f"--takes must be one of {sorted(TAKE_SUBPATHS)}, got {takes}")
    root.mkdir(parents=True, exist_ok=True)
    return run_pool(_takes_worker, [(root, job, cfg, takes, noise, overwrite) for job in jobs], workers, progress)
