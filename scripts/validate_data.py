"""Check a sim_physics data set end to end before spending GPU hours on it.

    python scripts/validate_data.py --root DATA_ROOT --metadata metadata/x.csv [--split train]

Exit status 0 when every file reads, 1 with the offending file's path otherwise.
"""

from __future__ import annotations

import argparse
import sys

from data.errors import DataFormatError
from data.readers import DEFAULT_FAR_CLIP_M
from data.validate import validate_dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="data root holding <scene>/env_0/0/0/...")
    parser.add_argument("--metadata", required=True, help="CSV with columns video,prompt[,split]")
    parser.add_argument("--split", default=None, help="only check rows of this split")
    parser.add_argument("--far-clip", type=float, default=DEFAULT_FAR_CLIP_M, help="distances beyond this are background (m)")
    args = parser.parse_args(argv)
    try:
        reports = validate_dataset(args.root, args.metadata, args.split, args.far_clip)
    except DataFormatError as error:
        print(f"INVALID: {error}", file=sys.stderr)
        return 1
    for report in reports:
        print(f"{report.video}: {report.frames} frames {report.height}x{report.width}, "
              f"valid depth {report.valid_depth_fraction:.1%}, max |flow| {report.max_flow_px:.2f} px")
    print(f"OK: {len(reports)} scene(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
