"""Motion-vector (flow) and depth decoder heads on tapped WAN backbone grids, their losses and metrics.

Heads know only tensors: a list of tapped grids (B, C, F', H', W') and optionally the RGB frames
(B, T, 3, H, W) in [0, 1]. See `HeadConfig` for the geometry and `heads.io` for checkpoints.
"""

from heads.blocks import count_parameters, parameter_summary
from heads.config import HeadConfig
from heads.depth import DepthHead
from heads.flow import MotionVectorHead
from heads.io import HeadLoadError, load_heads, save_heads
from heads.losses import HeadLoss, LossConfig, depth_loss, flow_loss
from heads.metrics import MetricAccumulator

__all__ = [
    "DepthHead",
    "HeadConfig",
    "HeadLoadError",
    "HeadLoss",
    "LossConfig",
    "MetricAccumulator",
    "MotionVectorHead",
    "count_parameters",
    "depth_loss",
    "flow_loss",
    "load_heads",
    "parameter_summary",
    "save_heads",
]
