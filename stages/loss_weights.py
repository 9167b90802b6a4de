"""Per-sample weights of stage 2's head and physics terms, shared by the denoise objective
(stages.stage2) and the reward mode (stages.reward): w(sigma) and a term weighted sample by sample."""

from __future__ import annotations

import torch


def sigma_weights(sigma: torch.Tensor, objective) -> torch.Tensor:
    """w(sigma) (B,) of the head and physics terms (stages.stage2.ObjectiveConfig.heads_sigma_weighting)."""
    if objective.heads_sigma_weighting == "below":
        return (sigma <= objective.heads_sigma_max).to(sigma.dtype)
    if objective.heads_sigma_weighting == "linear":
        return (1.0 - sigma).clamp_min(0.0)
    return torch.ones_like(sigma)


def weighted_per_sample(term, weights: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, dict]:
    """``term(*args, **kwargs)`` -> (loss, metrics) with sample b's loss weighted by weights[b]:
    one call when every weight is the same, else one call per sample (tensor arguments sliced on
    their batch dimension); the loss is the mean of the weighted per-sample losses, metrics are
    averaged (pixel counts summed)."""
    n = weights.shape[0]
    if bool((weights == weights[0]).all()):
        loss, metrics = term(*args, **kwargs)
        return weights[0] * loss, metrics
    losses, parts = [], []
    for b in range(n):
        def pick(x, b=b):
            return x[b:b + 1] if torch.is_tensor(x) and x.dim() > 0 and x.shape[0] == n else x
        loss, metrics = term(*map(pick, args), **{k: pick(v) for k, v in kwargs.items()})
        losses.append(weights[b] * loss)
        parts.append(metrics)
    merged = {k: torch.stack([torch.as_tensor(m[k]).float() for m in parts]) for k in parts[0]}
    return torch.stack(losses).mean(), {k: v.sum() if k.endswith("_px") else v.mean() for k, v in merged.items()}
