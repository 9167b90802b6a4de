"""Stage-1 feature cache: the frozen backbone's tapped grids of fixed windows, computed once.

With a fixed extraction timestep and noise seed, the features of a window depend only on its
pixels and prompt, so 10 epochs x repeat 100 reuse each one 1,000 times.  Windows are fixed
(evenly spaced per scene, centre crop, no flip) because an augmented window would have
different features.  Building is sharded over processes; entries are safetensors in bf16,
written atomically, keyed by everything that determines them (frame files, size, weights,
extraction settings), so a changed input can never be served a stale entry.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from data.dataset import SimPhysicsDataset
from data.sampling import training_subset
from stages.features import FeatureSource
from world_model.cache import TensorCache, sha256_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowRef:
    """One fixed window: a scene of the base data set and its first frame index."""

    scene_index: int
    start: int


class FixedWindows(Dataset):
    """Fixed windows of a data set, repeated ``repeat`` times per epoch, without augmentation.

    ``supervised_frames`` K > 0 (training) draws K frames per item to supervise, from
    (seed, epoch, index) like every other training draw; ``video`` False leaves out the
    whole-window RGB, which only the backbone needs (the cached path never runs it).
    """

    def __init__(self, base: SimPhysicsDataset, per_scene: int, repeat: int = 1, supervised_frames: int = 0,
                 seed: int = 0, video: bool = True) -> None:
        self.base, self.repeat, self.supervised_frames, self.seed, self.video = base, repeat, supervised_frames, seed, video
        self.epoch = 0
        self.refs = [WindowRef(s, start) for s in range(len(base.scenes)) for start in base.fixed_window_starts(s, per_scene)]

    def frames(self, ref: WindowRef) -> np.ndarray:
        spec = self.base.config.window
        return ref.start + spec.stride * np.arange(spec.num_frames)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.refs) * self.repeat

    def __getitem__(self, index: int) -> dict:
        select = training_subset(self.base.config.window.num_frames, self.supervised_frames, self.seed,
                                 self.epoch, index)
        return self.load(index % len(self.refs), select=select, video=self.video)

    def load(self, window: int, select: np.ndarray | None = None, video: bool = True) -> dict:
        """Window ``window`` (an index into ``refs``), all targets unless ``select`` is given."""
        ref = self.refs[window]
        sample = self.base.load_window(ref.scene_index, self.frames(ref), select=select, video=video)
        sample["window"] = window
        return sample


def window_key(windows: FixedWindows, ref: WindowRef, source: FeatureSource) -> str:
    """Hash of what the features of a window depend on (frame files by name, size and mtime)."""
    scene = windows.base.scenes[ref.scene_index]
    frames = windows.frames(ref)
    stats = [(scene.rgb[i].name, scene.rgb[i].stat().st_size, scene.rgb[i].stat().st_mtime_ns) for i in frames]
    config = windows.base.config
    return sha256_key(str(scene.directory.resolve()), stats, (config.height, config.width),
                      windows.base.entries[ref.scene_index].prompt, source.id, source.taps,
                      source.extraction.timestep, source.extraction.noise_seed, "bf16")


def estimate_bytes(source: FeatureSource, windows: int, frames: int, height: int, width: int) -> int:
    """bf16 bytes of all cached grids: windows x taps x dim x F' x H' x W' x 2."""
    grid = source.preset.token_grid(frames, height, width)
    return windows * len(source.taps) * source.preset.hidden_dim * int(np.prod(grid)) * 2


def check_budget(needed: int, max_gb: float, root: Path) -> None:
    """Refuse up front, with the numbers and the ways out, rather than fill the disk mid-run."""
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    limit = min(max_gb * 1e9, free)
    if needed > limit:
        reason = f"features.max_cache_gb={max_gb}" if max_gb * 1e9 < free else f"free disk {free / 1e9:.1f} GB"
        raise RuntimeError(
            f"feature cache would need {needed / 1e9:.1f} GB in {root}, above {reason}. Use fewer taps "
            "(backbone.taps), fewer windows (features.windows_per_scene), a larger budget, or "
            "features.mode=online")


class FeatureCache:
    """Keys, building and loading of cached features for one FixedWindows set."""

    def __init__(self, root: str | Path, windows: FixedWindows, source: FeatureSource) -> None:
        self.store = TensorCache(Path(root) / "features")
        self.windows, self.num_taps = windows, len(source.taps)
        self.keys = [window_key(windows, ref, source) for ref in windows.refs]

    def missing(self) -> list[int]:
        return [i for i, key in enumerate(self.keys) if not self.store.path(key).is_file()]

    def build(self, source: FeatureSource, rank: int = 0, world: int = 1, show_progress: bool = True,
              should_stop: Callable[[], bool] = lambda: False) -> int:
        """Extract features of the missing windows assigned to this rank; returns how many it wrote.

        ``should_stop`` is asked before each window: a stopped build keeps every entry written
        (each is atomic), and the next build computes only what is missing.
        """
        todo = [i for i in self.missing() if i % world == rank]
        written = 0
        for i in tqdm(todo, desc=f"feature cache (rank {rank})", disable=not show_progress or not todo):
            if should_stop():
                break
            sample = self.windows.load(i)
            taps = source.extract(sample["rgb"].unsqueeze(0), [sample["prompt"]])
            tensors = {f"tap{k}": t[0].to(torch.bfloat16).contiguous().cpu() for k, t in enumerate(taps)}
            self.store.put(self.keys[i], tensors, {"video": sample["video"], "steps": str(sample["steps"].tolist())})
            written += 1
        return written

    def load(self, window: int) -> list[torch.Tensor]:
        stored = self.store.get(self.keys[window])
        if stored is None:
            raise RuntimeError(f"feature cache entry for window {window} is missing or corrupt "
                               f"({self.store.path(self.keys[window])}); rebuild the cache")
        return [stored[f"tap{k}"] for k in range(self.num_taps)]


class CachedFeatureWindows(Dataset):
    """FixedWindows samples with their cached tapped grids attached under 'taps'."""

    def __init__(self, windows: FixedWindows, cache: FeatureCache) -> None:
        self.windows, self.cache = windows, cache

    def __len__(self) -> int:
        return len(self.windows)

    def set_epoch(self, epoch: int) -> None:
        self.windows.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict:
        sample = self.windows[index]
        sample["taps"] = self.cache.load(sample["window"])
        return sample
