"""From a data window to tapped backbone grids: VAE latents, text context, frozen DiT features.

Latents and text contexts go through on-disk caches (world_model.cache) keyed by what determines
them, so they are computed once per window/prompt across runs and stages.  Per-phase wall time
is accumulated in ``timer`` for the stage-1 benchmark's step breakdown.

The stage-1 feature cache holds the frozen backbone's tapped grids of fixed windows, computed once.

With a fixed extraction timestep and noise seed, the features of a window depend only on its
pixels and prompt, so 10 epochs x repeat 100 reuse each one 1,000 times.  Windows are fixed
(evenly spaced per scene).  Augmentation changes the pixels and so the features: with
``features.views_per_window`` V the cache holds V views of each window (view 0 un-augmented,
views >= 1 augmented copies drawn from (seed, window, view); data.windows), and each training
item picks one view per epoch.  Its targets and RGB are loaded with that same view, so they
describe exactly the pixels the cached features saw.  V views cost V times the build time and
disk.  Building is sharded over processes; entries are safetensors in bf16, written atomically,
keyed by everything that determines them (frame files, size, view, weights, extraction
settings), so a changed input can never be served a stale entry.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from data.augment import View
from data.errors import DataFormatError
from data.windows import FixedWindows, WindowRef
from stages.trainer.sections import BackboneConfig
from stages.trainer.tracking import PhaseTimer
from world_model.backbone import FrozenBackbone
from world_model.cache import TensorCache, sha256_key
from world_model.encoders import PromptEncoder, VideoLatentEncoder
from world_model.features import ExtractionConfig
from world_model.presets import BackbonePreset, get_preset

log = logging.getLogger(__name__)


def compute_dtype(config: BackboneConfig, device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" and config.dtype == "bf16" else torch.float32


def backbone_id(config: BackboneConfig) -> str:
    """Identity of the weights, part of every cache key (random tiny weights are identified by seed)."""
    if not config.model_dir:
        return f"{config.preset}:random:{config.seed}"
    return f"{config.preset}:{Path(config.model_dir).resolve()}"


class FeatureSource:
    """Builds the frozen backbone and its encoders for a config; turns windows into tapped grids."""

    def __init__(self, config: BackboneConfig, device: torch.device, cache_dir: str | Path) -> None:
        self.config, self.device = config, device
        self.preset: BackbonePreset = get_preset(config.preset)
        self.dtype = compute_dtype(config, device)
        self.id = backbone_id(config)
        self.extraction = ExtractionConfig(timestep=config.timestep, noise_seed=config.noise_seed,
                                           taps=tuple(config.taps) or None)
        self.taps = self.preset.taps(tuple(config.taps) or None)
        self.backbone = self._build_backbone()
        cache = Path(cache_dir)
        self.video_encoder = VideoLatentEncoder(self._vae_factory(), f"{self.id}:vae", self.preset, device=device,
                                                dtype=self.dtype, cache=TensorCache(cache / "latents"),
                                                tiled=config.vae_tiled)
        encoder, tokenizer = self._text_parts()
        self.prompt_encoder = PromptEncoder(encoder, tokenizer, f"{self.id}:text", device=device,
                                            dtype=self.dtype, cache=TensorCache(cache / "text"))
        self.timer = PhaseTimer(device, enabled=False)  # benchmarks turn it on (it syncs the GPU)

    def _build_backbone(self) -> FrozenBackbone:
        c = self.config
        if c.model_dir:
            return FrozenBackbone.from_pretrained(c.model_dir, self.preset, device=self.device, dtype=self.dtype,
                                                  attention_backend=c.attention, sdpa_kernel=c.sdpa_kernel)
        backbone = FrozenBackbone.random(self.preset, seed=c.seed, attention_backend=c.attention,
                                         sdpa_kernel=c.sdpa_kernel)
        return backbone.to(self.device, self.dtype)

    def _vae_factory(self):
        from world_model.loading import load_vae
        from world_model.models import build_vae

        c = self.config
        if c.model_dir:
            return lambda: load_vae(c.model_dir, self.preset, device=self.device, dtype=self.dtype)
        return lambda: build_vae(self.preset, seed=c.seed, device=self.device, dtype=self.dtype)

    def _text_parts(self):
        from world_model.loading import load_text_encoder, load_tokenizer
        from world_model.models import build_stand_in_tokenizer, build_text_encoder

        c = self.config
        if c.model_dir:
            encoder = lambda: load_text_encoder(c.model_dir, self.preset, device=self.device, dtype=self.dtype)  # noqa: E731
            return encoder, load_tokenizer(c.model_dir, self.preset)
        encoder = lambda: build_text_encoder(self.preset, seed=c.seed, device=self.device, dtype=self.dtype)  # noqa: E731
        return encoder, build_stand_in_tokenizer(self.preset)

    def encode(self, rgb: torch.Tensor, prompts: list[str],
               store_latents: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """rgb (B, T, 3, H, W) in [0, 1] -> latents (B, C, T', h, w) and context (B, L, D) on device;
        ``store_latents`` False keeps the latents of these videos out of the on-disk cache."""
        with self.timer.phase("encode"):
            video = rgb.permute(0, 2, 1, 3, 4) * 2.0 - 1.0
            latents = self.video_encoder.encode(video.clamp(-1.0, 1.0), store=store_latents)
            context = self.prompt_encoder.encode(prompts)
        return latents.to(self.device, self.dtype), context.to(self.device, self.dtype)

    def extract(self, rgb: torch.Tensor, prompts: list[str], store_latents: bool = True) -> list[torch.Tensor]:
        """Tapped grids, num_taps x (B, dim, F', H', W'), for a batch of windows."""
        latents, context = self.encode(rgb, prompts, store_latents)
        with self.timer.phase("backbone"):
            return self.backbone.extract(latents, context, self.extraction).as_list()

    def release_encoders(self) -> None:
        """Drop VAE and text encoder (their caches stay usable)."""
        self.video_encoder.release()
        self.prompt_encoder.release()



def window_key(windows: FixedWindows, ref: WindowRef, source: FeatureSource, view: View | None = None) -> str:
    """Hash of what the features of a window's view depend on (frame files by name, size and
    mtime; the view's stride, crop, flip and colour).  View None (un-augmented) keeps the key
    single-view caches always had."""
    scene = windows.base.scenes[ref.scene_index]
    frames = windows.frames(ref, None if view is None else view.stride)
    stats = [(scene.rgb[i].name, scene.rgb[i].stat().st_size, scene.rgb[i].stat().st_mtime_ns) for i in frames]
    config = windows.base.config
    parts = [str(scene.directory.resolve()), stats, (config.height, config.width),
             windows.base.entries[ref.scene_index].prompt, source.id, source.taps,
             source.extraction.timestep, source.extraction.noise_seed, "bf16"]
    return sha256_key(*parts) if view is None else sha256_key(*parts, "view", view.key())


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


class CacheEntryError(DataFormatError):
    """A cached feature entry that cannot be read at training time.  It is a data error: the
    bad-sample policy skips the window, and the next start's cache build recomputes it."""


def load_or_leave_out(windows, entry: tuple[int, int], skip_bad_windows: bool, cache: str) -> dict | None:
    """The sample of one (window, view) for a cache build; with ``skip_bad_windows`` an unreadable
    one is left out of the build with a warning (None) instead of ending it."""
    window, view = entry
    try:
        return windows.load(window, view=view)
    except DataFormatError as error:
        if not skip_bad_windows:
            raise
        log.warning("%s: left out window %d view %d: %s", cache, window, view, error)
        return None


class FeatureCache:
    """Keys, building and loading of cached features for one FixedWindows set: one entry per
    (window, view), entry ``window * views + view``."""

    def __init__(self, root: str | Path, windows: FixedWindows, source: FeatureSource) -> None:
        self.store = TensorCache(Path(root) / "features")
        self.windows, self.num_taps = windows, len(source.taps)
        self.entries = [(w, v) for w in range(len(windows.refs)) for v in range(windows.views)]
        self.keys = [window_key(windows, windows.refs[w], source, windows.view(w, v)) for w, v in self.entries]

    def missing(self) -> list[int]:
        return [i for i, key in enumerate(self.keys) if not self.store.path(key).is_file()]

    def repair(self, full: bool = False) -> list[str]:
        """Remove damaged entries so the build recomputes them; returns one line per entry removed.

        Cheap by default (each file's size against its header: truncation), ``full`` compares the
        tensors' checksums too (reads everything).  Run it on one process: the others would race
        on the removals."""
        return self.store.repair(self.keys, full)

    def build(self, source: FeatureSource, rank: int = 0, world: int = 1, show_progress: bool = True,
              should_stop: Callable[[], bool] = lambda: False, skip_bad_windows: bool = False,
              loaded: Callable[[int, dict], None] | None = None) -> int:
        """Extract features of the missing windows assigned to this rank; returns how many it wrote.

        ``should_stop`` is asked before each window: a stopped build keeps every entry written
        (each is atomic), and the next build computes only what is missing.  Another run building
        the same folder at the same time shares the work (TensorCache.fill).  With
        ``skip_bad_windows`` a window whose files cannot be read is logged and left out (training
        then skips it through the bad-sample policy) instead of ending the build.  ``loaded(entry,
        sample)`` sees each whole window loaded (the target cache stores it rather than read it again).
        """
        todo = [i for i in self.missing() if i % world == rank]
        with tqdm(total=len(todo), desc=f"feature cache (rank {rank})", disable=not show_progress or not todo) as bar:
            return self.store.fill([(i, self.keys[i]) for i in todo],
                                   lambda i: self._compute(source, i, skip_bad_windows, loaded), should_stop,
                                   done=lambda: bar.update())

    def _compute(self, source: FeatureSource, entry: int, skip_bad_windows: bool,
                 loaded: Callable[[int, dict], None] | None) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
        sample = load_or_leave_out(self.windows, self.entries[entry], skip_bad_windows, "feature cache")
        if sample is None:
            return None
        if loaded is not None:
            loaded(entry, sample)
        taps = source.extract(sample["rgb"].unsqueeze(0), [sample["prompt"]])
        tensors = {f"tap{k}": t[0].to(torch.bfloat16).contiguous().cpu() for k, t in enumerate(taps)}
        return tensors, {"video": sample["video"], "steps": str(sample["steps"].tolist())}

    def load(self, window: int, view: int = 0) -> list[torch.Tensor]:
        entry = window * self.windows.views + view
        stored = self.store.get(self.keys[entry])
        if stored is None or any(f"tap{k}" not in stored for k in range(self.num_taps)):
            raise CacheEntryError(self.store.path(self.keys[entry]),
                                  f"feature cache entry of window {window} view {view} is missing or damaged; "
                                  "the next start of the run recomputes it")
        return [stored[f"tap{k}"] for k in range(self.num_taps)]


class CachedFeatureWindows(Dataset):
    """FixedWindows samples with the cached tapped grids of their view attached under 'taps'.

    With ``targets`` (stages.target_cache.TargetCache) an item's targets and RGB come from its
    entry there (one file) instead of the scene's PNG, flow and distance files: same tensors."""

    def __init__(self, windows: FixedWindows, cache: FeatureCache, targets=None) -> None:
        self.windows, self.cache, self.targets = windows, cache, targets

    def __len__(self) -> int:
        return len(self.windows)

    def set_epoch(self, epoch: int) -> None:
        self.windows.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict:
        if self.targets is None:
            sample = self.windows[index]
        else:
            window, select, view = self.windows.draw(index)
            sample = self.targets.load(window, select=select, video=self.windows.video, view=view)
        sample["taps"] = self.cache.load(sample["window"], sample["view"])
        return sample

    def scene_of(self, index: int) -> int:
        return self.windows.scene_of(index)
