"""Simulate, render and write scenes; parallel over scenes with one pybullet client per process.

Timing follows the real data: the physics steps at 240 Hz and every 8th state is recorded, giving
30 fps.  Frame 0 is the initial state; frame t is the state after ``8 t`` physics steps.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import sys
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pybullet as p
from pybullet_utils.bullet_client import BulletClient
from tqdm import tqdm

from data.sim.camera import Camera, orbit_camera
from data.sim.families import FAMILIES, GRAVITY
from data.sim.ground_truth import distance_from_depth_buffer, motion_vectors
from data.sim.looks import Placement, draw_look, draw_placement, look_rng
from data.sim.prompts import prompt_from_scene
from data.sim.render import render
from data.sim.violations import Violation, make_hooks
from data.sim.world import World
from data.sim.writer import SceneWriter, scene_name

log = logging.getLogger(__name__)

MOTION_CONVENTION = (
    "Omniverse Replicator file convention: ch0,ch1 in pixels, ch2,ch3 zero; frame 0 all zero. "
    "At pixel p of frame t: ch0 = u_{t-1} - u_t, ch1 = v_{t-1} - v_t (u right, v down), i.e. the "
    "motion from t-1 to t with x left-positive and y up-positive; numerically the backward flow "
    "(+x right, +y down): I_t(p) ~ I_{t-1}(p + mv[p, :2])."
)

CONTACT_ERP = 0.01
"""Share of a contact's penetration Bullet removes per step through the velocity.  Its default (0.2)
pushes a body that landed ~1 cm deep out with extra speed, so bounces come out ~25 % higher than
restitution^2 predicts; at 0.01 they are within ~3 % and sinking still recovers in ~0.5 s."""

CONTACT_MODEL = (
    "Bullet: a contact's friction and restitution are the products of the two bodies' values; "
    "scenery has friction 1 and restitution 1, so an object's values are those against the floor."
)


PRE_LOOK_DRAWS = 10


@dataclass(frozen=True)
class GenConfig:
    """Per-scene rendering settings shared by every scene of a run."""

    width: int = 480
    """Image width in pixels."""
    height: int = 480
    """Image height in pixels."""
    frames: int = 131
    """Recorded frames per scene (like the real data)."""
    fps: int = 30
    """Recording rate; must divide ``sim_hz``."""
    sim_hz: int = 240
    """Physics rate; ``sim_hz / fps`` substeps per recorded frame."""
    background_distance: float = float("inf")
    """distance_to_camera where no surface is hit: inf (default) or 0."""
    shadows: bool = True
    """Allow TinyRenderer's shadow pass (about doubles render time; shadows are a cue for depth); a
    scene casts shadows when this holds and its look draws them."""
    looks: tuple[str, ...] = ()
    """Look sets scenes draw from (data.sim.looks.LOOK_SETS); empty = all."""
    min_moving_frames: int = 8
    """A scene is retried (new attempt seed) if fewer frames than this (or than half of all
    frames, for short clips) show motion; objects may rest after that, as in Physics-IQ."""
    max_attempts: int = 4
    """Attempts before accepting a scene with little motion (with a warning)."""

    def __post_init__(self) -> None:
        if self.sim_hz % self.fps:
            raise ValueError(f"fps {self.fps} must divide sim_hz {self.sim_hz}")
        if self.frames < 2 or self.width < 8 or self.height < 8:
            raise ValueError("need at least 2 frames and 8x8 pixels")
        if self.background_distance not in (0.0, float("inf")):
            raise ValueError("background_distance must be inf or 0")


PRESETS: dict[str, dict] = {
    "demo": {"width": 128, "height": 128, "frames": 33, "scenes_per_family": 2},
    "full": {"width": 480, "height": 480, "frames": 131, "scenes_per_family": 10},
}


@dataclass(frozen=True)
class SceneJob:
    family: str
    seed: int

    @property
    def name(self) -> str:
        return scene_name(self.family, self.seed)


def scene_rng(family: str, seed: int, attempt: int) -> np.random.Generator:
    """Independent stream per (family, seed, attempt); crc32 is stable across processes."""
    return np.random.default_rng([seed, zlib.crc32(family.encode()), attempt])


@contextlib.contextmanager
def _quiet_stdout():
    """pybullet's C code prints ``argv[0]=`` on every connect, which garbles the progress bar."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
        try:
            yield
        finally:
            os.dup2(saved, 1)
            os.close(saved)


def connect() -> BulletClient:
    """A headless physics client (rendering is TinyRenderer on the CPU)."""
    with _quiet_stdout():
        return BulletClient(connection_mode=p.DIRECT)


def _pose(client: BulletClient, body: int) -> np.ndarray:
    pos, orn = client.getBasePositionAndOrientation(body)
    return np.array(pos + orn, dtype=np.float64)


def _contacts(client: BulletClient) -> list[list[int]]:
    pairs = {tuple(sorted((c[1], c[2]))) for c in client.getContactPoints()}
    return [list(pair) for pair in sorted(pairs)]


def _build(client: BulletClient, job: SceneJob, cfg: GenConfig, attempt: int):
    """Create the world for one attempt; returns (world, camera, scenery ids, look, placement).

    The look and the camera come from the seed's look stream, the bodies from its physics stream:
    one family and seed move the same under every look."""
    client.setGravity(0, 0, -GRAVITY)
    client.setTimeStep(1.0 / cfg.sim_hz)
    client.setPhysicsEngineParameter(contactERP=CONTACT_ERP)
    looks = look_rng(job.family, job.seed, attempt)
    look = draw_look(looks, cfg.looks or None)
    world = World(client, scene_rng(job.family, job.seed, attempt), texture_seed=look["texture_seed"])
    # Ten draws the floor and wall took from the physics stream before looks had their own: kept,
    # so each family and seed moves exactly as when its motion was checked (tests/test_families.py).
    world.rng.random(PRE_LOOK_DRAWS)
    scenery = {"floor": world.add_floor(look)}
    world.neutral_scenery(scenery["floor"])
    aim = FAMILIES[job.family](world)
    nominal = float(np.linalg.norm(np.subtract(aim.position, aim.target)))
    placement = draw_placement(looks, look["fov_y_deg"], aim.fov_y_deg, nominal)
    camera = orbit_camera(cfg.width, cfg.height, aim.position, aim.target, placement.fov_y_deg, placement.distance,
                          placement.yaw_deg, placement.pitch_deg, placement.roll_deg)
    look["body_pattern_cells"] = world.texture_bodies(look["object_texture"], camera)
    forward = np.subtract(camera.target, camera.position)
    background = world.add_background(look, np.asarray(camera.target), forward)
    if background is not None:
        scenery["background"] = background
    return world, camera, scenery, look, placement


def simulate(job: SceneJob, cfg: GenConfig, attempt: int, writer: SceneWriter,
              violation: Violation | None = None, perturb=None) -> tuple[dict, int]:
    """Run one attempt, streaming frames to ``writer``; returns (scene meta, moving frames).

    ``violation`` (None: the plausible take) changes the run only through its hooks, so a variant
    shares every body, look, camera and start with the plausible take of the same attempt.
    ``perturb(client, movers) -> dict`` (a second take, ``data.sim.takes``) nudges the free bodies
    before frame 0; what it returns is recorded as ``scene.json["take"]``."""
    client = connect()
    world = None
    try:
        world, camera, scenery, look, placement = _build(client, job, cfg, attempt)
        hooks = make_hooks(violation, client, world, camera)
        movers = [o for o in world.objects if not o.static]
        substeps = cfg.sim_hz // cfg.fps
        contacts, prev, moving_frames = [], {}, 0
        hooks.before_loop()
        take = perturb(client, movers) if perturb is not None else None
        for t in range(cfg.frames):
            for _ in range(hooks.substeps(t, substeps) if t else 0):
                client.stepSimulation()
            hooks.after_step(t)
            now = {o.body_id: _pose(client, o.body_id) for o in movers}
            for obj in world.objects:
                obj.poses.append(_pose(client, obj.body_id).tolist())
            raw = render(client, camera, look, cfg.shadows)
            hit = raw.segmentation >= 0
            distance = distance_from_depth_buffer(raw.depth_buffer, hit, camera,
                                                  cfg.background_distance)
            if t == 0:
                motion = np.zeros((cfg.height, cfg.width, 4), np.float32)
            else:
                motion = motion_vectors(camera, distance, raw.segmentation, now, prev)
            moving_frames += int(frame_moves(motion))
            contacts.append(_contacts(client))
            hooks.record(writer, t, raw, distance, motion, now)
            prev = now
        meta = _meta(job, cfg, attempt, camera, world, scenery, contacts, look, placement)
        if take is not None:
            meta["take"] = take
        hooks.finish(writer, meta)
        return meta, moving_frames
    finally:
        if world is not None:
            world.close()
        client.disconnect()


def frame_moves(motion: np.ndarray) -> bool:
    """A frame shows motion if some pixels (>= 0.05 % or 4) move by more than 0.25 px."""
    moving = np.hypot(motion[..., 0], motion[..., 1]) > 0.25
    return moving.sum() >= max(4, 5e-4 * moving.size)


def _meta(job: SceneJob, cfg: GenConfig, attempt: int, camera: Camera, world: World,
          scenery: dict[str, int], contacts: list[list[list[int]]], look: dict, placement: Placement) -> dict:
    """Everything ``scene.json`` records: look, camera and its placement, objects with per-frame
    poses, pins, contacts."""
    meta = {
        "family": job.family,
        "seed": job.seed,
        "attempt": attempt,
        "fps": cfg.fps,
        "sim_hz": cfg.sim_hz,
        "num_frames": cfg.frames,
        "width": cfg.width,
        "height": cfg.height,
        "gravity": [0.0, 0.0, -GRAVITY],
        "camera": {**camera.to_json(), "placement": asdict(placement)},
        "look": look,
        "distance_convention": "euclidean_ray_m",
        "background_distance": cfg.background_distance,
        "motion_vector_convention": MOTION_CONVENTION,
        "pose_convention": "[x, y, z, qx, qy, qz, qw] world frame, base = centre of mass",
        "scenery": scenery,
        "objects": [o.to_json() for o in world.objects],
        "constraints": world.constraints,
        "contact_model": CONTACT_MODEL,
        "contacts": contacts,
        "config": asdict(cfg),
    }
    meta["prompt"] = prompt_from_scene(meta)
    return meta


def generate_scene(root: Path, job: SceneJob, cfg: GenConfig, overwrite: bool = False) -> str:
    """Generate one scene into ``root/<name>``; returns 'skipped', 'written' or 'low-motion'."""
    if (root / job.name).exists() and not overwrite:
        return "skipped"
    needed = min(cfg.min_moving_frames, cfg.frames // 2)  # frames // 2 = ceil(flow frames / 2)
    for attempt in range(cfg.max_attempts):
        writer = SceneWriter(root, job.name)
        try:
            meta, moving = simulate(job, cfg, attempt, writer)
            last = attempt == cfg.max_attempts - 1
            if moving >= needed or last:
                writer.write_json(meta)
                writer.commit(overwrite)
                if moving < needed:
                    log.warning("%s: only %d frames show motion", job.name, moving)
                    return "low-motion"
                return "written"
            log.info("%s attempt %d: %d/%d moving frames, retrying", job.name, attempt, moving,
                     needed)
        finally:
            writer.discard()
    raise AssertionError("unreachable")


def _worker(args: tuple[Path, SceneJob, GenConfig, bool]) -> tuple[str, str, float]:
    root, job, cfg, overwrite = args
    start = time.perf_counter()
    status = generate_scene(root, job, cfg, overwrite)
    return job.name, status, time.perf_counter() - start


def make_jobs(families: list[str], scenes_per_family: int, seed: int) -> list[SceneJob]:
    """Seeds ``seed .. seed+N-1`` for every family (the RNG also mixes in the family)."""
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        raise ValueError(f"unknown families {unknown}; known: {sorted(FAMILIES)}")
    return [SceneJob(f, seed + i) for f in families for i in range(scenes_per_family)]


def generate_many(root: Path, jobs: list[SceneJob], cfg: GenConfig, workers: int = 1,
                  overwrite: bool = False, progress: bool = True) -> dict[str, str]:
    """Generate ``jobs`` with ``workers`` processes; returns scene name -> status."""
    root.mkdir(parents=True, exist_ok=True)
    return run_pool(_worker, [(root, job, cfg, overwrite) for job in jobs], workers, progress)


def _log_like_parent(level: int) -> None:
    """Spawned workers start without logging; their warnings (low motion, skipped kinds) still count."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run_pool(worker, tasks: list, workers: int = 1, progress: bool = True) -> dict:
    """Map ``worker`` (a module-level function returning (name, status, seconds)) over ``tasks``
    in ``workers`` processes with a progress bar; returns name -> status."""
    results: dict = {}
    bar = tqdm(total=len(tasks), desc="scenes", disable=not progress)
    if workers <= 1:
        outputs = map(worker, tasks)
        pool = None
    else:
        # spawn: pybullet clients must not be inherited through fork from a parent that has one.
        level = logging.getLogger().getEffectiveLevel()
        pool = mp.get_context("spawn").Pool(workers, initializer=_log_like_parent, initargs=(level,))
        outputs = pool.imap_unordered(worker, tasks)
    try:
        for name, status, seconds in outputs:
            results[name] = status
            log.debug("%s %s in %.2fs", name, status, seconds)
            bar.set_postfix_str(f"{name} {seconds:.1f}s")
            bar.update()
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
    return results
