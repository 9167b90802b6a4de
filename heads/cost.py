"""What one training step of the heads costs, counted rather than timed.

FLOPs come from torch's FlopCounterMode and activation memory from the tensors autograd saves,
both on the ``meta`` device: no memory is spent, so the TI2V-5B geometry (49 x 480^2 outputs,
28 GiB of fp32 activations) is counted on a laptop in seconds.  Timings depend on the card;
these numbers do not, so they say which part of a step is worth optimising before a GPU is lent.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from heads.config import HeadConfig
from heads.depth import DepthHead
from heads.flow import MotionVectorHead


@dataclass(frozen=True)
class HeadStepCost:
    """Forward + backward of both heads on one window, K supervised frames (0 = all)."""

    supervised_frames: int
    flops: float
    """Forward + backward FLOPs (a multiply-add counts 2), convolutions and matmuls."""
    saved_gib: float
    """Activations autograd keeps for the backward pass (fp32 heads), GiB."""
    refiner_flops: float
    """The part spent in the RGB refiners (full or half resolution, as configured)."""


def run_head_step(cfg: HeadConfig, latent_grid: tuple[int, int, int], supervised_frames: int = 0,
                  dtype: torch.dtype = torch.float32, checkpoint_chunk: int | None = None) -> None:
    """Forward + backward of a flow + depth head pair on the ``meta`` device (nothing is computed
    or allocated): what a counting mode around it sees is one training step's work.  With
    ``checkpoint_chunk`` the decoder is recomputed in backward that many frames at a time (0 = all)."""
    f, h, w = latent_grid
    frames, size = cfg.num_frames(f), (cfg.spatial_factor * h, cfg.spatial_factor * w)
    k = supervised_frames or frames
    with torch.device("meta"):
        flow, depth = MotionVectorHead(cfg).to(dtype), DepthHead(cfg).to(dtype)
        if checkpoint_chunk is not None:
            for head in (flow, depth):
                head.set_memory_options(frame_chunk=checkpoint_chunk, gradient_checkpointing=True)
        taps = [torch.empty(1, cfg.in_channels, f, h, w, dtype=dtype) for _ in range(cfg.num_taps)]
        rgb = torch.empty(1, k, 3, *size, dtype=dtype)
        index = torch.arange(k, device="meta")[None] if supervised_frames else None
        loss = flow(taps, rgb, index, rgb if supervised_frames else None).sum() + depth(taps, rgb, index).sum()
        loss.backward()


def head_step_cost(cfg: HeadConfig, latent_grid: tuple[int, int, int], supervised_frames: int = 0,
                   checkpoint_chunk: int | None = None) -> HeadStepCost:
    """Count one step of a flow + depth head pair for a (F', H', W') token grid (``checkpoint_chunk``:
    ``run_head_step``); saved activations inside checkpointed chunks are not counted, as autograd
    frees them."""
    saved = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    counter = FlopCounterMode(display=False, depth=None)
    with counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run_head_step(cfg, latent_grid, supervised_frames, checkpoint_chunk=checkpoint_chunk)
    counts = counter.get_flop_counts()
    refiner = sum(sum(counts.get(f"{name}.refiner", {}).values()) for name in ("MotionVectorHead", "DepthHead"))
    return HeadStepCost(supervised_frames, float(counter.get_total_flops()), saved[0] / 2**30, float(refiner))


__all__ = ["HeadStepCost", "head_step_cost", "run_head_step"]
