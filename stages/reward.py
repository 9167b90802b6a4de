"""Stage 2's reward-gradient mode (``objective.mode = "reward"``, VADER-style; docs/stage2_reward.md).

Instead of (only) denoising, the LoRA is trained to raise a reward measured on the model's own
prediction of the clean video x̂0: reward = -(physics residual [+ head disagreement]) of the
*frozen* stage-1 heads reading the *frozen* backbone's features of x̂0.  The judge sees x̂0 exactly
as stage 1 fed its heads a clean video: noised with the fixed extraction noise at the extraction
timestep (stages.features / world_model.features.extract_features), LoRA switched off.  So the
only path from the reward to a trainable weight is x̂0 -> the adapted DiT's velocity -> LoRA.

Two ways to get x̂0 (``reward.steps``):
  0  one step: x_t at a training sigma, x̂0 = x_t - sigma * v (Wan: x_t = (1-s) x0 + s e, v = e - x0);
  K  truncated backprop: sample from noise with ``reward.sampler_steps`` Euler steps of diffsynth's
     Wan schedule; the earlier steps run without grad, the last K with grad, each checkpointed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from heads.metrics import depth_from_log
from heads.plausibility import plausibility_terms
from stages.loss_weights import sigma_weights, weighted_per_sample
from stages.trainer.sections import require
from world_model.features import (
    ExtractionConfig,
    dit_forward,
    make_noise,
    noisy_latents,
    sigma_from_timestep,
)
from world_model.flow_matching import flow_matching_loss, sigma_to_timestep
from world_model.lora import adapters_disabled

OBJECTIVE_MODES = ("denoise", "reward")


@dataclass
class RewardConfig:
    """The reward-gradient mode (used when objective.mode = "reward"; docs/stage2_reward.md)."""

    steps: int = 0
    """Sampler steps backpropagated through: 0 = one-step x̂0 = x_t - sigma v at a training sigma
    (one adapted forward); K >= 1 = sample from noise and backpropagate through the last K steps."""
    sampler_steps: int = 8
    """Euler steps of the sampler the K-step variant unrolls (diffsynth's Wan schedule at
    objective.timestep_shift); the first sampler_steps - K run without grad. Unused when steps = 0."""
    physics_weight: float = 1.0
    """Weight of the physics residual (physics.* terms, ground-truth supports) of the frozen heads on x̂0."""
    heads_weight: float = 0.0
    """Weight of head agreement: the frozen heads' flow/depth losses on x̂0 against the ground truth."""
    verifier_weight: float = 0.0
    """Weight of minus the verifier's plausibility score of the frozen heads' distance and flow on
    x̂0: the rule of `scripts/verify_physics.py` and best-of-N (heads.plausibility), which sees no
    ground truth but the window's frames (its colour-change gate); gradients reach the gravity and
    friction terms' values, not what the rule selects (docs/stage2_reward.md)."""

    def __post_init__(self) -> None:
        require(self.steps >= 0, f"reward.steps must be >= 0, got {self.steps}")
        require(self.sampler_steps >= max(self.steps, 1),
                 f"reward.sampler_steps ({self.sampler_steps}) must be >= max(reward.steps, 1) ({self.steps})")
        require(min(self.physics_weight, self.heads_weight, self.verifier_weight) >= 0,
                 "reward.physics_weight, reward.heads_weight and reward.verifier_weight must be >= 0")


def predicted_clean(x_t: torch.Tensor, velocity: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x̂0 = x_t - sigma v (exact when v = noise - x0); the first latent frame (TI2V's clean image,
    timestep 0) is x_t's own."""
    x0 = x_t - sigma.to(x_t).view(-1, 1, 1, 1, 1) * velocity.to(x_t)
    return torch.cat([x_t[:, :, :1], x0[:, :, 1:]], dim=2)


def sampler_sigmas(steps: int, shift: float) -> torch.Tensor:
    """steps + 1 sigmas from 1 down to 0: diffsynth's Wan inference schedule (linear in u, shifted)
    followed by the final 0 its Euler step ends at."""
    u = torch.linspace(1.0, 0.0, steps + 1)[:-1]
    return torch.cat([shift * u / (1 + (shift - 1) * u), torch.zeros(1)])


@dataclass
class RewardOutput:
    """x̂0, the velocity at the training sigma (None if not asked for) and the judge's outputs."""

    x0_hat: torch.Tensor
    velocity: torch.Tensor | None
    flow: torch.Tensor
    log_depth: torch.Tensor


class RewardWorldModel(nn.Module):
    """The adapted DiT (the policy) and the frozen heads (the judge) as one module, so a DDP wrapper
    sees every forward; same submodules and state-dict keys as stage 2's AdaptedWorldModel."""

    def __init__(self, dit: nn.Module, heads: nn.Module, taps: tuple[int, ...], checkpointing: bool,
                 extraction: ExtractionConfig, reward: RewardConfig, shift: float) -> None:
        super().__init__()
        self.dit, self.heads, self.taps, self.checkpointing = dit, heads, taps, checkpointing
        self.extraction, self.reward, self.shift = extraction, reward, shift

    def _checkpointing(self) -> bool:
        return self.checkpointing and self.training and torch.is_grad_enabled()

    def velocity(self, x_t: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The adapted DiT's velocity (blocks checkpointed when training)."""
        return dit_forward(self.dit, x_t, timestep, context, gradient_checkpointing=self._checkpointing()).output

    def _euler(self, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor,
               context: torch.Tensor) -> torch.Tensor:
        v = dit_forward(self.dit, x, sigma_to_timestep(sigma), context).output
        step = x + (sigma_next - sigma).to(x) * v.to(x)
        return torch.cat([x[:, :, :1], step[:, :, 1:]], dim=2)  # frame 0 stays the clean image

    def sample(self, latents: torch.Tensor, noise: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x̂0 by the Euler sampler from pure noise (frame 0 = the clean image latent); only the last
        ``reward.steps`` steps keep a graph, each recomputed in backward when checkpointing."""
        sigmas = sampler_sigmas(self.reward.sampler_steps, self.shift).to(latents.device)
        x = noisy_latents(latents, 1.0, noise)
        first_grad = len(sigmas) - 1 - self.reward.steps
        for i in range(len(sigmas) - 1):
            if i < first_grad:
                with torch.no_grad():
                    x = self._euler(x, sigmas[i], sigmas[i + 1], context)
            elif self._checkpointing():
                x = checkpoint(self._euler, x, sigmas[i], sigmas[i + 1], context, use_reentrant=False)
            else:
                x = self._euler(x, sigmas[i], sigmas[i + 1], context)
        return x

    def judge(self, x0_hat: torch.Tensor, context: torch.Tensor, rgb: torch.Tensor):
        """Frozen heads on the frozen backbone's features of x̂0 at the extraction timestep with the
        extraction noise (as stage 1 saw clean videos); gradients reach x̂0 only."""
        e = self.extraction
        noise = make_noise(x0_hat.shape[1:], e.noise_seed, x0_hat.device, x0_hat.dtype).expand_as(x0_hat)
        x = noisy_latents(x0_hat, float(sigma_from_timestep(e.timestep)), noise)
        frozen = partial(adapters_disabled, self.dit)
        with frozen():
            taps = dit_forward(self.dit, x, e.timestep, context, taps=self.taps, return_output=False,
                               gradient_checkpointing=self._checkpointing(), block_context=frozen).as_list()
        return self.heads(taps, rgb)

    def forward(self, latents: torch.Tensor, context: torch.Tensor, rgb: torch.Tensor, sigma: torch.Tensor,
                noise: torch.Tensor, with_velocity: bool = True) -> RewardOutput:
        """latents (B, C, T', h, w) of the ground truth, sigma (B,), noise like latents."""
        x_t = noisy_latents(latents, sigma, noise)
        velocity = self.velocity(x_t, sigma_to_timestep(sigma), context) if with_velocity or not self.reward.steps \
            else None
        x0_hat = predicted_clean(x_t, velocity, sigma) if not self.reward.steps else self.sample(latents, noise, context)
        flow, log_depth = self.judge(x0_hat, context, rgb)
        return RewardOutput(x0_hat, velocity, flow, log_depth)


def verifier_penalty(flow: torch.Tensor, log_depth: torch.Tensor, intrinsics: torch.Tensor, dt: torch.Tensor,
                     rgb: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Minus the plausibility score (heads.plausibility_terms) of each window, averaged over the
    batch: flow (B, T, 2, H, W), log_depth (B, T, H, W), intrinsics (B, 4), dt (B,), rgb
    (B, T, 3, H, W) -> (penalty, {"verifier_score", "verifier_free_px"})."""
    penalties, free = [], 0
    for b in range(flow.shape[0]):
        out = plausibility_terms(depth_from_log(log_depth[b]), None, flow[b].float(), None, intrinsics[b],
                                 float(dt.reshape(-1)[b]), rgb=rgb[b])
        penalties.append(sum(out["terms"].values()).to(flow.device, torch.float32))
        free += out["free_pixels"]
    penalty = torch.stack(penalties).mean()
    return penalty, {"verifier_score": -penalty.detach(), "verifier_free_px": torch.tensor(float(free))}


def reward_objective(model: nn.Module, latents: torch.Tensor, context: torch.Tensor, batch: dict,
                     sigma: torch.Tensor, noise: torch.Tensor, head_loss, physics, config) -> tuple[torch.Tensor, dict]:
    """Loss = -reward [+ objective.fm_weight x flow matching at sigma]; reward = -(physics_weight x
    physics residual + heads_weight x head losses + verifier_weight x minus the verifier's score)
    of the judge on x̂0, each sample's weighted by w(sigma) in the one-step variant (the K-step x̂0
    does not depend on sigma)."""
    objective, reward = config.objective, config.reward
    sigma = sigma.to(latents.device, torch.float32)
    out = model(latents, context, batch["rgb"], sigma, noise.to(latents), objective.fm_weight > 0)
    weights = sigma_weights(sigma, objective) if not reward.steps else torch.ones_like(sigma)
    heads, head_metrics = weighted_per_sample(head_loss, weights, out.flow, batch["flow"], batch["flow_valid"],
                                              out.log_depth, batch["depth"], batch["depth_valid"])
    terms, physics_metrics = weighted_per_sample(
        physics, weights, out.log_depth.float(), out.flow.float(), batch["depth"], batch["depth_valid"],
        batch["flow"], batch["flow_valid"], batch["intrinsics"], batch["dt"], frames=batch["rgb"],
        down_cam=batch["down_cam"])
    penalty = reward.physics_weight * terms + reward.heads_weight * heads
    verifier_metrics = {}
    if reward.verifier_weight > 0:
        verifier, verifier_metrics = weighted_per_sample(verifier_penalty, weights, out.flow, out.log_depth,
                                                         batch["intrinsics"], batch["dt"], batch["rgb"])
        penalty = penalty + reward.verifier_weight * verifier
    fm = torch.zeros((), device=latents.device)
    if out.velocity is not None:
        fm = flow_matching_loss(out.velocity, noise.to(latents) - latents, sigma_to_timestep(sigma),
                                objective.fm_weighting, objective.timestep_shift)
    head_metrics.pop("loss", None)
    return objective.fm_weight * fm + penalty, {"loss_fm": fm.detach(), "loss_heads": heads.detach(),
                                                "reward": -penalty.detach(), **head_metrics, **physics_metrics,
                                                **verifier_metrics}
