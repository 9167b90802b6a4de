"""Write the metadata CSV (video,prompt,split) for a scene root, splits stratified by family.

    python scripts/make_metadata.py runs/scenes/demo --out metadata/demo.csv
    python scripts/make_metadata.py ROOT --out metadata/x.csv --split 0.8 0.1 0.1 \\
        --holdout-families stack_topple,domino --holdout-looks workshop --seed 0

Prompts come from each scene's scene.json (generated data) or from the scene name (real data:
test_ball_collide -> "ball collide"). Splits: train, val and test_seen draw from every family not
held out (val and test_seen are unseen scenes of seen families); held-out families go entirely to
the holdout split, which then holds families never seen in training and nothing else; scenes of
seen families in held-out look sets go to holdout_look (appearances never seen in training).
Second takes (ROOT/<scene>/env_0/0/1, from generate_scenes.py --takes 2) are never rows: a row is
a scene's take 1, and evaluation finds take 2 beside it.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from pathlib import Path

from data.layout import take_directory
from data.metadata_split import build_rows, write_csv

log = logging.getLogger("make_metadata")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path, help="dataset root holding <scene>/env_0/0/0")
    ap.add_argument("--out", type=Path, required=True, help="CSV to write (folders are created)")
    ap.add_argument("--split", type=float, nargs=3, default=(0.8, 0.1, 0.1), metavar=("TRAIN", "VAL", "TEST_SEEN"),
                    help="fractions of the non-held-out scenes, normalised to sum 1 (default 0.8 0.1 0.1)")
    ap.add_argument("--holdout-families", default="", help="comma-separated families sent wholly to the holdout split")
    ap.add_argument("--holdout-looks", default="",
                    help="comma-separated look sets (scene.json look.set) whose scenes of seen families go to the "
                         "holdout_look split")
    ap.add_argument("--seed", type=int, default=0, help="seed of the split assignment")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    holdout = {f.strip() for f in args.holdout_families.split(",") if f.strip()}
    looks = {f.strip() for f in args.holdout_looks.split(",") if f.strip()}
    rows = build_rows(args.root, tuple(args.split), holdout, args.seed, looks)
    write_csv(rows, args.out)
    counts = Counter(row["split"] for row in rows)
    log.info("%d scenes -> %s (%s)", len(rows), args.out, ", ".join(f"{k} {counts[k]}" for k in sorted(counts)))
    takes = sum(take_directory(args.root / row["video"], 2).is_dir() for row in rows)
    if takes:
        log.info("%d of %d scenes have a second take (env_0/0/1): read by evaluation, not rows", takes, len(rows))


if __name__ == "__main__":
    main()
