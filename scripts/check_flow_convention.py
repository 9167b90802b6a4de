"""Which motion-vector sign convention do these files use?  Warp and see.

    python scripts/check_flow_convention.py --root DATA_ROOT --metadata metadata/x.csv

Prints the photometric error of warping frame t-1 onto frame t with each convention (lower is
better) and the setting to use (DataConfig.flow_convention / --data.flow_convention).  Exit 1
when the best convention is not clearly better than the runner-up (ratio above --margin).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import argparse

from data.convention_check import check_conventions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True)
    parser.add_argument("--metadata", required=True)
    parser.add_argument("--max-scenes", type=int, default=8)
    parser.add_argument("--margin", type=float, default=0.5, help="best/runner-up error ratio that counts as clear")
    args = parser.parse_args(argv)
    scores = check_conventions(args.root, args.metadata, args.max_scenes)
    if scores[0].pixels == 0:
        print("no moving pixels found; cannot tell the convention", file=sys.stderr)
        return 1
    for score in scores:
        print(f"{score.name:>16}: warp error {score.error:.4f} over {score.pixels} moving pixels")
    ratio = scores[0].error / max(scores[1].error, 1e-12)
    print(f"best: {scores[0].name} (error ratio to runner-up {ratio:.2f})")
    return 0 if ratio <= args.margin else 1


if __name__ == "__main__":
    sys.exit(main())
