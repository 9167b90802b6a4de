"""Stage 2's reward-gradient mode (stages/reward.py): the one-step x̂0 and the sampler are exact for
the true velocity, the judge is the frozen base even when its blocks are recomputed in backward,
the reward's gradient reaches the LoRA and nothing else, and a reward run exports a LoRA that
diffsynth loads and resumes exactly after SIGKILL."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from stages.reward import (
    RewardConfig,
    RewardWorldModel,
    predicted_clean,
    sampler_sigmas,
)
from stages.stage2 import Stage2Config
from stages.trainer import load_config
from tests.conftest import sigkill_when_written, start_stage
from tests.helpers import DEMO2, stage2_args
from world_model.features import (
    ExtractionConfig,
    dit_forward,
    make_noise,
    noisy_latents,
)

SHAPE = (2, 48, 3, 4, 4)  # (B, C, T', h, w) latents of the tiny preset
REWARD = {"objective.mode": "reward", "lora.train_heads": "false", "ema.enabled": "false"}


def test_one_step_x0_hat_is_x0_for_the_true_velocity():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
    sigma = torch.tensor([0.2, 0.9])
    x_t = noisy_latents(x0, sigma, noise)
    torch.testing.assert_close(predicted_clean(x_t, noise - x0, sigma), x0)
    # Whatever the velocity says, frame 0 (the clean image latent) is kept.
    wrong = predicted_clean(x_t, torch.randn(SHAPE, generator=g), sigma)
    assert torch.equal(wrong[:, :, :1], x0[:, :, :1]) and not torch.allclose(wrong[:, :, 1:], x0[:, :, 1:])


@pytest.mark.parametrize("steps,shift", [(8, 5.0), (3, 1.0)])
def test_sampler_sigmas_are_diffsynths_wan_schedule(steps, shift):
    from diffsynth.diffusion.flow_match import FlowMatchScheduler

    scheduler = FlowMatchScheduler("Wan")
    scheduler.set_timesteps(steps, shift=shift)
    sigmas = sampler_sigmas(steps, shift)
    torch.testing.assert_close(sigmas[:-1], scheduler.sigmas.float())
    assert sigmas[0] == 1.0 and sigmas[-1] == 0.0


def _tiny_dit_with_lora(lora_seed: int = 1):
    """Tiny DiT with LoRA whose B is random (so the adapted model differs from the base)."""
    from world_model.lora import add_lora
    from world_model.models import build_dit

    dit = add_lora(build_dit("tiny", seed=0), rank=4, alpha=4.0)
    g = torch.Generator().manual_seed(lora_seed)
    for name, p in dit.named_parameters():
        if "lora_B" in name:
            p.data = 0.1 * torch.randn(p.shape, generator=g)
    return dit


class _TapHeads(torch.nn.Module):
    """Stands in for the heads: returns the first and last tapped grids."""

    def forward(self, taps, rgb):
        return taps[0], taps[-1]


def _reward_model(dit, steps: int = 0, sampler_steps: int = 4) -> RewardWorldModel:
    return RewardWorldModel(dit, _TapHeads(), (0, 3), True, ExtractionConfig(timestep=100.0, noise_seed=0),
                            RewardConfig(steps=steps, sampler_steps=sampler_steps), 5.0).train()


def test_the_judge_is_the_frozen_base_even_when_its_blocks_are_recomputed():
    """With per-block checkpointing the judge's blocks run again in backward, after its forward
    left the adapters-off context: they must still run without LoRA (same values and gradient
    with respect to x̂0 as the plain base DiT), and the LoRA must get no gradient from them."""
    from world_model.models import build_dit

    g = torch.Generator().manual_seed(2)
    x0_hat = torch.randn(1, *SHAPE[1:], generator=g, requires_grad=True)
    context = torch.randn(1, 16, 32, generator=g)
    dit = _tiny_dit_with_lora()
    first, last = _reward_model(dit).judge(x0_hat, context, rgb=None)
    (first.square().mean() + last.square().mean()).backward()
    judged_grad = x0_hat.grad.clone()
    assert all(p.grad is None for p in dit.parameters()), "the judge passed gradient to a weight"

    x0_hat.grad = None
    noise = make_noise(SHAPE[1:], 0).expand_as(x0_hat)
    taps = dit_forward(build_dit("tiny", seed=0), noisy_latents(x0_hat, 0.1, noise), 100.0, context,
                       taps=(0, 3), return_output=False).as_list()
    torch.testing.assert_close(first, taps[0])
    torch.testing.assert_close(last, taps[-1])
    (taps[0].square().mean() + taps[-1].square().mean()).backward()
    torch.testing.assert_close(judged_grad, x0_hat.grad)
    adapted = dit_forward(dit, noisy_latents(x0_hat, 0.1, noise), 100.0, context, taps=(3,), return_output=False)
    assert not torch.allclose(adapted.as_list()[0], taps[-1]), "the LoRA must change the adapted model"


def test_k_step_sampler_reaches_x0_with_the_true_velocity_and_keeps_grad_for_the_last_k(monkeypatch):
    """With the straight-line velocity noise - x0 every Euler step lands on the line, so the sampler
    ends at x0; only the last K steps run with grad."""
    from stages import reward

    g = torch.Generator().manual_seed(3)
    x0, noise = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
    grad_modes = []

    def oracle(dit, x, timestep, context, **kwargs):
        grad_modes.append(torch.is_grad_enabled())
        return type("Out", (), {"output": noise - x0})()

    monkeypatch.setattr(reward, "dit_forward", oracle)
    model = _reward_model(torch.nn.Linear(1, 1), steps=2, sampler_steps=5)
    out = model.sample(x0, noise, context=None)
    torch.testing.assert_close(out, x0, rtol=1e-5, atol=1e-5)
    # Checkpointed steps also run their forward once more in backward; here: 3 without grad, 2 with.
    assert grad_modes == [False, False, False, True, True]


def _build(args: list[str]):
    from stages.stage2 import build_stage2
    from stages.trainer.backend import make_accelerator

    return build_stage2(load_config(Stage2Config, DEMO2, args), make_accelerator())


def test_reward_mode_needs_frozen_heads_and_its_fields_are_documented():
    from stages.trainer.config_text import missing_docstrings

    assert missing_docstrings(Stage2Config) == []
    with pytest.raises(ValueError, match="train_heads"):
        load_config(Stage2Config, DEMO2, ["objective.mode=reward", "lora.train_heads=true"])
    with pytest.raises(ValueError, match="mode must be one of"):
        load_config(Stage2Config, DEMO2, ["objective.mode=rl"])


@pytest.mark.parametrize("steps", [0, 2], ids=["one_step", "last_2_of_3_steps"])
def test_reward_gradient_reaches_the_lora_only_and_training_changes_nothing_else(
        generated_dataset, stage1_heads, tmp_path, steps):
    """fm_weight = 0: the reward is the whole loss. After backward only LoRA weights hold a
    gradient (non-zero); after training, base DiT, heads and VAE are bitwise unchanged, the LoRA
    moved, and the exported LoRA loads through diffsynth's loader with the trained outputs."""
    from heads.io import load_heads
    from stages.trainer.loop import batch_stream
    from stages.trainer.runner import train
    from world_model.lora_export import load_lora_into_dit
    from world_model.models import build_dit

    stage = _build(stage2_args(generated_dataset, stage1_heads, tmp_path / "run", **REWARD, **{
        "objective.fm_weight": 0.0, "reward.steps": steps, "reward.sampler_steps": 3, "optim.max_steps": 3,
        "optim.lr": 3e-3, "checkpoint.every_steps": 100}))
    model = stage.run.unwrapped
    assert isinstance(model, RewardWorldModel)
    optimized = {id(p) for group in stage.run.optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for n, p in model.named_parameters() if "lora_" in n}

    loss, metrics = stage.loss_fn(next(batch_stream(stage.run)), 0)
    loss.backward()
    assert metrics["reward"] < 0
    torch.testing.assert_close(loss.detach(), -metrics["reward"])  # the flow-matching metric is not in the loss
    vae = stage.source.video_encoder._vae.get()
    with_grad = {n for n, p in [*model.named_parameters(), *vae.named_parameters()] if p.grad is not None}
    assert with_grad and all("lora_" in n for n in with_grad), sorted(with_grad)[:5]
    assert any(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_" in n)
    stage.run.optimizer.zero_grad(set_to_none=True)

    lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    vae_before = {k: v.clone() for k, v in vae.state_dict().items()}
    train(stage)
    base = build_dit("tiny", seed=0).state_dict()
    for name, tensor in model.dit.state_dict().items():
        if "lora_" not in name:
            assert torch.equal(tensor, base[name.replace(".base_layer", "")]), f"base weight {name} changed"
    flow, depth = load_heads(stage1_heads)
    for head, trained in ((flow, model.heads.flow), (depth, model.heads.depth)):
        assert all(torch.equal(t, head.state_dict()[k]) for k, t in trained.state_dict().items())
    assert all(torch.equal(t, vae_before[k]) for k, t in stage.source.video_encoder._vae.get().state_dict().items())
    assert any(not torch.equal(p, lora_before[n]) for n, p in model.named_parameters() if "lora_" in n)

    gen = torch.Generator().manual_seed(3)
    latents = torch.randn(1, *stage.source.preset.latent_shape(5, 64, 64), generator=gen)
    context = torch.randn(1, stage.source.preset.text_len, stage.source.preset.text_dim, generator=gen)
    with torch.no_grad():
        trained = dit_forward(model.dit, latents, 600.0, context).output
        loaded = dit_forward(load_lora_into_dit(build_dit("tiny", seed=0), tmp_path / "run" / "final" /
                                                "lora.safetensors"), latents, 600.0, context).output
    torch.testing.assert_close(loaded, trained, rtol=1e-5, atol=1e-5)


def test_the_verifier_reward_alone_reaches_the_lora_only(generated_dataset, stage1_heads, tmp_path):
    """reward.verifier_weight: the verifier command's own rule (heads.plausibility) as the reward,
    on the frozen heads' output for x̂0; with every other weight 0 its gradient still reaches the
    LoRA, and nothing else."""
    stage = _build(stage2_args(generated_dataset, stage1_heads, tmp_path / "run", **REWARD, **{
        "objective.fm_weight": 0.0, "reward.physics_weight": 0.0, "reward.verifier_weight": 1.0,
        "optim.max_steps": 1, "checkpoint.every_steps": 100}))
    from stages.trainer.loop import batch_stream

    loss, metrics = stage.loss_fn(next(batch_stream(stage.run)), 0)
    loss.backward()
    torch.testing.assert_close(loss.detach(), -metrics["verifier_score"])
    model = stage.run.unwrapped
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad and all("lora_" in n for n in with_grad), sorted(with_grad)[:5]


def test_reward_mode_resumes_exactly_after_sigkill(generated_dataset, stage1_heads, tmp_path):
    """The K-step variant (its noise drawn from seed and step) through the stage-2 script: a run
    killed right after its step-2 checkpoint and resumed ends with the uninterrupted run's LoRA."""
    extra = {**REWARD, "reward.steps": 1, "reward.sampler_steps": 2}

    def launch(name: str, log: str):
        return start_stage("stages/stage2.py", DEMO2, stage2_args(generated_dataset, stage1_heads, tmp_path / name,
                                                                  **extra), tmp_path / log)

    straight = launch("straight", "a.log")
    assert straight.wait(timeout=400) == 0, (tmp_path / "a.log").read_text()[-3000:]
    victim = launch("killed", "b.log")
    marker = tmp_path / "killed" / "checkpoint-2" / "COMPLETE"
    sigkill_when_written(victim, marker, timeout=400)
    assert marker.exists() and not (tmp_path / "killed" / "final").exists()
    resumed = launch("killed", "c.log")
    assert resumed.wait(timeout=400) == 0, (tmp_path / "c.log").read_text()[-3000:]
    a = load_file(tmp_path / "straight" / "final" / "lora.safetensors")
    b = load_file(tmp_path / "killed" / "final" / "lora.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(a[k].abs().sum() > 0 for k in a if "lora_B" in k), "the reward run must have moved the LoRA"
