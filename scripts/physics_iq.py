"""The Physics-IQ score on the official benchmark layout: export our takes, score generated videos, measure the codec.

    # our generated scenes with two takes (generate_scenes.py --takes 2) as a benchmark
    python scripts/physics_iq.py export --root runs/scenes/demo --metadata metadata/demo.csv --split holdout \\
        --out runs/piq_bench
    # score folders of generated videos ({ID}_*.mp4, one folder per model) without generating
    python scripts/physics_iq.py score --benchmark physics-IQ-benchmark --generated runs/gen/base runs/gen/lora \\
        [--fps 24] [--downsample 4] [--out runs/piq_scores.json]
    # generate every switch frame's 5 s with the backbone (base, and with the LoRA; same seeds), then score
    python scripts/physics_iq.py generate --physics-iq-root physics-IQ-benchmark --stage1 runs/stage1/final \
        --stage2 runs/stage2/final --model-dir /models/Wan2.2-TI2V-5B --out runs/piq_gen --score
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
from pathlib import Path

from data.errors import DataFormatError
from heads.video_metrics import EVAL_DOWNSAMPLE, METRIC_NAMES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="write scenes with two takes in the official layout")
    score = sub.add_parser("score", help="score folders of generated videos against a benchmark")
    codec = sub.add_parser("codec", help="measure the mp4 round trip's effect on the metrics")
    gen = sub.add_parser("generate", help="generate the benchmark's videos from its switch frames (i2v)")
    gen.add_argument("--physics-iq-root", required=True, help="Physics-IQ root (switch-frames/, descriptions.csv)")
    gen.add_argument("--out", required=True, help="writes OUT/base and OUT/lora ({ID}_{perspective}_{scenario}.mp4)")
    gen.add_argument("--stage1", required=True, help="stage-1 export (its backbone config is used)")
    gen.add_argument("--stage2", default="", help="stage-2 export: also generate with its LoRA fused")
    gen.add_argument("--model-dir", default="", help="local Wan2.2-TI2V-5B weights (default: the stage-1 run's)")
    gen.add_argument("--size", type=int, nargs=2, default=(704, 1280), metavar=("H", "W"),
                     help="generation size, multiples of 32 (default 704 1280: TI2V-5B's 720p)")
    gen.add_argument("--seconds", type=float, default=5.0, help="seconds after the switch frame (official: 5)")
    gen.add_argument("--steps", type=int, default=30, help="denoising steps (default 30)")
    gen.add_argument("--cfg-scale", type=float, default=5.0, help="classifier-free guidance (default 5)")
    gen.add_argument("--seed", type=int, default=0, help="seed of case 0; case i uses seed + i, for both models")
    gen.add_argument("--max-cases", type=int, default=0, help="generate at most N cases (default all)")
    gen.add_argument("--device", default="", help="torch device (default cuda if available)")
    gen.add_argument("--cache-dir", default="runs/cache", help="text-context cache (default runs/cache)")
    gen.add_argument("--score", action="store_true", help="score the folders afterwards (needs testing videos "
                                                          "at the backbone's fps)")
    gen.add_argument("--downsample", type=int, default=EVAL_DOWNSAMPLE, help="comparison downsampling for --score")
    for p in (export, codec):
        p.add_argument("--root", required=True, help="scene root (scenes with <scene>/env_0/0/1 = take 2)")
        p.add_argument("--metadata", required=True, help="metadata CSV (video,prompt,split)")
        p.add_argument("--split", default=None, help="only this split (default: every row)")
    export.add_argument("--out", required=True, help="benchmark root to write")
    export.add_argument("--fps", type=int, default=0, help="frame rate of the videos (default: the scenes'; "
                                                            "24 for Wan2.2's rollouts)")
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


def _generate(args: argparse.Namespace) -> dict:
    from stages.evaluation.physics_iq_bench import leaderboard, score_folder
    from stages.evaluation.physics_iq_generate import GenerateConfig, generate_benchmark

    config = GenerateConfig(benchmark=args.physics_iq_root, out=args.out, stage1=args.stage1, stage2=args.stage2,
                            model_dir=args.model_dir, height=args.size[0], width=args.size[1], seconds=args.seconds,
                            steps=args.steps, cfg_scale=args.cfg_scale, seed=args.seed, max_cases=args.max_cases,
                            device=args.device, cache_dir=args.cache_dir)
    folders = generate_benchmark(config)
    print("generated: " + ", ".join(f"{k} -> {v}" for k, v in folders.items()))
    if not args.score:
        return {"folders": folders}
    results = [score_folder(args.physics_iq_root, folder, downsample=args.downsample, subset=bool(args.max_cases))
               for folder in folders.values()]
    print(leaderboard(results))
    _write(str(Path(args.out) / "scores.json"), {"results": results})
    return {"folders": folders, "results": results}


def main(argv: list[str] | None = None) -> dict | list:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "export":
            from stages.evaluation.physics_iq_export import export_takes

            rows = export_takes(args.root, args.metadata, args.out, args.split, args.fps)
            print(f"{len(rows) // 2} scenario(s), {len(rows)} test videos -> {args.out}")
            return rows
        if args.command == "score":
            from stages.evaluation.physics_iq_bench import leaderboard, score_folder

            results = [score_folder(args.benchmark, g, args.fps, args.downsample, args.samples) for g in args.generated]
            print(leaderboard(results))
            _write(args.out, {"results": results})
            return results
        if args.command == "generate":
            return _generate(args)
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
