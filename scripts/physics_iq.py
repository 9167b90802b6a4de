"""The Physics-IQ score on the official benchmark layout: export our takes, score generated videos, measure the codec.

    # our generated scenes with two takes (generate_scenes.py --takes 2) as a benchmark
    python scripts/physics_iq.py export --root runs/scenes/demo --metadata metadata/demo.csv --split holdout \\
        --out runs/piq_bench
    # score folders of generated videos ({ID}_*.mp4, one folder per model) without generating
    python scripts/physics_iq.py score --benchmark physics-IQ-benchmark --generated runs/gen/base runs/gen/lora \\
        [--fps 24] [--downsample 4] [--out runs/piq_scores.json]
    # what the mp4 round trip does to the metrics, on our takes
    python scripts/physics_iq.py codec --root runs/scenes/demo --metadata metadata/demo.csv --split holdout

Layout and score: docs/physics_iq.md. ``score`` prints a leaderboard-style table (score, 95 %
bootstrap interval over scenarios, the four metrics; then per category) and writes every number
to --out as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from data.errors import DataFormatError
from heads.video_metrics import EVAL_DOWNSAMPLE, METRIC_NAMES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="write scenes with two takes in the official layout")
    score = sub.add_parser("score", help="score folders of generated videos against a benchmark")
    codec = sub.add_parser("codec", help="measure the mp4 round trip's effect on the metrics")
    for p in (export, codec):
        p.add_argument("--root", required=True, help="scene root (scenes with <scene>/env_0/0/1 = take 2)")
        p.add_argument("--metadata", required=True, help="metadata CSV (video,prompt,split)")
        p.add_argument("--split", default=None, help="only this split (default: every row)")
    export.add_argument("--out", required=True, help="benchmark root to write")
    score.add_argument("--benchmark", required=True, help="Physics-IQ root (split-videos/testing/{fps}FPS, ...)")
    score.add_argument("--generated", nargs="+", required=True, help="one folder of {ID}_*.mp4 per model")
    score.add_argument("--fps", type=int, default=0, help="frame rate (default: the generated videos')")
    score.add_argument("--downsample", type=int, default=EVAL_DOWNSAMPLE,
                       help="compare at 1/N of the real videos' size (official: 4; use 1 below ~256 px)")
    score.add_argument("--samples", type=int, default=1000, help="bootstrap samples (default 1000)")
    score.add_argument("--out", default="", help="JSON file for every number")
    codec.add_argument("--downsample", type=int, default=1, help="comparison downsampling (default 1)")
    codec.add_argument("--codec", default="mp4v", choices=("mp4v", "libx264"),
                       help="mp4v (OpenCV, default) or libx264 (H.264 crf 18 via imageio-ffmpeg)")
    codec.add_argument("--out", default="", help="JSON file for every number")
    return ap.parse_args(argv)


def _write(path: str, payload: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2))


def main(argv: list[str] | None = None) -> dict | list:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "export":
            from stages.evaluation.physics_iq_export import export_takes

            rows = export_takes(args.root, args.metadata, args.out, args.split)
            print(f"{len(rows) // 2} scenario(s), {len(rows)} test videos -> {args.out}")
            return rows
        if args.command == "score":
            from stages.evaluation.physics_iq_bench import leaderboard, score_folder

            results = [score_folder(args.benchmark, g, args.fps, args.downsample, args.samples) for g in args.generated]
            print(leaderboard(results))
            _write(args.out, {"results": results})
            return results
        from stages.evaluation.codec_effect import codec_effect

        effect = codec_effect(args.root, args.metadata, args.split, args.downsample, codec=args.codec)
        mean = effect["mean"]
        print(f"{args.codec} round trip over {len(effect['scenes'])} scene(s): mean |pixel error| "
              f"{mean['pixel_abs_error']:.3f} gray levels")
        print("| comparison | " + " | ".join(METRIC_NAMES) + " |\n|---|" + "---|" * len(METRIC_NAMES))
        for part in ("self", "variance_lossless", "variance_coded"):
            print(f"| {part} | " + " | ".join(f"{mean[part][k]:.4f}" for k in METRIC_NAMES) + " |")
        _write(args.out, effect)
        return effect
    except (DataFormatError, FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()
