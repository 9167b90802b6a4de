"""The stage-2 recipe as one dataclass: LoRA on the backbone with head, temporal and physics losses."""

from __future__ import annotations

from dataclasses import dataclass, field

from data.dataset import DataConfig
from heads.losses import LossConfig
from heads.physics import PhysicsLossConfig
from stages.trainer.sections import (
    BackboneConfig,
    CheckpointConfig,
    EMAConfig,
    FeatureConfig,
    GuardConfig,
    LogConfig,
    OptimConfig,
    RunConfig,
    require,
)
from world_model.flow_matching import Weighting
from world_model.lora import DEFAULT_LORA_TARGETS


@dataclass
class LoraConfig:
    """Which DiT modules get LoRA adapters, and what else trains."""

    rank: int = 32
    """LoRA rank (upstream Wan practice: 32)."""
    alpha: float = 32.0
    """LoRA alpha; peft scales the update by alpha / rank (folded into B at export)."""
    targets: tuple[str, ...] = DEFAULT_LORA_TARGETS
    """Module names (suffixes) that get adapters: attention q, k, v, o and both FFN linears."""
    train_heads: bool = False
    """Co-train the stage-1 heads; False keeps them frozen so the backbone must carry the signal."""
    gradient_checkpointing: bool = True
    """Recompute DiT blocks in backward (the 5B LoRA step then fits in well under 40 GB)."""

    def __post_init__(self) -> None:
        require(self.rank >= 1, f"rank must be >= 1, got {self.rank}")
        require(self.alpha > 0, f"alpha must be > 0, got {self.alpha}")
        require(bool(self.targets), "targets must name at least one module")


@dataclass
class ObjectiveConfig:
    """The diffusion objective and how the loss terms are weighted."""

    heads_dir: str = "runs/stage1/final"
    """Stage-1 export (heads.safetensors + heads.json) whose heads read the adapted features."""
    fm_weight: float = 1.0
    """Weight of the Wan flow-matching loss (x_t = (1-s) x0 + s e, target e - x0; frame 0 clean)."""
    heads_weight: float = 1.0
    """Weight of the flow/depth head losses on features of the adapted backbone."""
    fm_weighting: Weighting = "bell"
    """How each sample's flow-matching MSE is weighted by its timestep t: "bell" as diffsynth trains
    Wan (a bump peaking at t = 500, ~0 at t = 1000, mean 1 over the training grid at
    `timestep_shift`; see world_model/flow_matching.py) or "uniform" (every t alike)."""
    timestep_shift: float = 5.0
    """Training sigmas are u ~ U(0,1) shifted as s = k u / (1 + (k-1) u): most samples are noisy,
    where motion is decided (VideoJAM); k = 1 is uniform."""
    noise_seed: int = 0
    """Seed of the fixed (sigma, noise) pairs used by validation, so validations are comparable."""

    def __post_init__(self) -> None:
        require(self.fm_weight >= 0 and self.heads_weight >= 0, "fm_weight and heads_weight must be >= 0")
        require(self.fm_weighting in ("bell", "uniform"),
                f"fm_weighting must be 'bell' or 'uniform', got {self.fm_weighting!r}")
        require(self.timestep_shift > 0, f"timestep_shift must be > 0, got {self.timestep_shift}")
        require(bool(self.heads_dir), "heads_dir must name the stage-1 final/ directory")


def _stage2_optim() -> OptimConfig:
    return OptimConfig(lr=2e-5, warmup_steps=100, min_lr_ratio=0.1)


@dataclass
class Stage2Config:
    """Stage 2: LoRA on the WAN DiT; losses in stages/stage2_build.py (see stages/configs/stage2_*.toml)."""

    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="runs/stage2"))
    """Output directory, seed, batching and validation cadence."""
    data: DataConfig = field(default_factory=DataConfig)
    """Data root, metadata CSV, window size/stride, resize and augmentation."""
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    """Backbone preset and weights; its extraction timestep is used for validation features."""
    features: FeatureConfig = field(default_factory=lambda: FeatureConfig(mode="online"))
    """Only cache_dir matters (latent/text caches): an adapted backbone cannot use cached features."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """LoRA rank/targets, head co-training, gradient checkpointing."""
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    """Stage-1 heads, flow-matching and head-loss weights, timestep sampling."""
    loss: LossConfig = field(default_factory=LossConfig)
    """Flow/depth head loss settings (as in stage 1), including the one depth TGM weight."""
    physics: PhysicsLossConfig = field(default_factory=PhysicsLossConfig)
    """Flow-warp and physics terms and their weights (depth TGM is in `loss`)."""
    optim: OptimConfig = field(default_factory=_stage2_optim)
    """AdamW on the LoRA (and heads); TI2V-5B LoRA collapses at 1e-4, so the default is 2e-5."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpoint cadence, retention and resume."""
    ema: EMAConfig = field(default_factory=EMAConfig)
    """EMA of the trainable weights (LoRA, heads), used for validation and export when enabled."""
    guard: GuardConfig = field(default_factory=GuardConfig)
    """Non-finite loss handling."""
    log: LogConfig = field(default_factory=LogConfig)
    """Tracking backend and cadence."""

    def __post_init__(self) -> None:
        require(self.features.mode == "online",
                 "stage 2 adapts the backbone, so its features change every step: features.mode must be 'online'")
        require(self.data.window.supervised_frames == 0,
                 "stage 2's temporal and physics terms need every frame of a window: "
                 "data.window.supervised_frames must be 0")
