"""Loader throughput for training windows: samples/s and MB/s, from the scene files and from the target cache.

    python scripts/bench_loader.py                      # generates one full-size scene first
    python scripts/bench_loader.py --root R --metadata M  # real data
    python scripts/bench_loader.py --step-rate 20        # compare with a step rate of your own

A 49-frame window at stride 2 touches 49 PNGs, ~97 motion-vector and ~97 distance files
(composition needs the intermediate steps); supervising K frames (the cached path's
data.window.supervised_frames) touches about 2K PNGs and 2K of each.  MB/s counts the bytes
of the files a window touches; 'decoded MB/s' counts the arrays it produces.

Both paths load what stage 1's cached mode trains on (fixed windows, whole-window RGB only
when all frames are supervised): 'files' reads the scene files as features.cache_targets=false
does, 'targets' reads the window's entry of the target cache (stages/target_cache.py), built
first in a temporary folder (its build time and size are printed).  Each rate is set against
the cached heads step's windows/s on an H100 from benchmarks/results/ (the file is named), or
--step-rate.  Files read twice are in the page cache either way.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from data.dataset import DataConfig, SimPhysicsDataset
from data.sampling import WindowSpec
from data.windows import FixedWindows
from stages.target_cache import TargetCache

REPO = Path(__file__).resolve().parents[1]


def generate_full_scene(out: Path, size: int | None = None, frames: int | None = None) -> tuple[Path, Path]:
    """One 131-frame 480x480 scene (or ``size``^2, ``frames`` long) through the project's own generator."""
    root, csv = out / "scenes", out / "bench.csv"
    smaller = [*(["--size", str(size), str(size)] if size else []), *(["--frames", str(frames)] if frames else [])]
    subprocess.run([sys.executable, str(REPO / "scripts/generate_scenes.py"), "--out", str(root), "--preset", "full",
                    "--families", "ball_collide", "--scenes-per-family", "1", *smaller], check=True)
    subprocess.run([sys.executable, str(REPO / "scripts/make_metadata.py"), str(root), "--out", str(csv),
                    "--split", "1", "0", "0"], check=True)
    return root, csv


def _touched_bytes(dataset: SimPhysicsDataset, sample: dict, cached: bool = False) -> int:
    """Bytes of the files one sample read: its RGB frames, and per supervised frame the flow and
    distance files of every simulator step back to the previous window frame; from the target
    cache, the rows of its entry (RGB as uint8)."""
    if cached:
        rgb = sample.get("rgb", sample.get("frame_rgb"))
        rows = len(rgb) if "rgb" in sample else len(set(sample["frame_index"].tolist()) |
                                                     {max(t - 1, 0) for t in sample["frame_index"].tolist()})
        targets = ("flow", "flow_valid", "depth", "depth_valid")
        return sum(sample[n].numel() * sample[n].element_size() for n in targets) + rows * rgb[0].numel()
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


def bench(dataset, samples: int, workers: int, cached: bool = False) -> dict[str, float]:
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                        sampler=[i % len(dataset) for i in range(samples)])
    base = dataset.windows.base if cached else getattr(dataset, "base", dataset)
    touched = decoded = 0
    start = time.perf_counter()
    for sample in loader:
        touched += _touched_bytes(base, sample, cached)
        decoded += _decoded_bytes(sample)
    seconds = time.perf_counter() - start
    return {"samples_per_s": samples / seconds, "file_mb_per_s": touched / seconds / 1e6,
            "decoded_mb_per_s": decoded / seconds / 1e6, "seconds": seconds}


class TargetItems(Dataset):
    """The items of ``windows`` read from the target cache (what CachedFeatureWindows reads besides the taps)."""

    def __init__(self, windows: FixedWindows, targets: TargetCache) -> None:
        self.windows, self.targets = windows, targets

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict:
        window, select, view = self.windows.draw(index)
        return self.targets.load(window, select=select, video=self.windows.video, view=view)


def h100_step_rates(results: Path = REPO / "benchmarks/results") -> dict[int, list[tuple[float, str]]]:
    """Cached stage-1 step rates (windows/s) measured on H100s, by supervised frames (0 = all):
    (rate, 'file: what') for the eager recipe step (stage1_step) and compiled heads (stage1_compiled)."""
    rates: dict[int, list[tuple[float, str]]] = {}
    for path in sorted(results.glob("*.json")):
        data = json.loads(path.read_text())
        if "H100" not in data.get("environment", {}).get("device_name", ""):
            continue
        for item in ("stage1_step", "stage1_compiled"):
            entry = data.get("results", {}).get(item, {})
            if entry.get("status") != "ok" or entry.get("rgb_refine_stride", 1) != 1:
                continue
            frames = entry.get("supervised_frames", 0) or 0
            what = f"{path.name}: {item}, cached_step_ms {entry['cached_step_ms']:.1f}"
            rates.setdefault(frames, []).append((1000.0 / entry["cached_step_ms"], what))
    return rates


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="data root (default: generate one full-size scene in a temp dir)")
    parser.add_argument("--metadata", help="metadata CSV for --root")
    parser.add_argument("--scene-size", type=int, help="generated scene's size (default: the full preset's 480)")
    parser.add_argument("--scene-frames", type=int, help="generated scene's frames (default: the full preset's 131)")
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--stride", type=int, default=2)
    parser.add_argument("--size", type=int, default=480)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[4, 2], help="DataLoader worker counts to try")
    parser.add_argument("--supervised-frames", type=int, nargs="+", default=[0, 8],
                        help="frames supervised per window: 0 = all (with whole-window RGB), K > 0 = K frames")
    parser.add_argument("--paths", nargs="+", choices=["files", "targets"], default=["files", "targets"])
    parser.add_argument("--step-rate", type=float, help="heads step windows/s to compare with (default: the fastest "
                                                        "H100 cached step in benchmarks/results/ per supervised frames)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root, csv = ((Path(args.root), Path(args.metadata)) if args.root
                     else generate_full_scene(Path(tmp), args.scene_size, args.scene_frames))
        config = DataConfig(root=str(root), metadata=str(csv), height=args.size, width=args.size,
                            window=WindowSpec(num_frames=args.frames, stride=args.stride))
        rates, known = {}, h100_step_rates()
        for supervised in args.supervised_frames:
            windows = FixedWindows(SimPhysicsDataset(config), per_scene=4, repeat=4, supervised_frames=supervised,
                                   video=not supervised)
            for path in args.paths:
                dataset = windows if path == "files" else _target_items(windows, Path(tmp) / f"cache-{supervised}")
                for workers in args.workers:
                    result = bench(dataset, args.samples, workers, cached=path == "targets")
                    rates[(supervised, path, workers)] = result["samples_per_s"]
                    print(f"{args.frames}x{args.size}^2 stride {args.stride}, supervised frames {supervised or 'all'}, "
                          f"{path}, workers={workers}: {result['samples_per_s']:.2f} samples/s, "
                          f"{result['file_mb_per_s']:.0f} MB/s of files, {result['decoded_mb_per_s']:.0f} MB/s "
                          f"decoded ({args.samples} samples in {result['seconds']:.1f} s)", flush=True)
            _against_step(rates, supervised, args.workers, args.step_rate, known.get(supervised, []))


def _target_items(windows: FixedWindows, root: Path) -> TargetItems:
    targets = TargetCache(root, windows)
    start = time.perf_counter()
    targets.build(show_progress=False)
    size = targets.store.size_bytes()
    print(f"target cache: {len(targets.keys)} entries built in {time.perf_counter() - start:.1f} s, "
          f"{size / len(targets.keys) / 1e6:.0f} MB each", flush=True)
    return TargetItems(windows, targets)


def _against_step(rates: dict, supervised: int, workers: list[int], step_rate: float | None,
                  known: list[tuple[float, str]]) -> None:
    """Each path's windows/s over the fastest step's, and the targets path's over the files path's."""
    steps = [(step_rate, "--step-rate")] if step_rate else sorted(known)[-2:]  # eager and compiled, fastest last
    for rate, source in steps:
        print(f"  step rate {rate:.1f} windows/s ({source})")
    fastest = steps[-1][0] if steps else None
    for count in workers:
        files, cached = rates.get((supervised, "files", count)), rates.get((supervised, "targets", count))
        parts = [f"{path} {rate / fastest:.2f}x" for path, rate in (("files", files), ("targets", cached))
                 if rate and fastest]
        if files and cached:
            parts.append(f"targets/files {cached / files:.1f}x")
        print(f"  workers={count}: loader / fastest step: {', '.join(parts) or 'no step rate known'}", flush=True)


if __name__ == "__main__":
    main()
