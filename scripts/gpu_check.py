"""The prepared GPU check: every GPU number the project reports comes from this one run.

    bash scripts/gpu_check.sh [--quick]        # on a lent GPU: TI2V-5B geometry, random weights
    python scripts/gpu_check.py --device cpu   # the same code on the tiny preset, in seconds

Items (each in its own process with its own time limit, so an OOM or a hang costs one item):
  dit_forward        DiT forward at 49x480^2 (2,925 tokens), median ms, TFLOP/s, MFU vs bf16 peak
  dit_forward_variants  the same per attention kernel (SDPA cuDNN / flash / efficient / math,
                     FlashAttention packages when installed) and with compiled blocks, each
                     compared with the first variant's output
  stage1_step        feature extraction + heads fwd/bwd + optimizer, online vs cached path
                     (--supervised-frames K: decode K frames per step; --profile: top ops)
  stage1_variants    the heads step for each speed knob (frames decoded, RGB path resolution)
                     beside one backbone forward: online/cached per variant
  stage1_compiled    a heads step under torch.compile (compile time, step, difference from eager,
                     online/cached with a timed backbone); the default heads or the variant named by
                     --supervised-frames / --rgb-refine-stride / --no-rgb-refine / --channels-last, --compile-mode
                     (reduce-overhead: CUDA graphs); minutes of compiling, so only when named
  stage2_step_gc     LoRA rank-32 step (flow matching + head losses) with gradient checkpointing;
                     MFU on the DiT's counted step FLOPs (forward, input gradients, recompute) and
                     the heads' share of the step
  stage2_step_no_gc  the same without checkpointing
  stage2_step_subset the checkpointed step with heads and physics terms on max(4, frames // 4 + 1) contiguous frames
                     (objective.heads_frames: 13 of 49)
  stage2_step_subset_no_gc  the same without checkpointing (the 80 GB card's setting)
  vae_encode_tiled   VAE encode of one 49x480^2 window, tiled
  vae_encode         the same untiled
  best_of_rollouts   evaluate_physics --best-of 4: four TI2V rollouts of one conditioning (the
                     evaluation's steps and CFG; --quick: 2 steps), each scored by a verifier

Writes benchmarks/results/<gpu|cpu>-<device>-<date>.json (device name, torch/CUDA versions, every
number) and prints a table.  --quick runs each item once (smoke test).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ITEMS = ("dit_forward", "dit_forward_variants", "stage1_step", "stage1_variants", "stage1_compiled", "prefetch", "stage2_step_gc",
         "stage2_step_no_gc", "stage2_step_subset", "stage2_step_subset_no_gc", "vae_encode_tiled", "vae_encode", "best_of_rollouts")
DEFAULT_ITEMS = tuple(i for i in ITEMS if i != "stage1_compiled")  # compiling takes minutes: asked for by name
MIN_TIMEOUT_S = {"stage1_compiled": 420.0, "best_of_rollouts": 300.0, "dit_forward_variants": 420.0}
GEOMETRY = {"ti2v_5b": (49, 480, 480), "tiny": (9, 64, 64)}


def run_item(name: str, args: argparse.Namespace) -> dict:
    """Execute one item in this process (called in the child)."""
    import torch

    from scripts import gpu_items as g

    device = torch.device(args.device)
    common = dict(preset=args.preset, device=device, frames=args.frames, height=args.height, width=args.width,
                  runs=args.runs, warmup=args.warmup)
    if name == "dit_forward":
        return g.item_dit_forward(**{**common, "runs": max(args.runs, 5) if not args.quick else 1},
                                  peak_tflops=args.peak_tflops)
    if name == "dit_forward_variants":
        from scripts.gpu_item_dit import item_dit_forward_variants

        return item_dit_forward_variants(**common)
    if name == "stage1_step":
        return g.item_stage1_step(**common, head_features=args.head_features, rgb_refine=not args.no_rgb_refine,
                                  supervised_frames=args.supervised_frames, profile=args.profile,
                                  rgb_refine_stride=args.rgb_refine_stride)
    if name == "stage1_variants":
        return g.item_stage1_variants(**common, head_features=args.head_features)
    if name == "stage1_compiled":
        backend = "inductor" if device.type == "cuda" else "aot_eager"  # CPU: check the wiring, not the speed
        return g.item_stage1_compiled(**common, head_features=args.head_features, backend=backend,
                                      supervised_frames=args.supervised_frames,
                                      rgb_refine_stride=0 if args.no_rgb_refine else args.rgb_refine_stride,
                                      mode=args.compile_mode, channels_last=args.channels_last)
    if name == "prefetch":
        from scripts.gpu_item_prefetch import item_prefetch

        return item_prefetch(**common)
    if name.startswith("stage2_step"):
        from scripts.gpu_item_stage2 import item_stage2_step

        return item_stage2_step(**common, peak_tflops=args.peak_tflops, gradient_checkpointing=not name.endswith("_no_gc"),
                                  heads_frames=max(4, common["frames"] // 4 + 1) if "_subset" in name else 0)
    if name == "best_of_rollouts":
        from scripts.gpu_item_best_of import item_best_of

        return item_best_of(**{**common, "steps": 2 if args.quick else None})
    if name.startswith("vae_encode"):
        return g.item_vae_encode(**common, tiled=name == "vae_encode_tiled")
    raise ValueError(f"unknown item {name!r}; choose from {ITEMS}")


def _child(name: str, args: argparse.Namespace, timeout: float) -> dict:
    """Run one item in a fresh process so a crash, OOM or hang is contained."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, str(Path(__file__)), "--run-item", name, "--result-file", str(out),
                   "--device", args.device, "--preset", args.preset, "--frames", str(args.frames),
                   "--height", str(args.height), "--width", str(args.width), "--runs", str(args.runs),
                   "--warmup", str(args.warmup), "--head-features", str(args.head_features),
                   "--supervised-frames", str(args.supervised_frames), "--rgb-refine-stride", str(args.rgb_refine_stride)]
        flags = {"--quick": args.quick, "--no-rgb-refine": args.no_rgb_refine, "--profile": args.profile,
                 "--channels-last": args.channels_last}
        command += [flag for flag, on in flags.items() if on]
        if args.compile_mode:
            command += ["--compile-mode", args.compile_mode]
        if args.peak_tflops:
            command += ["--peak-tflops", str(args.peak_tflops)]
        start = time.perf_counter()
        try:
            proc = subprocess.run(command, timeout=timeout, capture_output=True, text=True, cwd=REPO)
        except subprocess.TimeoutExpired:
            return {"status": "timeout", "limit_s": timeout}
        wall = time.perf_counter() - start
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return {"status": "error", "returncode": proc.returncode, "error": " | ".join(tail), "wall_s": wall}
        return {"status": "ok", "wall_s": wall, **json.loads(out.read_text())}


def environment(device: str) -> dict:
    import torch

    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "host": platform.node(), "date": dt.date.today().isoformat()}
    info["device_name"] = torch.cuda.get_device_name(0) if device == "cuda" else f"cpu ({platform.processor() or 'x86_64'})"
    return info


def print_table(results: dict[str, dict]) -> None:
    keys = ("median_s", "mfu", "tflops", "online_step_ms", "cached_step_ms", "online_samples_per_s",
            "cached_samples_per_s", "online_supervised_frames_per_s", "cached_supervised_frames_per_s", "speedup",
            "cached_step_ms_prefetched",
            "speedup_prefetched", "compile_s", "forward_backward_ms", "heads_ms", "heads_share", "max_abs_diff_vs_eager", "step_ms", "median_ms",
            "online_peak_gib", "cached_peak_gib", "peak_gib", "max_memory_gib", "batch_mb", "copy_ms", "compute_ms",
            "serial_step_ms", "prefetched_step_ms", "intact_prefetched", "n", "steps", "rollout_s", "score_s", "best_of_s")
    for name, result in results.items():
        shown = [f"{k}={result[k]:.4g}" if isinstance(result.get(k), float) else f"{k}={result[k]}"
                 for k in keys if result.get(k) is not None]
        detail = result.get("error", "") if result["status"] != "ok" else ", ".join(shown)
        print(f"{name:<18} {result['status']:<8} {detail}")
        for variant in result.get("variants", []):
            print(f"{'':<20}{variant['name']:<40} {variant_line(variant)}")


VARIANT_KEYS = {"forward_backward_ms": "heads {:.1f} ms", "cached_step_ms": "cached step {:.1f} ms",
                "online_step_ms": "online {:.1f} ms", "speedup": "online/cached {:.2f}x",
                "median_s": "median {:.4g} s", "mfu": "MFU {:.1%}", "max_abs_diff": "max |diff| {:.2g}",
                "peak_gib": "peak {:.1f} GiB", "max_memory_gib": "peak {:.1f} GiB"}


def variant_line(variant: dict) -> str:
    if variant.get("status", "ok") != "ok":
        return f"{variant['status']}: {variant.get('error', '')}"
    return ", ".join(form.format(variant[k]) for k, form in VARIANT_KEYS.items() if variant.get(k) is not None)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto (cuda when available)")
    parser.add_argument("--preset", default="auto", help="ti2v_5b on cuda, tiny on cpu by default")
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--runs", type=int, default=3, help="timed iterations per item (dit_forward: >= 5)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--head-features", type=int, default=128, help="stage1_step: heads' fusion width")
    parser.add_argument("--no-rgb-refine", action="store_true", help="stage1_step: heads without the RGB path")
    parser.add_argument("--supervised-frames", type=int, default=0,
                        help="stage1_step: decode K random frames per step (data.window.supervised_frames)")
    parser.add_argument("--profile", action="store_true", help="stage1_step: top ops of one cached step")
    parser.add_argument("--rgb-refine-stride", type=int, default=1, help="stage1_step: RGB path at full (1) or half (2) res")
    parser.add_argument("--channels-last", action="store_true",
                        help="stage1_compiled: full-resolution decoder in channels-last layout (heads.channels_last)")
    parser.add_argument("--compile-mode", default=None,
                        help="stage1_compiled: torch.compile mode (e.g. reduce-overhead for CUDA graphs)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="dense bf16 peak for MFU when the card is not in world_model/flops.py's table")
    parser.add_argument("--quick", action="store_true", help="one timed run per item, no warm-up")
    parser.add_argument("--items", nargs="+", default=list(DEFAULT_ITEMS), choices=ITEMS,
                        help="default: all but stage1_compiled")
    parser.add_argument("--item-timeout", type=float, default=150.0, help="seconds per item")
    parser.add_argument("--out-dir", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--tag", default="", help="suffix of the results file name (e.g. heads-f64)")
    parser.add_argument("--run-item", help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.preset == "auto":
        args.preset = "ti2v_5b" if args.device == "cuda" else "tiny"
    frames, height, width = GEOMETRY.get(args.preset, GEOMETRY["tiny"])
    args.frames, args.height, args.width = args.frames or frames, args.height or height, args.width or width
    if args.quick:
        args.runs, args.warmup = 1, 0
    return args


def main(argv: list[str] | None = None) -> Path | None:
    args = parse(argv)
    if args.run_item:
        Path(args.result_file).write_text(json.dumps(run_item(args.run_item, args)))
        return None
    env = environment(args.device)
    print(f"GPU check on {env['device_name']} (torch {env['torch']}, CUDA {env['cuda']}), preset {args.preset}, "
          f"{args.frames}x{args.height}x{args.width}", flush=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", env["device_name"]).strip("-").lower()
    kind = "gpu" if args.device == "cuda" else "cpu"
    suffix = args.tag and f"-{args.tag}"
    path = Path(args.out_dir) / f"{kind}-{slug}-{env['date']}{suffix}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"environment": env, "preset": args.preset, "video": [args.frames, args.height, args.width],
               "head_features": args.head_features, "rgb_refine": not args.no_rgb_refine,
               "supervised_frames": args.supervised_frames, "rgb_refine_stride": args.rgb_refine_stride,
               "compile_mode": args.compile_mode, "channels_last": args.channels_last, "quick": args.quick,
               "runs": args.runs, "warmup": args.warmup,
               "results": {}}
    for name in args.items:
        result = _child(name, args, max(args.item_timeout, MIN_TIMEOUT_S.get(name, 0.0)))
        payload["results"][name] = result
        # Written and printed after every item: a run cut short by the device's time limit keeps
        # what it measured.
        path.write_text(json.dumps(payload, indent=2))
        print(f"  {name}: {result['status']} ({result.get('wall_s', 0):.0f} s)", flush=True)
        print_table({name: result})
        sys.stdout.flush()
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
