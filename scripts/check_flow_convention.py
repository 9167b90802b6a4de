"""How should these motion-vector files be read (signs, units, timing)?  Warp and see.

    python scripts/check_flow_convention.py --root DATA_ROOT --metadata metadata/x.csv \
        [--flow-convention replicator --flow-units pixels --flow-timing current]

Prints the photometric error of the best reading of the files (sign convention, pixels or
fractions of the image size, which file holds which step's motion), how clearly each of the
three beats its runner-up, and the settings to use (data.flow_convention, data.flow_units,
data.flow_timing).  Exit 1 when any of them is not clearly better than its runner-up (ratio
above --margin), when scenes disagree, when the files hold forward flow (no loader setting
converts it), or when --flow-* settings are given and differ from the best reading.
"""

from __future__ import annotations

import argparse
import sys

from data.convention_check import check_scenes, verdict
from data.flow import FlowConvention


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True)
    parser.add_argument("--metadata", required=True)
    parser.add_argument("--max-scenes", type=int, default=8)
    parser.add_argument("--margin", type=float, default=0.5, help="best/runner-up error ratio that counts as clear")
    parser.add_argument("--flow-convention", help="the settings training will use; fail if the files say otherwise")
    parser.add_argument("--flow-units", default="pixels")
    parser.add_argument("--flow-timing", default="current")
    args = parser.parse_args(argv)
    expected = None
    if args.flow_convention is not None:
        expected = FlowConvention(args.flow_convention, args.flow_units, args.flow_timing)
    per_scene = check_scenes(args.root, args.metadata, args.max_scenes)
    result = verdict(per_scene, args.margin, expected, dataset=f"{args.root} ({args.metadata})")
    print("\n".join(result.lines), file=sys.stdout if result.ok else sys.stderr)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
