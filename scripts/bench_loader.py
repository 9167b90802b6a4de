"""Loader throughput for training windows: samples/s and MB/s.

    python scripts/bench_loader.py                      # generates one full-size scene first
    python scripts/bench_loader.py --root R --metadata M  # real data

A 49-frame window at stride 2 touches 49 PNGs, ~97 motion-vector files and ~97 distance
files (composition needs the intermediate steps); supervising K frames (the cached path's
data.window.supervised_frames) touches about 2K PNGs and 2K of each.  MB/s counts the bytes
of the files a window touches; 'decoded MB/s' counts the arrays it produces.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from data.dataset import DataConfig, SimPhysicsDataset
from data.sampling import WindowSpec

REPO = Path(__file__).resolve().parents[1]


def generate_full_scene(out: Path) -> tuple[Path, Path]:
    """One 131-frame 480x480 scene through the project's own generator (same code users run)."""
    root, csv = out / "scenes", out / "bench.csv"
    subprocess.run([sys.executable, str(REPO / "scripts/generate_scenes.py"), "--out", str(root), "--preset", "full",
                    "--families", "ball_collide", "--scenes-per-family", "1"], check=True)
    subprocess.run([sys.executable, str(REPO / "scripts/make_metadata.py"), str(root), "--out", str(csv),
                    "--split", "1", "0", "0"], check=True)
    return root, csv


def _touched_bytes(dataset: SimPhysicsDataset, sample: dict) -> int:
    """Bytes of the files one sample read: its RGB frames, and per supervised frame the flow and
    distance files of every simulator step back to the previous window frame."""
    scene = {e.video: s for e, s in zip(dataset.entries, dataset.scenes)}[sample["video"]]
    index = {step: i for i, step in enumerate(scene.steps)}
    frames = [index[int(s)] for s in sample["steps"]]
    supervised = sample["frame_index"].tolist() if "frame_index" in sample else range(len(frames))
    rgb = set(range(len(frames))) if "rgb" in sample else {j for t in supervised for j in (t, max(t - 1, 0))}
    total = sum(scene.rgb[frames[j]].stat().st_size for j in rgb)
    for t in supervised:
        total += scene.depth[frames[t]].stat().st_size
        if t > 0:
            steps = range(frames[t - 1] + 1, frames[t] + 1)
            total += sum(scene.flow[i].stat().st_size for i in steps)
            total += sum(scene.depth[i].stat().st_size for i in steps[:-1])  # composition's intermediate steps
    return total


def _decoded_bytes(sample: dict) -> int:
    return sum(v.numel() * v.element_size() for v in sample.values() if isinstance(v, torch.Tensor))


def bench(dataset, samples: int, workers: int) -> dict[str, float]:
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                        sampler=[i % len(dataset) for i in range(samples)])
    base = getattr(dataset, "base", dataset)
    touched = decoded = 0
    start = time.perf_counter()
    for sample in loader:
        touched += _touched_bytes(base, sample)
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
    parser.add_argument("--supervised-frames", type=int, nargs="+", default=[0, 8],
                        help="frames supervised per window: 0 = all (random training windows, the online "
                             "path's loader); K > 0 = the cached path's loader (fixed windows, K frames)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root, csv = (Path(args.root), Path(args.metadata)) if args.root else generate_full_scene(Path(tmp))
        config = DataConfig(root=str(root), metadata=str(csv), height=args.size, width=args.size,
                            window=WindowSpec(num_frames=args.frames, stride=args.stride))
        rates = {}
        for supervised in args.supervised_frames:
            dataset = _dataset(config, supervised)
            for workers in args.workers:
                result = bench(dataset, args.samples, workers)
                rates[(supervised, workers)] = result["samples_per_s"]
                print(f"{args.frames}x{args.size}^2 stride {args.stride}, supervised frames {supervised or 'all'}, "
                      f"workers={workers}: {result['samples_per_s']:.2f} samples/s, {result['file_mb_per_s']:.0f} MB/s "
                      f"of files, {result['decoded_mb_per_s']:.0f} MB/s decoded ({args.samples} samples in "
                      f"{result['seconds']:.1f} s)")
        for (supervised, workers), rate in rates.items():
            if supervised and (0, workers) in rates:
                print(f"workers={workers}: {supervised} supervised frames load {rate / rates[(0, workers)]:.1f}x "
                      "the windows/s of all frames")


def _dataset(config: DataConfig, supervised: int):
    """All frames: random training windows (online path).  K frames: what the cached path loads."""
    from data.windows import FixedWindows

    if not supervised:
        return SimPhysicsDataset(config, train=True, seed=0)
    return FixedWindows(SimPhysicsDataset(config), per_scene=4, repeat=4, supervised_frames=supervised, video=False)

if __name__ == "__main__":
    main()
