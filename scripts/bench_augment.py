"""What each training augmentation costs: loader time per sample with it on and off, and the
stage-1 feature cache's build time and disk for V views per window.

    python scripts/bench_augment.py                           # generates one full-size scene first
    python scripts/bench_augment.py --root R --metadata M --frames 9 --size 128 --views 1 2 4

Loader rows time random training windows (the online path's loader, one process).  Stride jitter
reads the flow and distance files of every simulator step it composes over, so its cost grows
with the drawn stride.  The cache rows build the tiny random backbone's features (what the demo
and the tests use) for V views of one window per scene, then print the bf16 size the same
windows would take with TI2V-5B's four taps.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from data.augment import AugmentConfig
from data.dataset import DataConfig, SimPhysicsDataset
from data.sampling import WindowSpec
from scripts.bench_loader import generate_full_scene

COLOUR = {"brightness": 0.3, "contrast": 0.3, "saturation": 0.3, "hue": 0.05}
CROP = {"crop_scale": (0.5, 1.0), "crop_ratio": (0.8, 1.25)}


def settings(strides: tuple[int, ...]) -> dict[str, tuple[dict, float]]:
    """Name -> (AugmentConfig fields, data.hflip_prob) of each setting timed."""
    jitter = {"strides": strides}
    return {"none": ({}, 0.0), "colour": (COLOUR, 0.0), "crop": (CROP, 0.0), "flip": ({}, 1.0),
            f"strides {','.join(map(str, strides))}": (jitter, 0.0), "all": ({**COLOUR, **CROP, **jitter}, 0.5)}


def loader_seconds(config: DataConfig, samples: int, strides: tuple[int, ...]) -> dict[str, float]:
    """Median seconds per training sample of each setting, timed in turns (sample i of every
    setting, then sample i + 1) so that drifting load on the machine hits all settings alike; each
    window is read once untimed first, so no setting pays the disk for the others."""
    datasets = {name: SimPhysicsDataset(replace(config, hflip_prob=flip), train=True, seed=0,
                                        augment=AugmentConfig(**augment))
                for name, (augment, flip) in settings(strides).items()}
    times: dict[str, list[float]] = {name: [] for name in datasets}
    for index in range(samples + 1):
        datasets["none"][index % len(datasets["none"])]  # files of this window into the page cache for all
        for name, dataset in datasets.items():
            start = time.perf_counter()
            dataset[index % len(dataset)]
            if index:  # the first sample warms caches and imports
                times[name].append(time.perf_counter() - start)
    return {name: float(np.median(seconds)) for name, seconds in times.items()}


def cache_cost(config: DataConfig, views: int, cache_dir: Path, strides: tuple[int, ...]) -> tuple[float, int]:
    """(seconds, bytes) of building the tiny backbone's cache of ``views`` views of one window per scene."""
    from data.windows import FixedWindows
    from stages.features import FeatureCache, FeatureSource
    from stages.trainer.sections import BackboneConfig

    augment = AugmentConfig(**{**COLOUR, **CROP, "strides": strides})
    windows = FixedWindows(SimPhysicsDataset(replace(config, hflip_prob=0.5), augment=augment), per_scene=1,
                           views=views)
    source = FeatureSource(BackboneConfig(), torch.device("cpu"), cache_dir)
    cache = FeatureCache(cache_dir, windows, source)
    start = time.perf_counter()
    cache.build(source, show_progress=False)
    seconds = time.perf_counter() - start
    return seconds, sum(p.stat().st_size for p in (cache_dir / "features").rglob("*.safetensors"))


def ti2v_bytes_per_window(frames: int, height: int, width: int) -> int:
    """bf16 bytes of one window's features with TI2V-5B's default taps."""
    from world_model.presets import get_preset

    preset = get_preset("ti2v_5b")
    return len(preset.taps(None)) * preset.hidden_dim * int(np.prod(preset.token_grid(frames, height, width))) * 2


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="data root (default: generate one full-size scene in a temp dir)")
    parser.add_argument("--metadata", help="metadata CSV for --root")
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--stride", type=int, default=2)
    parser.add_argument("--size", type=int, default=480)
    parser.add_argument("--samples", type=int, default=4, help="timed samples per setting")
    parser.add_argument("--strides", type=int, nargs="+", default=[1, 2],
                        help="stride jitter set (the largest must fit: 49 frames of 131 allow 1 and 2)")
    parser.add_argument("--views", type=int, nargs="*", default=[1, 2, 4],
                        help="views per window to build feature caches for (none: skip the cache rows)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        root, csv = (Path(args.root), Path(args.metadata)) if args.root else generate_full_scene(Path(tmp))
        config = DataConfig(root=str(root), metadata=str(csv), height=args.size, width=args.size,
                            window=WindowSpec(num_frames=args.frames, stride=args.stride))
        strides = tuple(args.strides)
        medians = loader_seconds(config, args.samples, strides)
        print(f"loader, {args.frames}x{args.size}^2 windows at stride {args.stride}, one process, median of "
              f"{args.samples} samples:")
        for name, seconds in medians.items():
            print(f"  {name:<14} {seconds * 1e3:8.0f} ms/sample  ({seconds / medians['none']:.2f}x none)")
        for views in args.views:
            seconds, size = cache_cost(config, views, Path(tmp) / f"cache{views}", strides)
            scenes = len(SimPhysicsDataset(config).scenes)
            print(f"feature cache, {views} view(s) x {scenes} window(s), tiny backbone: build {seconds:.1f} s, "
                  f"{size / 1e6:.1f} MB; TI2V-5B: {views * scenes * ti2v_bytes_per_window(args.frames, args.size, args.size) / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
