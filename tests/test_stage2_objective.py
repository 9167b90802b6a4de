"""Stage 2's objective (`Stage2.losses`) on stand-in backbone outputs: each term enters the total
once with its configured weight. Fast: no backbone, the model is a function returning fixed
outputs and the feature source returns fixed latents."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import heads.losses
import heads.physics
from heads.losses import HeadLoss, LossConfig
from heads.physics import PhysicsLoss
from stages.stage2_build import Stage2
from stages.stage2_config import ObjectiveConfig, Stage2Config

B, T, H, W = 1, 5, 16, 16
LATENT = (B, 4, 2, 2, 2)


def _batch(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "rgb": torch.rand(B, T, 3, H, W, generator=g), "prompt": ["a ball"],
        "flow": torch.randn(B, T, 2, H, W, generator=g), "flow_valid": torch.ones(B, T, H, W, dtype=torch.bool),
        "depth": 1.0 + torch.rand(B, T, H, W, generator=g), "depth_valid": torch.ones(B, T, H, W, dtype=torch.bool),
        "intrinsics": torch.tensor([[20.0, 20.0, 7.5, 7.5]]), "dt": torch.tensor([1 / 15]),
        "down_cam": torch.tensor([[0.0, 1.0, 0.0]]),
    }


def _stage(config: Stage2Config, seed: int = 1, latent_dtype: torch.dtype = torch.float32, seen: list | None = None):
    """A Stage2 whose model returns fixed (velocity, flow, log depth) and records the timesteps it gets."""
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(LATENT, generator=g).to(latent_dtype)
    outputs = (torch.randn(LATENT, generator=g), torch.randn(B, T, 2, H, W, generator=g),
               torch.randn(B, T, H, W, generator=g))

    def model(x_t, timestep, context, rgb):
        if seen is not None:
            seen.append(timestep)
        return outputs

    run = SimpleNamespace(config=config, model=model)
    source = SimpleNamespace(encode=lambda rgb, prompts: (latents, torch.zeros(B, 3, 8)))
    return Stage2(run=run, source=source, val_set=None, probe_set=None, head_loss=HeadLoss(config.loss),
                  physics=PhysicsLoss(config.physics))


def _total(config: Stage2Config, sigma: float = 0.6) -> tuple[torch.Tensor, dict]:
    noise = torch.randn(LATENT, generator=torch.Generator().manual_seed(2))
    return _stage(config).losses(_batch(), torch.tensor([sigma]), noise)


def test_depth_tgm_enters_the_stage2_total_once_with_its_weight(monkeypatch):
    """Zeroing every TGM computation lowers the total by exactly heads * depth * tgm weight x TGM."""
    values: list[torch.Tensor] = []
    real = heads.losses.temporal_gradient_matching
    scale = {"factor": 1.0}

    def spy(*args, **kwargs):
        value = real(*args, **kwargs)
        values.append(value.detach())
        return value * scale["factor"]

    monkeypatch.setattr(heads.losses, "temporal_gradient_matching", spy)
    monkeypatch.setattr(heads.physics, "temporal_gradient_matching", spy, raising=False)
    config = Stage2Config(objective=ObjectiveConfig(heads_weight=0.5),
                          loss=LossConfig(depth_weight=2.0, depth_tgm_weight=3.0))
    with_tgm, metrics = _total(config)
    assert len(values) == 1, f"TGM computed {len(values)} times in one stage-2 loss"
    scale["factor"] = 0.0
    without_tgm, _ = _total(config)
    assert values[0] > 0.1
    torch.testing.assert_close(with_tgm - without_tgm, 0.5 * 2.0 * 3.0 * values[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(metrics["depth_tgm"], values[0])
    assert "phys_tgm" not in metrics


def test_physics_config_has_no_second_tgm_weight():
    with pytest.raises(TypeError):
        heads.physics.PhysicsLossConfig(depth_tgm_weight=1.0)
