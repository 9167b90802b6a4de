"""Stage 2's objective (`Stage2.losses`) on stand-in backbone outputs: each term enters the total
once with its configured weight. Fast: no backbone, the model is a function returning fixed
outputs and the feature source returns fixed latents."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

import heads.losses
import heads.physics
from heads.losses import HeadLoss, LossConfig
from heads.physics import PhysicsLoss
from stages.model import at_frames, contiguous_frames
from stages.stage2 import ObjectiveConfig, Stage2, Stage2Config
from world_model.flow_matching import timestep_weight

B, T, H, W = 1, 5, 16, 16
LATENT = (B, 4, 2, 2, 2)


def _batch(batch: int = B, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "rgb": torch.rand(batch, T, 3, H, W, generator=g), "prompt": ["a ball"] * batch,
        "flow": torch.randn(batch, T, 2, H, W, generator=g),
        "flow_valid": torch.ones(batch, T, H, W, dtype=torch.bool),
        "depth": 1.0 + torch.rand(batch, T, H, W, generator=g),
        "depth_valid": torch.ones(batch, T, H, W, dtype=torch.bool),
        "intrinsics": torch.tensor([[20.0, 20.0, 7.5, 7.5]]).expand(batch, 4),
        "dt": torch.full((batch,), 1 / 15), "down_cam": torch.tensor([[0.0, 1.0, 0.0]]).expand(batch, 3),
    }


def _stage(config: Stage2Config, batch: int = B, latent_dtype: torch.dtype = torch.float32,
           seen: list | None = None) -> Stage2:
    """A Stage2 whose model returns fixed (velocity, flow, log depth) and records the timesteps it
    gets; ``stage.fixed`` holds (latents, velocity) for computing expected values."""
    g = torch.Generator().manual_seed(1)
    shape = (batch, *LATENT[1:])
    latents = torch.randn(shape, generator=g).to(latent_dtype)
    outputs = (torch.randn(shape, generator=g), torch.randn(batch, T, 2, H, W, generator=g),
               torch.randn(batch, T, H, W, generator=g))

    def model(x_t, timestep, context, rgb, frame_index=None):
        if seen is not None:
            seen.append(timestep)
        if frame_index is None:
            return outputs
        return outputs[0], at_frames(outputs[1], frame_index), at_frames(outputs[2], frame_index)

    run = SimpleNamespace(config=config, model=model)
    source = SimpleNamespace(encode=lambda rgb, prompts: (latents, torch.zeros(batch, 3, 8)))
    stage = Stage2(run=run, source=source, val_set=None, probe_set=None, head_loss=HeadLoss(config.loss),
                   physics=PhysicsLoss(config.physics))
    stage.fixed = (latents, outputs[0])
    return stage


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


def test_physics_weight_scales_the_physics_terms_and_zero_skips_them(monkeypatch):
    """objective.physics_weight multiplies the warp/physics share of the total; at 0 the physics
    loss is not even called (the demo recipe trains without it), the head losses stay as they were."""
    calls = {"n": 0}
    real = PhysicsLoss.__call__

    def counted(self, *args, **kwargs):
        calls["n"] += 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(PhysicsLoss, "__call__", counted)
    totals, head_losses = {}, set()
    for weight in (0.0, 1.0, 2.0):
        total, metrics = _total(Stage2Config(objective=ObjectiveConfig(physics_weight=weight)))
        totals[weight] = float(total - metrics["loss_fm"] - metrics["loss_heads"])
        head_losses.add(float(metrics["loss_heads"]))
    assert calls["n"] == 2, "the physics loss ran with objective.physics_weight = 0"
    assert len(head_losses) == 1
    assert totals[0.0] == pytest.approx(0.0, abs=1e-6) and totals[1.0] > 1e-3
    assert totals[2.0] == pytest.approx(2 * totals[1.0], rel=1e-5)


@pytest.mark.parametrize("section, field", [("objective", "physics_weight"), ("lora", "heads_lr_scale")])
def test_a_negative_weight_is_refused_naming_the_section_and_field(section, field):
    from stages.trainer import ConfigError, load_config
    from tests.helpers import DEMO2

    with pytest.raises(ConfigError, match=rf"'{section}'.*{field} must be >= 0"):
        load_config(Stage2Config, DEMO2, [f"{section}.{field}=-1"])


def test_physics_config_has_no_second_tgm_weight():
    with pytest.raises(TypeError):
        heads.physics.PhysicsLossConfig(depth_tgm_weight=1.0)


def _diffsynth_weights(timesteps: torch.Tensor, shift: float) -> torch.Tensor:
    """The reference: diffsynth's Wan scheduler set up as its trainer does, one timestep at a time."""
    from diffsynth.diffusion.flow_match import FlowMatchScheduler

    scheduler = FlowMatchScheduler("Wan")
    scheduler.set_timesteps(1000, training=True, shift=shift)
    return torch.stack([scheduler.training_weight(t) for t in timesteps])


@pytest.mark.parametrize("shift", [5.0, 3.0])
def test_timestep_weight_is_diffsynths(shift):
    t = torch.cat([torch.tensor([0.0, 1.0, 499.0, 500.0, 999.9, 1000.0]),
                   1000 * torch.rand(200, generator=torch.Generator().manual_seed(0))])
    torch.testing.assert_close(timestep_weight(t, shift), _diffsynth_weights(t, shift), rtol=0, atol=0)


def test_stage2_flow_matching_loss_is_weighted_by_diffsynths_weight_of_t():
    """Per sample: MSE over latent frames >= 1 of velocity vs noise - x0, times diffsynth's weight
    of t = 1000 sigma ("bell", the default), or times 1 ("uniform"); then the batch mean."""
    sigma = torch.tensor([0.3, 0.9])
    noise = torch.randn(2, *LATENT[1:], generator=torch.Generator().manual_seed(2))
    weights = _diffsynth_weights(1000 * sigma, 5.0)
    assert weights[0] > 1.5 and weights[1] < 0.7, weights

    def loss_fm(weighting: str) -> tuple[torch.Tensor, torch.Tensor]:
        stage = _stage(Stage2Config(objective=ObjectiveConfig(fm_weighting=weighting)), batch=2)
        latents, velocity = stage.fixed
        mse = (velocity - (noise - latents))[:, :, 1:].square().flatten(1).mean(1)
        return stage.losses(_batch(2), sigma, noise)[1]["loss_fm"], mse

    assert ObjectiveConfig().fm_weighting == "bell"
    bell, mse = loss_fm("bell")
    torch.testing.assert_close(bell, (weights * mse).mean())
    uniform, _ = loss_fm("uniform")
    torch.testing.assert_close(uniform, mse.mean())


def test_stage2_timestep_is_1000_sigma_in_fp32_with_bf16_latents():
    """bf16 rounds 0.997 to 0.99609375; the model must still get t = 997 (not 996)."""
    seen: list[torch.Tensor] = []
    stage = _stage(Stage2Config(), latent_dtype=torch.bfloat16, seen=seen)
    sigma = torch.tensor([0.997])
    assert sigma.to(torch.bfloat16).item() == 0.99609375
    stage.losses(_batch(), sigma, torch.randn(LATENT))
    assert seen[0].dtype == torch.float32
    assert torch.equal(seen[0], sigma * 1000.0) and abs(seen[0].item() - 997.0) < 1e-3


def _terms(weighting: str, sigma: list[float], sigma_max: float = 0.3) -> tuple[torch.Tensor, dict]:
    """Total and metrics of a two-sample batch whose samples sit at the given sigmas."""
    config = Stage2Config(objective=ObjectiveConfig(heads_sigma_weighting=weighting, heads_sigma_max=sigma_max))
    noise = torch.randn(2, *LATENT[1:], generator=torch.Generator().manual_seed(2))
    return _stage(config, batch=2).losses(_batch(2), torch.tensor(sigma), noise)


def _heads_and_physics(weighting: str, sigma: list[float]) -> float:
    total, metrics = _terms(weighting, sigma)
    return float(total - metrics["loss_fm"])


def test_sigma_weighting_below_drops_the_head_and_physics_terms_of_noisy_samples():
    """w(sigma) = [sigma <= 0.3]: a batch above the bound trains on flow matching alone; one sample
    below it contributes its own terms, half-weighted by the batch mean."""
    assert _heads_and_physics("below", [0.6, 0.9]) == 0.0
    assert _heads_and_physics("all", [0.6, 0.9]) > 0.0
    low_only = _heads_and_physics("below", [0.2, 0.9])
    # Sample 0 alone (batch of one at its own sigma) gives the term the weighted mean is built from.
    config = Stage2Config(objective=ObjectiveConfig(heads_sigma_weighting="all"))
    noise = torch.randn(2, *LATENT[1:], generator=torch.Generator().manual_seed(2))
    stage = _stage(config, batch=2)
    first = {k: (v[:1] if torch.is_tensor(v) and v.dim() else v) for k, v in _batch(2).items()}
    first["prompt"] = ["a ball"]
    outputs_model = stage.run.model
    stage.run.model = lambda x_t, t, c, rgb, frame_index=None: tuple(o[:1] for o in outputs_model(x_t, t, c, rgb))
    stage.source.encode = lambda rgb, prompts: (stage.fixed[0][:1], torch.zeros(1, 3, 8))
    total, metrics = stage.losses(first, torch.tensor([0.2]), noise[:1])
    assert low_only == pytest.approx(float(total - metrics["loss_fm"]) / 2, rel=1e-5)


def test_sigma_weighting_linear_scales_the_terms_by_one_minus_sigma():
    full = _heads_and_physics("all", [0.25, 0.25])
    assert _heads_and_physics("linear", [0.25, 0.25]) == pytest.approx(0.75 * full, rel=1e-5)
    assert _heads_and_physics("linear", [1.0, 1.0]) == 0.0


def test_sigma_weighting_is_validated():
    with pytest.raises(ValueError, match="heads_sigma_weighting"):
        ObjectiveConfig(heads_sigma_weighting="sometimes")
    with pytest.raises(ValueError, match="heads_sigma_max"):
        ObjectiveConfig(heads_sigma_max=0.0)


def test_probe_averages_skip_a_term_undefined_on_one_window():
    """A fitted g is NaN on a window without free-flight pixels; before, one such window made the
    probe's average NaN for the whole run, hiding whether the term moved."""
    from stages.model import finite_means

    rows = [{"loss": 1.0, "phys_fitted_g": float("nan")}, {"loss": 3.0, "phys_fitted_g": 9.0},
            {"loss": 2.0, "phys_fitted_g": 11.0, "only_here": float("inf")}]
    means = finite_means(rows)
    assert means["loss"] == 2.0 and means["phys_fitted_g"] == 10.0
    assert math.isnan(means["only_here"])


def _with_frames(frame_index: torch.Tensor | None, stage: Stage2 | None = None, batch: dict | None = None):
    noise = torch.randn(LATENT, generator=torch.Generator().manual_seed(2))
    stage = stage or _stage(Stage2Config())
    return stage.losses(batch or _batch(), torch.tensor([0.2]), noise, frame_index=frame_index)


def test_heads_frames_covering_the_window_equal_the_whole_window_path():
    whole, metrics = _with_frames(None)
    every, every_metrics = _with_frames(torch.arange(T)[None])
    torch.testing.assert_close(every, whole)
    assert every_metrics.keys() == metrics.keys()
    for key in metrics:
        torch.testing.assert_close(torch.as_tensor(every_metrics[key]), torch.as_tensor(metrics[key]), equal_nan=True)


def test_a_run_of_k_frames_is_scored_like_a_window_of_those_frames():
    """Frames 0..3 of a 5-frame window through frame_index give the loss of a 4-frame window whose
    targets and predictions are those frames: targets are cut where the predictions are."""
    index = torch.arange(4)[None]
    part, part_metrics = _with_frames(index)
    stage = _stage(Stage2Config())
    _, flow, log_depth = stage.run.model(None, None, None, None)
    outputs = (stage.fixed[1], at_frames(flow, index), at_frames(log_depth, index))
    stage.run.model = lambda x_t, timestep, context, rgb, frame_index=None: outputs
    batch = {k: at_frames(v, index) if k in ("rgb", "flow", "flow_valid", "depth", "depth_valid") else v
             for k, v in _batch().items()}
    short, short_metrics = _with_frames(None, stage, batch)
    torch.testing.assert_close(part, short)
    torch.testing.assert_close(part_metrics["loss_heads"], short_metrics["loss_heads"])


def test_contiguous_frames_are_one_seeded_run_inside_the_window():
    g = torch.Generator().manual_seed(0)
    index = contiguous_frames(64, 9, 4, g)
    assert index.shape == (64, 4) and bool(((index[:, 1:] - index[:, :-1]) == 1).all())
    assert int(index.min()) == 0 and int(index.max()) == 8  # every start 0..5 reachable
    torch.testing.assert_close(index, contiguous_frames(64, 9, 4, torch.Generator().manual_seed(0)))
    assert contiguous_frames(2, 9, 0) is None and contiguous_frames(2, 9, 9) is None


def test_heads_frames_is_validated():
    with pytest.raises(ValueError, match="heads_frames must be 0 or >= 4"):
        ObjectiveConfig(heads_frames=2)
    with pytest.raises(ValueError, match="heads_frames applies to mode = 'denoise'"):
        Stage2Config(objective=ObjectiveConfig(mode="reward", heads_frames=8))
