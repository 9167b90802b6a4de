"""Plausible/implausible pairs: a scene's plausible take and its variants, plus the manifest.

The plausible take is generated exactly as ``generate_scene`` does (retries on low motion
included) and written as ``<family>_<seed>``.  Each variant ``<family>_<seed>_<kind>`` is then
planned from what that take wrote (its attempt, poses and motion) and simulated once with the same
attempt, so look, camera, bodies and start are the same.  ``ROOT/pairs.csv`` lists every
variant under ROOT with its plausible scene.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
import zlib
from dataclasses import asdict
from pathlib import Path

import numpy as np

from data.layout import FLOW_DIR, SCENE_SUBPATH
from data.metadata_split import discover_scenes
from data.sim.bodies import GRAVITY
from data.sim.generate import (
    GenConfig,
    SceneJob,
    frame_moves,
    generate_scene,
    run_pool,
    simulate,
)
from data.sim.violations import GRAVITY_FACTORS, HIDDEN_Z, KINDS, Violation
from data.sim.writer import SCENE_JSON, SceneWriter, json_safe, step_name

log = logging.getLogger(__name__)

MANIFEST = "pairs.csv"
TELEPORT_RANGE = (0.15, 0.3)
"""Teleport distance (m): a couple of body sizes, sideways to the camera so the jump is seen."""
REST_FRAMES = 4
"""A clip ends at rest (and may be played backwards) if none of its last frames shows motion."""
SPEEDUP = 2
"""speed_change: substeps per frame after the switch, as a multiple of the normal count."""


class NotApplicable(Exception):
    """The kind cannot be shown in this scene (the message says why)."""


def variant_name(job: SceneJob, kind: str) -> str:
    """``ball_collide_00012_gravity_up``: the plausible scene's name plus the kind."""
    return f"{job.name}_{kind}"


def violation_rng(family: str, seed: int, attempt: int, kind: str) -> np.random.Generator:
    """A stream per variant, separate from the physics and look streams."""
    return np.random.default_rng([seed, zlib.crc32(family.encode()), attempt, zlib.crc32(kind.encode())])


def plan_violation(kind: str, meta: dict, leaf: Path) -> Violation:
    """Parameters of ``kind`` for the plausible take in ``leaf`` (its ``scene.json`` is ``meta``);
    raises :class:`NotApplicable` when the scene cannot show it."""
    if kind in GRAVITY_FACTORS:
        factor = GRAVITY_FACTORS[kind]
        return Violation(kind, {"factor": factor, "gravity": [0.0, 0.0, -GRAVITY * factor]})
    movers = [o for o in meta["objects"] if not o["static"]]
    if kind == "pass_through":
        return Violation(kind, {"from_frame": 0, "bodies": [o["body_id"] for o in movers]})
    if kind == "speed_change":
        normal = meta["sim_hz"] // meta["fps"]
        return Violation(kind, {"switch_frame": meta["num_frames"] // 2,
                                "substeps_per_frame": [normal, SPEEDUP * normal]})
    if kind == "time_reversed":
        _require_rest(leaf, meta["num_frames"])
        return Violation(kind, {"rest_frames": REST_FRAMES})
    pinned = {c["body_id"] for c in meta["constraints"]}
    # A pin would pull a teleported body straight back; a vanished body's pins are released.
    candidates = [o for o in movers if kind == "vanish" or o["body_id"] not in pinned]
    body, frame = _fastest(candidates, meta["num_frames"])
    common = {"frame": frame, "body_id": body["body_id"], "body": body["name"]}
    if kind == "vanish":
        return Violation(kind, {**common, "hidden_position": [0.0, 0.0, HIDDEN_Z]})
    rng = violation_rng(meta["family"], meta["seed"], meta["attempt"], kind)
    size = rng.uniform(*TELEPORT_RANGE) * rng.choice([-1.0, 1.0])
    dx, dy, _ = size * _camera_right(meta["camera"])
    return Violation(kind, {**common, "offset": [float(dx), float(dy), 0.0]})


def _fastest(objects: list[dict], frames: int) -> tuple[dict, int]:
    """The body and frame of the largest frame-to-frame move within the middle half of the clip."""
    first, stop = max(1, frames // 4), max(2, frames - frames // 4)
    best, best_step = None, 0.0
    for obj in objects:
        position = np.asarray(obj["poses"])[:, :3]
        steps = np.linalg.norm(np.diff(position, axis=0), axis=1)  # steps[t-1]: t-1 -> t
        t = first + int(np.argmax(steps[first - 1:stop - 1]))
        if steps[t - 1] > best_step:
            best, best_step = (obj, t), float(steps[t - 1])
    if best is None:
        raise NotApplicable("no free body moves in the middle half of the clip")
    return best


def _camera_right(camera: dict) -> np.ndarray:
    """Unit horizontal vector perpendicular to the camera's forward axis."""
    forward = np.subtract(camera["target"], camera["position"])
    right = np.array([forward[1], -forward[0], 0.0])
    return right / np.linalg.norm(right)


def _require_rest(leaf: Path, frames: int) -> None:
    """Backwards playback must start from rest, else its first frame gives the reversal away."""
    for t in range(max(1, frames - REST_FRAMES), frames):
        if frame_moves(np.load(leaf / FLOW_DIR / f"{step_name(t)}.npy")):
            raise NotApplicable(f"frame {t} of the last {REST_FRAMES} still moves (not at rest)")


def write_variant(root: Path, job: SceneJob, cfg: GenConfig, attempt: int, violation: Violation,
                  overwrite: bool) -> None:
    """Simulate ``violation`` with the plausible take's attempt and publish it atomically."""
    writer = SceneWriter(root, variant_name(job, violation.kind))
    try:
        meta, _ = simulate(job, cfg, attempt, writer, violation)
        writer.write_json(meta)
        writer.commit(overwrite)
    finally:
        writer.discard()


def generate_pair(root: Path, job: SceneJob, cfg: GenConfig, kinds: tuple[str, ...],
                  overwrite: bool = False) -> dict[str, str]:
    """The plausible take and each kind's variant; returns name -> 'written' | 'low-motion' |
    'skipped' (already there) | 'not-applicable'."""
    statuses = {job.name: generate_scene(root, job, cfg, overwrite)}
    leaf = root / job.name / SCENE_SUBPATH
    meta = json.loads((leaf / SCENE_JSON).read_text())
    if meta["config"] != json.loads(json.dumps(json_safe(asdict(cfg)))):
        raise ValueError(f"{job.name} was generated with other settings; use --overwrite")
    for kind in kinds:
        name = variant_name(job, kind)
        if (root / name).exists() and not overwrite:
            statuses[name] = "skipped"
            continue
        try:
            violation = plan_violation(kind, meta, leaf)
        except NotApplicable as reason:
            log.info("%s: no %s variant: %s", job.name, kind, reason)
            statuses[name] = "not-applicable"
            continue
        write_variant(root, job, cfg, meta["attempt"], violation, overwrite)
        statuses[name] = "written"
    return statuses


def _pair_worker(args: tuple[Path, SceneJob, GenConfig, tuple[str, ...], bool]):
    root, job, cfg, kinds, overwrite = args
    start = time.perf_counter()
    statuses = generate_pair(root, job, cfg, kinds, overwrite)
    return job.name, statuses, time.perf_counter() - start


def generate_pairs(root: Path, jobs: list[SceneJob], cfg: GenConfig, kinds: tuple[str, ...] = KINDS,
                   workers: int = 1, overwrite: bool = False, progress: bool = True) -> dict[str, str]:
    """Pairs for every job (one process per scene), then the manifest; returns name -> status."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown violation kinds {unknown}; known: {', '.join(KINDS)}")
    root.mkdir(parents=True, exist_ok=True)
    tasks = [(root, job, cfg, tuple(kinds), overwrite) for job in jobs]
    results = run_pool(_pair_worker, tasks, workers, progress)
    write_manifest(root)
    return {name: status for statuses in results.values() for name, status in statuses.items()}


def manifest_rows(root: Path) -> list[dict[str, str]]:
    """One row per variant under ``root`` whose plausible scene is there too, video folders
    spelled like metadata.csv's ``video`` column."""
    scenes = set(discover_scenes(root))
    rows = []
    for name in sorted(scenes):
        for kind in KINDS:
            plausible = name.removesuffix(f"_{kind}")
            if plausible != name and plausible in scenes:
                rows.append({"plausible": (Path(plausible) / SCENE_SUBPATH).as_posix(),
                             "implausible": (Path(name) / SCENE_SUBPATH).as_posix(), "kind": kind})
    return rows


def write_manifest(root: Path) -> int:
    """Write ``root/pairs.csv`` atomically (temp file + rename); returns its number of rows."""
    rows = manifest_rows(root)
    tmp = root / f".tmp-{MANIFEST}-{os.getpid()}"
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["plausible", "implausible", "kind"])
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, root / MANIFEST)
    return len(rows)
