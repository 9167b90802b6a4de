"""Backbone numbers: parameter counts, the FLOPs of a forward and of a stage-2 LoRA step, tiny CPU
timings, and (with --device cuda) the TI2V-5B DiT forward and stage-2 step at 49x480x480 in bf16
with achieved TFLOP/s and MFU, and the heads' share of the stage-2 step.

    python scripts/bench_backbone.py                      # counts + tiny CPU timing
    python scripts/bench_backbone.py --device cuda        # + 5B forward and stage-2 step on the GPU
    python scripts/bench_backbone.py --device cuda --peak-tflops 756 --json out.json

MFU of the stage-2 step counts the DiT's FLOPs (forward, input-gradient backward, checkpoint
recompute: world_model/flops.py); the heads and physics terms cost time but count no FLOPs.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from scripts.gpu_item_stage2 import item_stage2_step
from world_model.benchmark import benchmark_dit_forward
from world_model.flops import dit_forward_flops, dit_train_step_flops
from world_model.models import (
    build_dit,
    build_text_encoder,
    build_vae,
    count_parameters,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu, or cuda to also time the 5B DiT")
    ap.add_argument("--runs", type=int, default=5, help="timed forwards (median reported)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed forwards first")
    ap.add_argument("--frames", type=int, default=49, help="video frames for the 5B run")
    ap.add_argument("--size", type=int, default=480, help="video height = width for the 5B run")
    ap.add_argument("--attention", default="auto", help="auto, flash_attn_3, flash_attn_2, sdpa")
    ap.add_argument("--peak-tflops", type=float, default=None, help="override the bf16 peak for MFU")
    ap.add_argument("--heads-frames", type=int, default=13,
                    help="stage-2 step: heads and physics terms on K contiguous frames (objective.heads_frames; 0 = all)")
    ap.add_argument("--json", type=Path, default=None, help="also write all results here")
    return ap.parse_args(argv)


def stage2_step(preset: str, device: torch.device, frames: int, size: int, args: argparse.Namespace) -> dict:
    """The GPU check's stage-2 item (checkpointed, K decoded frames), printed in one line."""
    heads_frames = min(args.heads_frames, frames)
    result = item_stage2_step(preset, device, frames, size, size, runs=args.runs, warmup=args.warmup,
                              gradient_checkpointing=True, heads_frames=heads_frames, peak_tflops=args.peak_tflops)
    mfu = f"MFU {result['mfu']:.1%}" if result["mfu"] else "MFU n/a (no peak)"
    print(f"{preset} stage-2 LoRA step on {device} ({frames}x{size}^2, checkpointed, heads on {heads_frames or frames} "
          f"frames): {result['step_ms']:.1f} ms, {result['dit_step_tflop']:.3g} TFLOP counted, "
          f"{result['tflops']:.3g} TFLOP/s, {mfu}, heads {result['heads_ms']:.1f} ms = "
          f"{result['heads_share']:.0%} of the step, peak {result['peak_gib']:.1f} GiB")
    return result


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    results: dict = {"params": {}}
    for preset in ("tiny", "ti2v_5b"):
        results["params"][preset] = {
            "dit": count_parameters(build_dit(preset, empty=True)),
            "vae": count_parameters(build_vae(preset, empty=True)),
            "text_encoder": count_parameters(build_text_encoder(preset, empty=True)),
        }
        print(f"{preset:8s} params: " + ", ".join(f"{k} {v:,}" for k, v in results["params"][preset].items()))
    f5 = dit_forward_flops("ti2v_5b", args.frames, args.size, args.size)
    print(f"ti2v_5b forward FLOPs at {args.frames}x{args.size}^2: {f5 / 1e12:.2f} TFLOP")
    step = dit_train_step_flops("ti2v_5b", args.frames, args.size, args.size, gradient_checkpointing=True)
    results["ti2v_5b_lora_step_flops"] = step
    print("ti2v_5b LoRA step FLOPs, checkpointed: " + " + ".join(
        f"{step[k] / 1e12:.1f} {k}" for k in ("forward", "backward", "recompute")) + f" = {step['total'] / 1e12:.1f} TFLOP")

    tiny = benchmark_dit_forward("tiny", "cpu", torch.float32, frames=9, height=64, width=64,
                                 runs=args.runs, warmup=args.warmup)
    results["tiny_cpu"] = tiny
    print(f"tiny DiT forward on CPU (9x64^2, {tiny['tokens']} tokens): median {tiny['median_s'] * 1e3:.2f} ms")
    results["tiny_cpu_stage2"] = stage2_step("tiny", torch.device("cpu"), 9, 64, args)

    if args.device.startswith("cuda"):
        big = benchmark_dit_forward("ti2v_5b", args.device, torch.bfloat16, frames=args.frames,
                                    height=args.size, width=args.size, runs=args.runs,
                                    warmup=args.warmup, attention_backend=args.attention,
                                    peak_tflops=args.peak_tflops)
        results["ti2v_5b_cuda"] = big
        mfu = f"{big['mfu'] * 100:.1f}% of {big['peak_tflops']:.0f}" if big["mfu"] else "n/a (unknown peak)"
        print(f"ti2v_5b DiT forward on {big['device']} ({big['tokens']} tokens, bf16, {big['attention_backend']}): "
              f"median {big['median_s'] * 1e3:.1f} ms, {big['tflops']:.1f} TFLOP/s, MFU {mfu}, "
              f"peak mem {big['max_memory_gib']:.1f} GiB")
        results["ti2v_5b_cuda_stage2"] = stage2_step("ti2v_5b", torch.device(args.device), args.frames, args.size, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
