"""Stage 2's recipe as data: `Stage2Config` and its own sections (LoRA, objective), read from
stages/configs/stage2_*.toml with command-line and environment overrides (stages/trainer)."""

from __future__ import annotations

from dataclasses import dataclass, field

from data.dataset import DataConfig
from heads.losses import LossConfig
from heads.physics import PhysicsLossConfig
from stages.reward import OBJECTIVE_MODES, RewardConfig
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
    heads_lr_scale: float = 1.0
    """Co-trained heads learn at optim.lr x this (the LoRA at optim.lr): converged stage-1 heads
    need smaller steps than a fresh adapter, or they drift off the features they were fitted to."""
    gradient_checkpointing: bool = True
    """Recompute DiT blocks in backward (the 5B LoRA step then fits in well under 40 GB)."""

    def __post_init__(self) -> None:
        require(self.rank >= 1, f"rank must be >= 1, got {self.rank}")
        require(self.alpha > 0, f"alpha must be > 0, got {self.alpha}")
        require(self.heads_lr_scale >= 0, f"heads_lr_scale must be >= 0, got {self.heads_lr_scale}")
        require(bool(self.targets), "targets must name at least one module")


SIGMA_WEIGHTINGS = ("all", "below", "linear")


@dataclass
class ObjectiveConfig:
    """The diffusion objective and how the loss terms are weighted."""

    heads_dir: str = "runs/stage1/final"
    """Stage-1 export (heads.safetensors + heads.json) whose heads read the adapted features."""
    mode: str = "denoise"
    """"denoise": the losses below on one adapted forward; "reward": the LoRA raises the reward
    (section `reward`) of the frozen heads on its own x̂0 (needs lora.train_heads = false)."""
    fm_weight: float = 1.0
    """Weight of the Wan flow-matching loss (x_t = (1-s) x0 + s e, target e - x0; frame 0 clean)."""
    heads_weight: float = 1.0
    """Weight of the flow/depth head losses on features of the adapted backbone."""
    physics_weight: float = 1.0
    """Weight of the flow-warp and physics terms (section `physics`) in the "denoise" objective; 0
    skips them.  The reward mode's residual reads the physics.* weights alone (reward.physics_weight)."""
    fm_weighting: Weighting = "bell"
    """How each sample's flow-matching MSE is weighted by its timestep t: "bell" as diffsynth trains
    Wan (a bump peaking at t = 500, ~0 at t = 1000, mean 1 over the training grid at
    `timestep_shift`; see world_model/flow_matching.py) or "uniform" (every t alike)."""
    timestep_shift: float = 5.0
    """Training sigmas are u ~ U(0,1) shifted as s = k u / (1 + (k-1) u): most samples are noisy,
    where motion is decided (VideoJAM); k = 1 is uniform."""
    noise_seed: int = 0
    """Seed of the fixed (sigma, noise) pairs used by validation, so validations are comparable."""
    heads_sigma_weighting: str = "all"
    """How a sample's noise level sigma in [0, 1] weighs its head and physics terms: "all" (w = 1),
    "below" (w = 1 up to heads_sigma_max, else 0: the stage-1 heads learnt low-noise features and
    judge only those) or "linear" (w = 1 - sigma). Flow matching is weighted by fm_weighting alone."""
    heads_sigma_max: float = 0.3
    """The largest sigma whose head and physics terms count under heads_sigma_weighting = "below"."""
    heads_frames: int = 0
    """Frames per window the head and physics terms supervise: one contiguous run of this many at a
    random start (the physics terms difference consecutive frames), 0 = every frame. The heads' cost
    grows with the frames they decode, the DiT's does not (issue 21; at 49 frames K = 13 decodes a
    quarter). At least 4 so acceleration and jerk have support."""

    def __post_init__(self) -> None:
        require(self.mode in OBJECTIVE_MODES, f"mode must be one of {OBJECTIVE_MODES}, got {self.mode!r}")
        require(min(self.fm_weight, self.heads_weight, self.physics_weight) >= 0,
                "fm_weight, heads_weight and physics_weight must be >= 0")
        require(self.heads_sigma_weighting in SIGMA_WEIGHTINGS,
                f"heads_sigma_weighting must be one of {SIGMA_WEIGHTINGS}, got {self.heads_sigma_weighting!r}")
        require(0.0 < self.heads_sigma_max <= 1.0, f"heads_sigma_max must lie in (0, 1], got {self.heads_sigma_max}")
        require(self.fm_weighting in ("bell", "uniform"),
                f"fm_weighting must be 'bell' or 'uniform', got {self.fm_weighting!r}")
        require(self.timestep_shift > 0, f"timestep_shift must be > 0, got {self.timestep_shift}")
        require(bool(self.heads_dir), "heads_dir must name the stage-1 final/ directory")
        require(self.heads_frames == 0 or self.heads_frames >= 4, f"heads_frames must be 0 or >= 4, got {self.heads_frames}")


def _stage2_optim() -> OptimConfig:
    return OptimConfig(lr=2e-5, warmup_steps=100, min_lr_ratio=0.1)


@dataclass
class Stage2Config:
    """Stage 2: LoRA on the WAN DiT; losses in stages/stage2.py (see stages/configs/stage2_*.toml)."""

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
    """Stage-1 heads, objective mode, flow-matching and head-loss weights, timestep sampling."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """The reward-gradient mode (objective.mode = "reward"): one-step or K-step x̂0, reward weights."""
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
        require(self.objective.mode != "reward" or self.objective.heads_frames == 0,
                "objective.heads_frames applies to mode = 'denoise'; the reward mode judges whole clips")
        require(self.objective.mode != "reward" or not self.lora.train_heads,
                "objective.mode = 'reward' judges with the frozen stage-1 heads: set lora.train_heads = false")
