"""Counted cost of a stage-1 heads step against the backbone forward it replaces.

    python scripts/head_cost.py                         # TI2V-5B geometry, 49x480^2
    python scripts/head_cost.py --supervised-frames 0 4 8 16 --features 64 --no-rgb-refine

For each number K of supervised frames: forward+backward FLOPs of both heads, the share spent in
the full-resolution RGB refiners, the activations autograd saves, and the FLOP-bound ratio
(DiT forward + heads) / heads: what the cached path could gain over the online path if the heads
ran as efficiently as the backbone.  Then the roofline of a bf16 step on one card (heads/roofline.py:
bytes moved by eager kernels, the summed per-kernel bound, its memory-bound share) and the ratio
it allows against the DiT forward measured on that card (--dit-ms): the most the cached path can
gain with ideal kernels.  Measured ratios come from scripts/gpu_check.sh.
"""

from __future__ import annotations

import argparse

from heads.config import HeadConfig
from heads.cost import head_step_cost
from heads.roofline import head_step_roofline
from world_model.flops import GPUS, dit_forward_flops
from world_model.presets import get_preset

MEASURED_DIT_MS = {"h100": 81.8, "h200": 76.6}
"""TI2V-5B DiT forward at 49x480^2, bf16, sdpa: gpu-nvidia-h100-80gb-hbm3-2026-11-26.json and
gpu-nvidia-h200-2026-11-26-h200-baseline.json (dit_forward median_s)."""


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="ti2v_5b")
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--size", type=int, nargs=2, default=(480, 480), metavar=("H", "W"))
    parser.add_argument("--supervised-frames", type=int, nargs="+", default=[0, 16, 8, 4])
    parser.add_argument("--features", type=int, default=128)
    parser.add_argument("--no-rgb-refine", action="store_true")
    parser.add_argument("--rgb-refine-stride", type=int, default=1, help="1 = full resolution, 2 = half")
    parser.add_argument("--card", choices=sorted(GPUS), default="h100")
    parser.add_argument("--dit-ms", type=float, help="measured DiT forward on --card, ms (default: "
                        f"{MEASURED_DIT_MS}, benchmarks/results/gpu-*.json)")
    args = parser.parse_args(argv)
    card, dit_ms = GPUS[args.card], args.dit_ms or MEASURED_DIT_MS.get(args.card)
    if dit_ms is None:
        parser.error(f"no measured DiT forward on {card.name}: pass --dit-ms")
    preset = get_preset(args.preset)
    grid = preset.token_grid(args.frames, *args.size)
    frames_per_latent, spatial, _ = preset.token_stride
    cfg = HeadConfig(in_channels=preset.hidden_dim, num_taps=len(preset.default_taps), spatial_factor=spatial,
                     temporal_factor=frames_per_latent, features=args.features, rgb_refine=not args.no_rgb_refine,
                     rgb_refine_stride=args.rgb_refine_stride)
    dit = dit_forward_flops(preset, args.frames, *args.size)
    print(f"{args.preset} {args.frames}x{args.size[0]}x{args.size[1]}: DiT forward {dit / 1e12:.2f} TFLOP; heads "
          f"features={args.features}, rgb_refine={cfg.rgb_refine} (stride {cfg.rgb_refine_stride})")
    print(f"{'frames':>8}{'heads TFLOP':>13}{'refiner':>9}{'saved GiB':>11}{'FLOP-bound online/cached':>26}"
          f"  | {card.name}: {'kernels':>8}{'GB moved':>10}{'roofline ms':>13}{'mem-bound':>11}"
          f"{f'bound vs DiT {dit_ms:g} ms':>24}")
    rows = []
    for k in args.supervised_frames:
        cost = head_step_cost(cfg, grid, k)
        roof = head_step_roofline(cfg, grid, k, card)
        ratio = (dit + cost.flops) / cost.flops
        roof_ms = 1000 * roof.seconds
        roof_ratio = (dit_ms + roof_ms) / roof_ms
        rows.append({"supervised_frames": k, "flops": cost.flops, "refiner_share": cost.refiner_flops / cost.flops,
                     "saved_gib": cost.saved_gib, "flop_bound_ratio": ratio, "kernels": roof.ops,
                     "gb_moved": roof.bytes / 1e9, "roofline_ms": roof_ms,
                     "memory_bound_share": roof.memory_bound_share, "roofline_ratio": roof_ratio})
        print(f"{k or 'all':>8}{cost.flops / 1e12:>13.3f}{cost.refiner_flops / cost.flops:>9.0%}"
              f"{cost.saved_gib:>11.2f}{ratio:>25.1f}x  | {'':>{len(card.name) + 1}}{roof.ops:>8}"
              f"{roof.bytes / 1e9:>10.1f}{roof_ms:>13.1f}{roof.memory_bound_share:>11.0%}{roof_ratio:>23.1f}x")
    return rows


if __name__ == "__main__":
    main()
