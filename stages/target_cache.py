"""Training targets of fixed windows cached beside their features: one file per window view.

A window's targets from the scene files cost 49 PNGs plus ~97 motion-vector and ~97 distance
files at stride 2 (composition reads every simulator step in between), then the resize to the
model's resolution: about one window per second per loader worker at 49x480^2.  A cached heads
step wants 5-20 windows per second.  The targets of a fixed window view (data.windows) never
change, so they are computed once, at the model's resolution, and stored beside the features
(``<features.cache_dir>/targets``) in the same checksummed safetensors entries (world_model.cache):

  flow (T, 2, H, W) float32, flow_valid (T, H, W) bool, depth (T, H, W) float32, depth_valid,
  rgb_u8 (T, 3, H, W) uint8 when the view's RGB is whole 1/255 steps (no resize, no colour
  jitter: the loader's own float is u8 / 255, so exact), else rgb (T, 3, H, W) float32 (exact:
  float16 there made a run that built the cache differ from one that read it, past 1e-4 in the
  weights after 4 steps), and intrinsics, down_cam, dt, steps.

All T frames are stored; a training item's supervised frames (data.window.supervised_frames,
drawn per epoch) are cut at read time, reading only their rows of the file, so an item gives the
same tensors as ``FixedWindows.load`` (tests/test_target_cache.py).  The key covers everything the
stored tensors depend on: the files read (name, size, mtime), the frames (window start, frame
count, the view's stride), the view's crop, flip and colour, the output size and the data
config's flow convention, far clip and fallbacks.  Supervised frames are not in the key: they pick
rows of the same entry.  Augmentation in the cached path is per view, fixed when the cache is
built (features.views_per_window), so cached targets are exactly those of the view's pixels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data.augment import View
from data.scene_meta import SCENE_META
from data.windows import FixedWindows, WindowRef
from stages.features import CacheEntryError, load_or_leave_out
from world_model.cache import TensorCache, sha256_key

log = logging.getLogger(__name__)

FRAME_FIELDS = ("flow", "flow_valid", "depth", "depth_valid")
"""Per-frame targets, cut to a training item's supervised frames."""
WINDOW_FIELDS = ("intrinsics", "down_cam", "dt", "steps")
"""Per-window tensors, read whole."""


def _stat(path: Path) -> tuple[str, int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return path.name, stat.st_size, stat.st_mtime_ns


def target_key(windows: FixedWindows, ref: WindowRef, view: View | None = None) -> str:
    """Hash of what a window view's targets depend on (module docstring)."""
    base, config = windows.base, windows.base.config
    scene = base.scenes[ref.scene_index]
    frames = windows.frames(ref, None if view is None else view.stride)
    span = range(int(frames[0]), int(frames[-1]) + 1)  # composition reads every step in between
    flows = [scene.flow[base.convention.file_index(i)] for i in span[1:]]
    files = [scene.rgb[i] for i in frames] + [scene.depth[i] for i in span] + flows
    settings = (config.height, config.width, config.flow_convention, config.flow_units, config.flow_timing,
                config.far_clip_m, config.fov_deg, config.fps)
    return sha256_key("window-targets-v1", str(scene.directory.resolve()), [int(f) for f in frames],
                      [_stat(p) for p in files], _stat(scene.directory / SCENE_META), settings,
                      None if view is None else view.key())


def entry_bytes(frames: int, height: int, width: int) -> int:
    """Bytes of one entry: float32 flow (2 channels) and depth, two masks, RGB as uint8 (float32 for
    a resized or colour-jittered view is four times that)."""
    return frames * height * width * (2 * 4 + 4 + 1 + 1 + 3)


def sample_tensors(sample: dict) -> dict[str, torch.Tensor]:
    """The stored tensors of a whole-window sample (``FixedWindows.load`` with all frames and RGB)."""
    tensors = {name: sample[name] for name in (*FRAME_FIELDS, *WINDOW_FIELDS)}
    rgb = sample["rgb"]
    quantised = torch.round(rgb * 255.0).to(torch.uint8)
    if torch.equal(quantised.to(torch.float32).div_(255.0), rgb):
        tensors["rgb_u8"] = quantised
    else:
        tensors["rgb"] = rgb.to(torch.float32)
    return tensors


class TargetCache:
    """Keys, building and loading of cached targets for one FixedWindows set, entry for entry
    beside its FeatureCache: entry ``window * views + view``."""

    def __init__(self, root: str | Path, windows: FixedWindows) -> None:
        self.store = TensorCache(Path(root) / "targets")
        self.windows = windows
        self.entries = [(w, v) for w in range(len(windows.refs)) for v in range(windows.views)]
        self.keys = [target_key(windows, windows.refs[w], windows.view(w, v)) for w, v in self.entries]

    def missing(self) -> list[int]:
        return [i for i, key in enumerate(self.keys) if not self.store.path(key).is_file()]

    def repair(self, full: bool = False) -> list[str]:
        """Remove damaged entries (as FeatureCache.repair) so the build recomputes them."""
        return self.store.repair(self.keys, full)

    def build(self, rank: int = 0, world: int = 1, show_progress: bool = True,
              should_stop: Callable[[], bool] = lambda: False, skip_bad_windows: bool = False) -> int:
        """Compute the missing entries assigned to this rank (as FeatureCache.build); returns how
        many it wrote.  A window whose files cannot be read is left out with ``skip_bad_windows``
        (training then skips it through the bad-sample policy), else its error ends the build."""
        todo = [i for i in self.missing() if i % world == rank]
        with tqdm(total=len(todo), desc=f"target cache (rank {rank})", disable=not show_progress or not todo) as bar:
            return self.store.fill([(i, self.keys[i]) for i in todo], lambda i: self._compute(i, skip_bad_windows),
                                   should_stop, done=lambda: bar.update())

    def _compute(self, entry: int, skip_bad_windows: bool) -> tuple[dict, dict] | None:
        sample = load_or_leave_out(self.windows, self.entries[entry], skip_bad_windows, "target cache")
        return None if sample is None else self.entry(sample)

    @staticmethod
    def entry(sample: dict) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        return sample_tensors(sample), {"video": sample["video"], "window": str(sample["window"]),
                                        "view": str(sample["view"])}

    def store_sample(self, entry: int, sample: dict) -> None:
        """Write entry ``entry`` from a whole-window sample another build loaded anyway (the feature
        cache's), unless it is intact already or another process is writing it."""
        key = self.keys[entry]
        with self.store.claim(key, wait=False) as mine:
            if mine and self.store.check(key) is not None:
                self.store.put(key, *self.entry(sample))

    def load(self, window: int, select: np.ndarray | None = None, video: bool = True, view: int = 0) -> dict:
        """What ``FixedWindows.load`` gives for these arguments, from the window view's entry."""
        entry = window * self.windows.views + view
        frames = self.windows.base.config.window.num_frames
        at = np.arange(frames) if select is None else np.asarray(select, dtype=np.int64)
        prev = np.maximum(at - 1, 0)
        rgb_rows = list(range(frames)) if video else sorted(set(at.tolist()) | set(prev.tolist()))
        rows = {name: None if select is None else at.tolist() for name in FRAME_FIELDS}
        stored = self._read(entry, {**rows, **dict.fromkeys(WINDOW_FIELDS)}, rgb_rows)
        position = {row: k for k, row in enumerate(rgb_rows)}
        rgb = stored.pop("rgb")
        ref = self.windows.refs[window]
        names = self.windows.base.entries[ref.scene_index]
        sample = {**stored, "scene": names.scene, "video": names.video, "prompt": names.prompt}
        if video:
            sample["rgb"] = _float_rgb(rgb)
        if select is not None:  # cut before converting: a quarter of the bytes to copy for uint8
            sample.update(frame_index=torch.from_numpy(at), frame_rgb=_float_rgb(rgb[[position[int(i)] for i in at]]),
                          prev_rgb=_float_rgb(rgb[[position[int(i)] for i in prev]]))
        sample["window"], sample["view"] = window, view
        return sample

    def _read(self, entry: int, rows: dict, rgb_rows: list[int]) -> dict[str, torch.Tensor]:
        key = self.keys[entry]
        whole = len(rgb_rows) == self.windows.base.config.window.num_frames
        stored = self.store.get_rows(key, {**rows, **dict.fromkeys(("rgb_u8", "rgb"), None if whole else rgb_rows)})
        if stored is None or not set(rows) <= set(stored) or not {"rgb_u8", "rgb"} & set(stored):
            window, view = self.entries[entry]
            raise CacheEntryError(self.store.path(key), f"target cache entry of window {window} view {view} is "
                                                        "missing or damaged; the next start of the run recomputes it")
        if "rgb_u8" in stored:
            stored["rgb"] = stored.pop("rgb_u8")
        return stored


def _float_rgb(rgb: torch.Tensor) -> torch.Tensor:
    """Stored RGB as the loader's float32: uint8 / 255 (the value data.transforms.apply_rgb_uint8
    computes when nothing is resized), or the stored float32."""
    if rgb.dtype != torch.uint8:
        return rgb.to(torch.float32)
    return torch.empty(rgb.shape, dtype=torch.float32).copy_(rgb).div_(255.0)  # ~2x faster than .to().div_()
