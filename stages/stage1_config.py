"""The stage-1 recipe as one dataclass: train the flow and depth heads on a frozen backbone."""

from __future__ import annotations

from dataclasses import dataclass, field

from data.dataset import DataConfig
from heads.losses import LossConfig
from stages.trainer.sections import (
    BackboneConfig,
    CheckpointConfig,
    EMAConfig,
    FeatureConfig,
    GuardConfig,
    HeadsConfig,
    LogConfig,
    OptimConfig,
    RunConfig,
)


@dataclass
class Stage1Config:
    """Stage 1: heads on tapped features of the frozen WAN backbone (see stages/configs/*.toml)."""

    run: RunConfig = field(default_factory=RunConfig)
    """Output directory, seed, batching and validation cadence."""
    data: DataConfig = field(default_factory=DataConfig)
    """Data root, metadata CSV, window size/stride, resize and augmentation."""
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    """Backbone preset and weights, feature extraction timestep/noise/taps."""
    features: FeatureConfig = field(default_factory=FeatureConfig)
    """Cached or online features, cache location and budget."""
    heads: HeadsConfig = field(default_factory=HeadsConfig)
    """Head architecture knobs."""
    loss: LossConfig = field(default_factory=LossConfig)
    """Flow/depth loss weights and thresholds."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """AdamW, clipping, accumulation and warmup + cosine schedule."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpoint cadence, retention and resume."""
    ema: EMAConfig = field(default_factory=EMAConfig)
    """EMA of the head weights (used for validation and the final export when enabled)."""
    guard: GuardConfig = field(default_factory=GuardConfig)
    """Non-finite loss handling."""
    log: LogConfig = field(default_factory=LogConfig)
    """Tracking backend and cadence."""

    def __post_init__(self) -> None:
        if self.features.mode == "cached" and (self.data.hflip_prob > 0):
            raise ValueError("features.mode=cached stores features of fixed, un-augmented windows; "
                             "set data.hflip_prob=0 or use features.mode=online")
