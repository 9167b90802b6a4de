"""Generate simulated physics scenes (PyBullet + TinyRenderer, CPU) in the sim_physics format.

    python scripts/generate_scenes.py --out runs/scenes/demo --preset demo --workers 2
    python scripts/generate_scenes.py --out runs/scenes/full --preset full --scenes-per-family 50
    python scripts/generate_scenes.py --out runs/scenes/demo --preset demo --takes 2   # + second takes

Writes ROOT/<family>_<seed>/env_0/0/0/{rgb,motion_vectors,distance_to_camera}/step_XXXX.* plus
scene.json; existing scenes are skipped unless --overwrite. With --takes 2 each scene is simulated
again with its start perturbed (--take-position-mm, --take-velocity-mm-s) into
ROOT/<scene>/env_0/0/1 (take 2: Physics-IQ's physical variance; never a training scene).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from data.sim.families import FAMILIES
from data.sim.generate import PRESETS, GenConfig, SceneJob, generate_many, make_jobs
from data.sim.looks import LOOK_SETS
from data.sim.takes import TakeNoise, generate_with_takes
from data.sim.writer import clean_stale_tmp

log = logging.getLogger("generate_scenes")


def comma_names(known: list[str] | tuple[str, ...], what: str):
    """argparse type: a comma-separated list of names from ``known`` (``a,b`` or ``a b`` both work)."""
    def parse(text: str) -> list[str]:
        names = [n for n in text.split(",") if n]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {what} {unknown}; known: {', '.join(known)}")
        return names
    return parse


def flatten(groups: list[list[str]] | None, default: list[str]) -> list[str]:
    return [n for group in groups for n in group] if groups else list(default)


def add_generation_args(ap: argparse.ArgumentParser) -> None:
    """The options of a generation run (shared by make_violation_pairs.py)."""
    ap.add_argument("--out", type=Path, required=True, help="dataset root (created if missing)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="full",
                    help="demo: 128x128, 33 frames, 2 scenes/family; full: 480x480, 131 frames")
    ap.add_argument("--families", nargs="+", type=comma_names(sorted(FAMILIES), "families"), metavar="FAMILY",
                    help=f"scenario families, comma- or space-separated (default all: {', '.join(sorted(FAMILIES))})")
    ap.add_argument("--scenes-per-family", type=int, help="scenes per family (default from preset)")
    ap.add_argument("--seed", type=int, default=0, help="first scene seed; scene i uses seed+i")
    ap.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="image size (default from preset)")
    ap.add_argument("--frames", type=int, help="frames per scene (default from preset)")
    ap.add_argument("--fps", type=int, default=30, help="recorded frame rate (physics runs at 240 Hz)")
    ap.add_argument("--workers", type=int, default=1, help="parallel processes (one scene each)")
    ap.add_argument("--background-distance", choices=["inf", "0"], default="inf",
                    help="distance_to_camera value where no surface is hit")
    ap.add_argument("--looks", nargs="+", choices=sorted(LOOK_SETS), default=(),
                    help="look sets scenes draw from (default: all; each scene draws one from its seed)")
    ap.add_argument("--no-shadows", action="store_true", help="skip the shadow pass (about 2x faster)")
    ap.add_argument("--overwrite", action="store_true", help="regenerate scenes that already exist")
    ap.add_argument("--log-level", default="INFO", help="logging level")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_generation_args(ap)
    ap.add_argument("--takes", type=int, choices=(1, 2), default=1,
                    help="recordings per scene: 2 adds a perturbed re-simulation in <scene>/env_0/0/1 (default 1)")
    ap.add_argument("--take-position-mm", type=float, default=TakeNoise.position_mm,
                    help="take 2: std of each free body's horizontal start offset, mm (default %(default)s)")
    ap.add_argument("--take-velocity-mm-s", type=float, default=TakeNoise.velocity_mm_s,
                    help="take 2: std of each free body's initial velocity offset, mm/s (default %(default)s)")
    return ap.parse_args(argv)


def config_and_jobs(args: argparse.Namespace) -> tuple[GenConfig, list[SceneJob]]:
    """The run's per-scene settings and its scenes, preset values filling what is not given."""
    preset = PRESETS[args.preset]
    height, width = args.size or (preset["height"], preset["width"])
    cfg = GenConfig(width=width, height=height, frames=args.frames or preset["frames"], fps=args.fps,
                    background_distance=float(args.background_distance), shadows=not args.no_shadows,
                    looks=tuple(args.looks))
    families = flatten(args.families, sorted(FAMILIES))
    return cfg, make_jobs(families, args.scenes_per_family or preset["scenes_per_family"], args.seed)


def prepare_root(args: argparse.Namespace, cfg: GenConfig, jobs: list[SceneJob], logger: logging.Logger = log) -> None:
    """Logging set up, leftovers of killed runs removed, the run announced."""
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if removed := clean_stale_tmp(args.out):
        logger.info("removed %d unfinished scene(s) left by an earlier run", removed)
    logger.info("%d scenes (%dx%d, %d frames) -> %s with %d worker(s)", len(jobs), cfg.width, cfg.height, cfg.frames,
             args.out, args.workers)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg, jobs = config_and_jobs(args)
    prepare_root(args, cfg, jobs)
    start = time.perf_counter()
    if args.takes > 1:
        noise = TakeNoise(args.take_position_mm, args.take_velocity_mm_s)
        results = generate_with_takes(args.out, jobs, cfg, args.takes, noise, workers=args.workers,
                                      overwrite=args.overwrite)
    else:
        results = generate_many(args.out, jobs, cfg, workers=args.workers, overwrite=args.overwrite)
    counts = {s: list(results.values()).count(s) for s in sorted(set(results.values()))}
    log.info("done in %.1fs: %s", time.perf_counter() - start, counts)


if __name__ == "__main__":
    main()
