"""Generate plausible/implausible scene pairs (same look, camera, bodies and start) in the sim_physics format.

    python scripts/make_violation_pairs.py --out runs/pairs/demo --preset demo --workers 2
    python scripts/make_violation_pairs.py --out runs/pairs/x --families projectile,bounce \\
        --kinds gravity_up,teleport --scenes-per-family 5

Each scene is written as ROOT/<family>_<seed> (plausible, identical to generate_scenes.py's) and
each violation as ROOT/<family>_<seed>_<kind> beside it, scene.json recording the violation;
ROOT/pairs.csv (plausible,implausible,kind) lists every pair under ROOT.  time_reversed is made
only for clips that end at rest.  Options are those of generate_scenes.py plus --kinds.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import Counter

from data.sim.violation_pairs import MANIFEST, generate_pairs
from data.sim.violations import KINDS
from scripts.generate_scenes import (
    add_generation_args,
    comma_names,
    config_and_jobs,
    flatten,
    prepare_root,
)

log = logging.getLogger("make_violation_pairs")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_generation_args(ap)
    ap.add_argument("--kinds", nargs="+", type=comma_names(KINDS, "violation kinds"), metavar="KIND",
                    help=f"violations to make, comma- or space-separated (default all: {', '.join(KINDS)})")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg, jobs = config_and_jobs(args)
    kinds = tuple(flatten(args.kinds, list(KINDS)))
    prepare_root(args, cfg, jobs, log)
    start = time.perf_counter()
    results = generate_pairs(args.out, jobs, cfg, kinds, workers=args.workers, overwrite=args.overwrite)
    counts = Counter(results.values())
    log.info("done in %.1fs: %s; manifest %s", time.perf_counter() - start, dict(sorted(counts.items())),
             args.out / MANIFEST)


if __name__ == "__main__":
    main()
