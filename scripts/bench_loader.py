"""Loader throughput for training windows: samples/s and MB/s.

    python scripts/bench_loader.py                      # generates one full-size scene first
    python scripts/bench_loader.py --root R --metadata M  # real data

A 49-frame window at stride 2 touches 49 PNGs, ~97 motion-vector files and ~97 distance
files (composition needs the intermediate steps).  MB/s counts the bytes of the files a
window touches; 'decoded MB/s' counts the arrays it produces.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import argparse
import subprocess
import tempfile
import time

import torch
from torch.utils.data import DataLoader

from data.dataset import DataConfig, SimPhysicsDataset
from data.sampling import WindowSpec

REPO = Path(__file__).resolve().parents[1]


def _generate_full_scene(out: Path) -> tuple[Path, Path]:
    """One 131-frame 480x480 scene through the project's own generator (same code users run)."""
    root, csv = out / "scenes", out / "bench.csv"
    subprocess.run([sys.executable, str(REPO / "scripts/generate_scenes.py"), "--out", str(root), "--preset", "full",
                    "--families", "ball_collide", "--scenes-per-family", "1"], check=True)
    subprocess.run([sys.executable, str(REPO / "scripts/make_metadata.py"), str(root), "--out", str(csv),
                    "--split", "1", "0", "0"], check=True)
    return root, csv


def _touched_bytes(dataset: SimPhysicsDataset, sample: dict) -> int:
    scene = {e.video: s for e, s in zip(dataset.entries, dataset.scenes)}[sample["video"]]
    index = {step: i for i, step in enumerate(scene.steps)}
    first, last = index[int(sample["steps"][0])], index[int(sample["steps"][-1])]
    frames = [index[int(s)] for s in sample["steps"]]
    total = sum(scene.rgb[i].stat().st_size for i in frames)
    total += sum(scene.flow[i].stat().st_size + scene.depth[i].stat().st_size for i in range(first + 1, last + 1))
    return total + scene.depth[first].stat().st_size


def _decoded_bytes(sample: dict) -> int:
    return sum(v.numel() * v.element_size() for v in sample.values() if isinstance(v, torch.Tensor))


def bench(dataset: SimPhysicsDataset, samples: int, workers: int) -> dict[str, float]:
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                        sampler=[i % len(dataset) for i in range(samples)])
    touched = decoded = 0
    start = time.perf_counter()
    for sample in loader:
        touched += _touched_bytes(dataset, sample)
        decoded += _decoded_bytes(sample)
    seconds = time.perf_counter() - start
    return {"samples_per_s": samples / seconds, "file_mb_per_s": touched / seconds / 1e6,
            "decoded_mb_per_s": decoded / seconds / 1e6, "seconds": seconds}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="data root (default: generate one full-size scene in a temp dir)")
    parser.add_argument("--metadata", help="metadata CSV for --root")
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--stride", type=int, default=2)
    parser.add_argument("--size", type=int, default=480)
    parser.add_argument("--samples", type=int, default=6)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts to try")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root, csv = (Path(args.root), Path(args.metadata)) if args.root else _generate_full_scene(Path(tmp))
        config = DataConfig(root=str(root), metadata=str(csv), height=args.size, width=args.size,
                            window=WindowSpec(num_frames=args.frames, stride=args.stride))
        dataset = SimPhysicsDataset(config, train=True, seed=0)
        for workers in args.workers:
            result = bench(dataset, args.samples, workers)
            print(f"{args.frames}x{args.size}^2 stride {args.stride}, workers={workers}: "
                  f"{result['samples_per_s']:.2f} samples/s, {result['file_mb_per_s']:.0f} MB/s of files, "
                  f"{result['decoded_mb_per_s']:.0f} MB/s decoded ({args.samples} samples in {result['seconds']:.1f} s)")


if __name__ == "__main__":
    main()
