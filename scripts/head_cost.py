"""Counted cost of a stage-1 heads step against the backbone forward it replaces.

    python scripts/head_cost.py                         # TI2V-5B geometry, 49x480^2
    python scripts/head_cost.py --supervised-frames 0 4 8 16 --features 64 --no-rgb-refine

For each number K of supervised frames: forward+backward FLOPs of both heads, the share spent in
the full-resolution RGB refiners, the activations autograd saves, and the FLOP-bound ratio
(DiT forward + heads) / heads: what the cached path could gain over the online path if the heads
ran as efficiently as the backbone.  Measured ratios come from scripts/gpu_check.sh.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import argparse

from heads.config import HeadConfig
from heads.cost import head_step_cost
from world_model.flops import dit_forward_flops
from world_model.presets import get_preset


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="ti2v_5b")
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--size", type=int, nargs=2, default=(480, 480), metavar=("H", "W"))
    parser.add_argument("--supervised-frames", type=int, nargs="+", default=[0, 16, 8, 4])
    parser.add_argument("--features", type=int, default=128)
    parser.add_argument("--no-rgb-refine", action="store_true")
    parser.add_argument("--rgb-refine-stride", type=int, default=1, help="1 = full resolution, 2 = half")
    args = parser.parse_args(argv)
    preset = get_preset(args.preset)
    grid = preset.token_grid(args.frames, *args.size)
    frames_per_latent, spatial, _ = preset.token_stride
    cfg = HeadConfig(in_channels=preset.hidden_dim, num_taps=len(preset.default_taps), spatial_factor=spatial,
                     temporal_factor=frames_per_latent, features=args.features, rgb_refine=not args.no_rgb_refine,
                     rgb_refine_stride=args.rgb_refine_stride)
    dit = dit_forward_flops(preset, args.frames, *args.size)
    print(f"{args.preset} {args.frames}x{args.size[0]}x{args.size[1]}: DiT forward {dit / 1e12:.2f} TFLOP; heads "
          f"features={args.features}, rgb_refine={cfg.rgb_refine} (stride {cfg.rgb_refine_stride})")
    print(f"{'frames':>8}{'heads TFLOP':>13}{'refiner':>9}{'saved GiB':>11}{'FLOP-bound online/cached':>26}")
    rows = []
    for k in args.supervised_frames:
        cost = head_step_cost(cfg, grid, k)
        ratio = (dit + cost.flops) / cost.flops
        rows.append({"supervised_frames": k, "flops": cost.flops, "refiner_share": cost.refiner_flops / cost.flops,
                     "saved_gib": cost.saved_gib, "flop_bound_ratio": ratio})
        print(f"{k or 'all':>8}{cost.flops / 1e12:>13.3f}{cost.refiner_flops / cost.flops:>9.0%}"
              f"{cost.saved_gib:>11.2f}{ratio:>25.1f}x")
    return rows


if __name__ == "__main__":
    main()
