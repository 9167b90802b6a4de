"""Wan flow-matching training loss, weighted over timesteps as diffsynth trains Wan.

diffsynth's Wan training (`FlowMatchSFTLoss` with `FlowMatchScheduler("Wan")` set up by
`set_timesteps(1000, training=True)`) multiplies each sample's MSE by a weight of its timestep: a
Gaussian bump exp(-2 ((t - 500) / 1000)^2) over the 1000-step training grid, lowered so its
smallest grid value is 0 and scaled to mean 1 over the grid, and read at the grid timestep
nearest to t. It is ~0 at t = 1000 (pure noise) and small near t = 0, and peaks at t = 500.
"""

from __future__ import annotations

from typing import Literal

import torch

NUM_TRAIN_TIMESTEPS = 1000
Weighting = Literal["bell", "uniform"]


def training_grid(shift: float, device: torch.device | str | None = None) -> torch.Tensor:
    """The 1000 training timesteps, descending from 1000: sigma = 1 - i/1000, Wan-shifted."""
    sigma = torch.linspace(1.0, 0.0, NUM_TRAIN_TIMESTEPS + 1, device=device)[:-1]
    return shift * sigma / (1 + (shift - 1) * sigma) * NUM_TRAIN_TIMESTEPS


def bell_weights(timesteps: torch.Tensor) -> torch.Tensor:
    """The weight of each grid timestep: the bump minus its grid minimum, mean 1 over the grid."""
    bump = torch.exp(-2 * ((timesteps - NUM_TRAIN_TIMESTEPS / 2) / NUM_TRAIN_TIMESTEPS) ** 2)
    lowered = bump - bump.min()
    return lowered * (len(timesteps) / lowered.sum())


def timestep_weight(timestep: torch.Tensor, shift: float) -> torch.Tensor:
    """Weight (B,) of each timestep (B,): that of the nearest grid timestep at this shift."""
    grid = training_grid(shift, timestep.device)
    nearest = (grid[None, :] - timestep.float()[:, None]).abs().argmin(dim=1)
    return bell_weights(grid)[nearest]


def sigma_to_timestep(sigma: torch.Tensor) -> torch.Tensor:
    """t = 1000 sigma in fp32: a bf16 sigma near 1 is up to ~2 timesteps off."""
    return sigma.float() * NUM_TRAIN_TIMESTEPS


def flow_matching_loss(velocity: torch.Tensor, target: torch.Tensor, timestep: torch.Tensor,
                       weighting: Weighting = "bell", shift: float = 5.0) -> torch.Tensor:
    """Mean over the batch of per-sample MSE (frame 0, the clean image latent, left out), each
    times its timestep's weight ("bell", diffsynth's) or 1 ("uniform").

    velocity, target: (B, C, T', h, w); timestep: (B,) in [0, 1000]."""
    per_sample = (velocity.float() - target.float())[:, :, 1:].square().flatten(1).mean(dim=1)
    if weighting == "uniform":
        return per_sample.mean()
    return (timestep_weight(timestep, shift).to(per_sample.device) * per_sample).mean()


__all__ = ["NUM_TRAIN_TIMESTEPS", "bell_weights", "flow_matching_loss", "sigma_to_timestep", "timestep_weight",
           "training_grid"]
