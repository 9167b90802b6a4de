"""Config sections of the training stages that are not generic: backbone, feature path, heads, run.

Stage 1 and stage 2 compose these with the generic ones in stages.trainer.sections and with the
data layer's own DataConfig, so every component receives only its own sub-config.
"""

from __future__ import annotations

from dataclasses import dataclass

from stages.trainer.sections import require
from world_model.presets import PRESETS

DTYPES = ("fp32", "bf16")



@dataclass
class BackboneConfig:
    """Which backbone to build and how features are taken from it."""

    preset: str = "tiny"
    """Model geometry: 'tiny' (random weights, CPU tests and demo) or 'ti2v_5b' (real WAN 2.2)."""
    model_dir: str = ""
    """Local directory with the official Wan2.2-TI2V-5B files; empty = random weights (tiny demo)."""
    seed: int = 0
    """Seed of the random weights when model_dir is empty."""
    dtype: str = "bf16"
    """Backbone compute dtype on GPU ('bf16' or 'fp32'); the CPU always computes in fp32."""
    attention: str = "auto"
    """Attention backend: auto, flash_attn3, flash_attn2, sdpa (SageAttention is refused for training)."""
    timestep: float = 100.0
    """Extraction timestep in [0, 1000]; low noise (100) is the stronger default for depth/flow."""
    noise_seed: int = 0
    """Seed of the extraction noise; fixed so that features can be cached."""
    taps: tuple[int, ...] = ()
    """0-based DiT blocks whose outputs feed the heads; empty = the preset's defaults."""
    vae_tiled: bool = False
    """Encode videos with diffsynth's spatial tiling (bounds VAE memory at high resolution)."""

    def __post_init__(self) -> None:
        require(self.preset in PRESETS, f"preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        require(self.dtype in DTYPES, f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        require(0.0 <= self.timestep <= 1000.0, f"timestep must lie in [0, 1000], got {self.timestep}")
        require(self.preset == "tiny" or bool(self.model_dir),
                 f"preset {self.preset!r} needs backbone.model_dir (a local weights directory); "
                 "only 'tiny' runs with random weights")
        layers = PRESETS[self.preset].num_layers
        require(all(0 <= t < layers for t in self.taps),
                f"taps {list(self.taps)} must be blocks 0..{layers - 1} of preset {self.preset!r}")


@dataclass
class FeatureConfig:
    """Where the heads' input features come from: a one-off cache or the backbone every step."""

    mode: str = "cached"
    """'cached': extract each fixed window's features once (sharded over processes) and train from
    disk for every epoch; 'online': run the backbone every step (random windows, augmentation)."""
    cache_dir: str = "runs/cache"
    """Root of the latent, text and feature caches (shared across runs and stages)."""
    windows_per_scene: int = 4
    """Cached mode: fixed windows per scene, spread evenly over its frames."""
    max_cache_gb: float = 200.0
    """Refuse to build a feature cache larger than this (the estimate is printed up front)."""

    def __post_init__(self) -> None:
        require(self.mode in ("cached", "online"), f"mode must be 'cached' or 'online', got {self.mode!r}")
        require(self.windows_per_scene >= 1, f"windows_per_scene must be >= 1, got {self.windows_per_scene}")
        require(self.max_cache_gb > 0, f"max_cache_gb must be > 0, got {self.max_cache_gb}")


COMPILE_MODES = ("", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class HeadsConfig:
    """Architecture knobs of the flow and depth heads (geometry comes from the backbone preset)."""

    features: int = 128
    """Width of the heads' fusion path."""
    temporal_levels: int = 2
    """Coarse neck levels with zero-initialised temporal attention (0 disables temporal mixing)."""
    convex_upsample: bool = True
    """RAFT-style convex upsampling of the final x8 (else bilinear)."""
    rgb_refine: bool = True
    """Light full-resolution RGB-guided refinement (what makes flow generalise at small scale)."""
    rgb_refine_stride: int = 1
    """Resolution of the RGB path: 1 = full, 2 = half (~4x cheaper, but it lost the flow gain on
    small objects in the demo; README, speed knobs)."""
    frame_chunk: int = 0
    """Decode full resolution this many frames at a time (0 = all); lowers peak memory only."""
    channels_last: bool = False
    """Run the full-resolution decoder in channels-last layout (a speed option for bf16 on GPUs;
    same results up to rounding). Compare with scripts/gpu_check.sh --items stage1_variants."""
    compile: str = ""
    """torch.compile the head pair in place, as one graph, with this mode ('' = eager; default,
    reduce-overhead (CUDA graphs), max-autotune, max-autotune-no-cudagraphs).  On an H100,
    reduce-overhead took the heads step from 229 to 176 ms (all frames) and 76 to 44 ms (8
    frames) after 1-1.5 minutes of compiling (scripts/gpu_check.sh --items stage1_compiled).
    Runtime-only: weights and exports are unchanged."""
    compile_backend: str = "inductor"
    """torch.compile backend for heads.compile (aot_eager checks the wiring without a compiler)."""

    def __post_init__(self) -> None:
        require(self.compile in COMPILE_MODES,
                f"compile must be one of {COMPILE_MODES} ('' = eager), got {self.compile!r}")
        require(self.features >= 8, f"features must be >= 8, got {self.features}")
        require(self.temporal_levels >= 0, f"temporal_levels must be >= 0, got {self.temporal_levels}")
        require(self.frame_chunk >= 0, f"frame_chunk must be >= 0, got {self.frame_chunk}")


@dataclass
class RunConfig:
    """Where the run writes, its seed, batching and validation cadence."""

    output_dir: str = "runs/stage1"
    """Run directory: checkpoints, resolved config, metrics.jsonl, final/ export."""
    seed: int = 0
    """Seed of data order, augmentation and head initialisation."""
    batch_size: int = 1
    """Windows per micro-batch per process."""
    num_workers: int = 0
    """DataLoader worker processes per training process."""
    train_split: str = "train"
    """Metadata split used for training."""
    val_split: str = "val"
    """Metadata split used for periodic validation ('' disables validation)."""
    val_every: int = 500
    """Validate every this many optimizer steps (and at the end)."""
    val_max_windows: int = 64
    """Upper bound on validation windows per validation (deterministic: the first ones)."""

    def __post_init__(self) -> None:
        require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        require(self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}")
        require(self.val_every >= 1, f"val_every must be >= 1, got {self.val_every}")
        require(bool(self.output_dir), "output_dir must not be empty")
