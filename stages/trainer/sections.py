"""Config sections that stage 1 and stage 2 share: optimiser, checkpointing, logging, EMA, guard,
and the backbone, feature path, heads and run sections both recipes build from.

Each stage's top-level dataclass composes these with its own sections (LoRA, objective) and with
the data layer's DataConfig, so each component receives only its own sub-config. Checks live in
`__post_init__`, which `load_config` runs after all overrides are applied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from world_model.attention import SDPA_KERNELS
from world_model.presets import PRESETS


def require(condition: bool, message: str) -> None:
    """Config validation: a ValueError with the message (the config loader adds the section name)."""
    if not condition:
        raise ValueError(message)


@dataclass
class OptimConfig:
    """AdamW, gradient clipping/accumulation and the warmup + cosine learning-rate schedule."""

    lr: float = 1e-4
    """Peak learning rate after warmup (heads: 1e-4; TI2V-5B LoRA collapses at 1e-4, use 1e-5..5e-5)."""

    weight_decay: float = 0.01
    """AdamW decoupled weight decay."""

    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW (beta1, beta2)."""

    eps: float = 1e-8
    """AdamW epsilon (denominator floor)."""

    grad_clip: float = 1.0
    """Clip the global gradient norm to this value before each optimizer step; 0 disables clipping."""

    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step (effective batch = batch x grad_accum x processes)."""

    warmup_steps: int = 0
    """Optimizer steps of linear warmup from lr/warmup_steps to lr."""

    min_lr_ratio: float = 0.1
    """The cosine decay ends at lr x min_lr_ratio (0 decays to zero)."""

    max_steps: int | None = None
    """Total optimizer steps; None derives it from `epochs` and the loader length (see total_steps)."""

    epochs: int = 10
    """Passes over the (repeated) dataset; used only when max_steps is None."""

    def __post_init__(self) -> None:
        require(self.lr > 0 and math.isfinite(self.lr), f"lr must be a positive finite number, got {self.lr}")
        require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"betas must be two values in [0, 1), got {self.betas}")
        require(self.eps > 0, f"eps must be > 0, got {self.eps}")
        require(self.grad_clip >= 0, f"grad_clip must be >= 0 (0 disables), got {self.grad_clip}")
        require(self.grad_accum >= 1, f"grad_accum must be >= 1, got {self.grad_accum}")
        require(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        require(0 <= self.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        require(self.max_steps is None or self.max_steps >= 1, f"max_steps must be >= 1 or None, got {self.max_steps}")
        require(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        if self.max_steps is not None:
            require(self.warmup_steps <= self.max_steps, f"warmup_steps ({self.warmup_steps}) exceeds max_steps ({self.max_steps})")

    def total_steps(self, batches_per_epoch: int) -> int:
        """Optimizer steps of the whole run: max_steps if set, else epochs x ceil(batches / grad_accum)."""
        if self.max_steps is not None:
            return self.max_steps
        require(batches_per_epoch >= 1, f"the data loader is empty ({batches_per_epoch} batches per epoch)")
        return self.epochs * math.ceil(batches_per_epoch / self.grad_accum)


@dataclass
class CheckpointConfig:
    """When to write `checkpoint-<step>/` folders, how many to keep, and what to resume from."""

    every_steps: int = 500
    """Save a checkpoint every this many optimizer steps (and always at the end of training)."""

    keep_last: int = 3
    """Keep only the newest k complete checkpoints; 0 keeps all. The newest is never deleted."""

    resume: str = "latest"
    """Either "latest" (resume from the newest complete checkpoint in the run dir, if any), "none"
    (start fresh), or the path of a checkpoint folder to resume from."""

    init_from: str = ""
    """A checkpoint folder whose trainable weights (and EMA) start a fresh run, with a new optimizer,
    schedule and data order: how to train a finished run longer or on other data. Ignored when
    the run resumes from its own checkpoint."""

    start_fresh_if_damaged: bool = False
    """With resume="latest", damaged checkpoints (files that do not match their MANIFEST.json) are
    skipped for the newest intact one; when every checkpoint is damaged the run stops with an error,
    unless this is true: then it warns and starts fresh from step 0."""

    def __post_init__(self) -> None:
        require(self.every_steps >= 1, f"every_steps must be >= 1, got {self.every_steps}")
        require(self.keep_last >= 0, f"keep_last must be >= 0 (0 keeps all), got {self.keep_last}")
        require(bool(self.resume.strip()), "resume must be 'none', 'latest' or a checkpoint path, got an empty string")


LOG_BACKENDS = ("none", "tensorboard", "wandb")


@dataclass
class LogConfig:
    """Experiment tracking. metrics.jsonl is always written to the run dir, whatever the backend."""

    backend: str = "none"
    """One of none / tensorboard / wandb. wandb runs offline unless WANDB_MODE says otherwise."""

    every_steps: int = 10
    """Log metrics and print the one-line step summary every this many optimizer steps."""

    project: str = "physics-world-model"
    """wandb project name (ignored by other backends)."""

    run_name: str = ""
    """Run name for the tracker; empty uses the run directory's name."""

    def __post_init__(self) -> None:
        require(self.backend in LOG_BACKENDS, f"backend must be one of {LOG_BACKENDS}, got {self.backend!r}")
        require(self.every_steps >= 1, f"every_steps must be >= 1, got {self.every_steps}")


@dataclass
class EMAConfig:
    """Exponential moving average of the trainable weights, saved beside them in checkpoints."""

    enabled: bool = False
    """Keep an fp32 EMA copy of the trainable parameters (costs one fp32 copy of them in memory)."""

    decay: float = 0.999
    """Per-update decay d: shadow = d * shadow + (1 - d) * param. Averaging window ~ 1 / (1 - d) updates."""

    update_every: int = 1
    """Update the EMA every this many optimizer steps (decay applies per update, not per step)."""

    def __post_init__(self) -> None:
        require(0 <= self.decay < 1, f"decay must be in [0, 1), got {self.decay}")
        require(self.update_every >= 1, f"update_every must be >= 1, got {self.update_every}")


@dataclass
class GuardConfig:
    """What to do about NaN/inf losses: skip the step, and stop after too many in a row."""

    max_consecutive_nonfinite: int = 5
    """Abort training with NonFiniteLossError after this many consecutive skipped (non-finite) steps."""

    def __post_init__(self) -> None:
        require(self.max_consecutive_nonfinite >= 1, f"max_consecutive_nonfinite must be >= 1, got {self.max_consecutive_nonfinite}")


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
    sdpa_kernel: str = "auto"
    """Torch SDPA kernel when the backend is sdpa: auto (torch chooses), flash, efficient, cudnn or math;
    the GPU check's dit_forward_variants item times each on the card at hand."""
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
        require(self.sdpa_kernel in SDPA_KERNELS, f"sdpa_kernel must be one of {SDPA_KERNELS}, got {self.sdpa_kernel!r}")
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
    views_per_window: int = 1
    """Cached mode: views cached per window, view 0 un-augmented and views >= 1 augmented copies
    (stage 1's augment section, data.hflip_prob), each drawn from (seed, window, view); a training
    item shows one view, picked per epoch.  V views cost V times the cache's build time and disk."""
    max_cache_gb: float = 200.0
    """Refuse to build a feature cache larger than this (the estimate is printed up front)."""
    verify_cache: str = "size"
    """How each start checks the feature-cache entries it will use: 'size' (each file's size against
    its header: catches truncation, one small read per entry) or 'full' (also every tensor's
    checksum: reads the whole cache).  Damaged entries are removed and recomputed."""
    cache_targets: bool = True
    """Cached mode: also cache each window view's training targets and RGB at the model's resolution
    beside its features (<cache_dir>/targets, stages/target_cache.py), so a step's loader reads one
    file instead of the scene's ~2 PNGs, motion-vector and distance files per supervised frame: the
    same tensors, several times the windows/s (docs/performance_loader.md).  Costs about 190 MB of
    disk per window view at 49x480^2 (float32 flow and depth, uint8 RGB), within max_cache_gb."""

    def __post_init__(self) -> None:
        require(self.mode in ("cached", "online"), f"mode must be 'cached' or 'online', got {self.mode!r}")
        require(self.windows_per_scene >= 1, f"windows_per_scene must be >= 1, got {self.windows_per_scene}")
        require(self.views_per_window >= 1, f"views_per_window must be >= 1, got {self.views_per_window}")
        require(self.max_cache_gb > 0, f"max_cache_gb must be > 0, got {self.max_cache_gb}")
        require(self.verify_cache in ("size", "full"), f"verify_cache must be 'size' or 'full', got {self.verify_cache!r}")


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
    small objects in the demo; docs/performance.md, speed knobs)."""
    rgb_cost_radius: int = 0
    """Flow head: block matching of frame t against warped t-1 (displacements up to this radius)
    corrects the neck's flow and feeds the RGB path; 0 = none.  Matching does not depend on the
    scene's look, which is what transfer to unseen families and looks needs (heads/cost_volume.py;
    on the demo it took unseen-family flow from worse than zero flow to ~0.6x its error)."""
    rgb_cost_pool: int = 1
    """Average-pool the frames by this factor before matching: reach rgb_cost_radius * pool px."""
    rgb_cost_temperature: float = 0.02
    """Soft-argmin temperature of the matching (cost units: mean absolute RGB difference); lower
    follows the best match instead of averaging it with no motion (heads/cost_volume.py)."""
    rgb_cost_confidence: float = 0.02
    """Matched displacement x gain / (gain + this), gain = cost at no motion minus the best: lower
    trusts weaker matches (more motion kept on small bodies, more noise on still pixels)."""
    rgb_body_reach: int = 0
    """Flow head: after the matching, each moving patch of the image votes for one displacement
    within this many px, so a small fast body keeps its whole motion (0 = off; heads/body_motion.py)."""
    frame_chunk: int = 0
    """Decode full resolution this many frames at a time (0 = all): lowers the peak of passes
    without gradients (validation, evaluation) and, with checkpoint_decoder, of training."""
    checkpoint_decoder: bool = False
    """Recompute the full-resolution decoder in the backward pass, frame_chunk frames at a time:
    what it saves for the backward (most of a heads step's memory at 49x480^2) shrinks to one
    chunk's worth, for one more decoder forward a step.  Same results (tested)."""
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
        require(self.rgb_cost_radius >= 0, f"rgb_cost_radius must be >= 0, got {self.rgb_cost_radius}")
        require(self.rgb_body_reach >= 0, f"rgb_body_reach must be >= 0, got {self.rgb_body_reach}")
        require(self.rgb_cost_pool >= 1 and self.rgb_cost_pool & (self.rgb_cost_pool - 1) == 0,
                f"rgb_cost_pool must be a power of two, got {self.rgb_cost_pool}")
        require(self.rgb_cost_temperature > 0 and self.rgb_cost_confidence >= 0,
                f"rgb_cost_temperature must be > 0 and rgb_cost_confidence >= 0, got "
                f"{self.rgb_cost_temperature}, {self.rgb_cost_confidence}")


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
    val_flow_baselines: bool = True
    """Score OpenCV DIS and Farneback flow on the validation windows beside zero flow, computed from
    the windows' frames at every validation: ~55 ms of CPU per 9-frame window at 128^2 (cheap beside
    the heads), ~5 s per 49-frame window at 480^2 (the full-size recipes turn it off)."""

    def __post_init__(self) -> None:
        require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        require(self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}")
        require(self.val_every >= 1, f"val_every must be >= 1, got {self.val_every}")
        require(bool(self.output_dir), "output_dir must not be empty")
