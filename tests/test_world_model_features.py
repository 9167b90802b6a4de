"""The explicit DiT loop reproduces diffsynth's model_fn_wan_video and extraction is deterministic."""
import pytest
import torch

from world_model.features import (ExtractionConfig, dit_forward, extract_features, make_noise,
                                  noisy_latents, shifted_sigma, sigma_from_timestep)
from world_model.models import build_dit
from world_model.presets import get_preset

P = get_preset("tiny")


@pytest.fixture(scope="module")
def dit():
    return build_dit(P, seed=0)


def _inputs(batch=1, seed=1, frames=3, hw=8):
    g = torch.Generator().manual_seed(seed)
    lat = torch.randn(batch, P.latent_channels, frames, hw, hw, generator=g)
    ctx = torch.randn(batch, P.text_len, P.text_dim, generator=g)
    return lat, ctx


@pytest.mark.parametrize("timestep", [0.0, 250.0, 900.0])
def test_matches_diffsynth_model_fn_ti2v(dit, timestep):
    from diffsynth.pipelines.wan_video import model_fn_wan_video

    lat, ctx = _inputs()
    ts = torch.tensor([timestep])
    # What WanVideoPipeline passes for TI2V-5B: the fused image latent in frame 0 and
    # fuse_vae_embedding_in_latents=True (per-token timesteps, 0 on the first latent frame).
    ref = model_fn_wan_video(dit=dit, latents=lat, timestep=ts, context=ctx,
                             fuse_vae_embedding_in_latents=True)
    out = dit_forward(dit, lat, ts, ctx, taps=P.default_taps, return_output=True)
    assert out.output.shape == ref.shape == lat.shape
    assert (out.output - ref).abs().max().item() <= 1e-5


def test_first_frame_timestep_zero_matters(dit):
    """TI2V gives the first latent frame's tokens timestep 0 and the rest t; T2V gives every token t.
    Each mode must equal diffsynth's own model_fn for that mode, and the two must differ, most of
    all on the first latent frame (the only tokens whose timestep changes)."""
    from diffsynth.pipelines.wan_video import model_fn_wan_video

    lat, ctx = _inputs()
    ts = torch.tensor([500.0])
    ti2v = dit_forward(dit, lat, 500.0, ctx, taps=(), return_output=True).output
    t2v = dit_forward(dit, lat, 500.0, ctx, taps=(), return_output=True, first_frame_clean=False).output
    ref_ti2v = model_fn_wan_video(dit=dit, latents=lat, timestep=ts, context=ctx, fuse_vae_embedding_in_latents=True)
    ref_t2v = model_fn_wan_video(dit=dit, latents=lat, timestep=ts, context=ctx, fuse_vae_embedding_in_latents=False)
    torch.testing.assert_close(ti2v, ref_ti2v, atol=1e-5, rtol=0)
    torch.testing.assert_close(t2v, ref_t2v, atol=1e-5, rtol=0)
    gap = (ti2v - t2v).abs().amax(dim=(0, 1, 3, 4))  # per latent frame
    assert gap[0] > 0.1 and gap[0] > 10 * gap[1:].max(), gap


def test_taps_shapes_and_early_stop(dit):
    lat, ctx = _inputs(batch=2)
    full = dit_forward(dit, lat, 100.0, ctx, taps=(1, 3), return_output=True)
    early = dit_forward(dit, lat, 100.0, ctx, taps=(1,), return_output=False)
    assert early.output is None
    assert full.taps[1].shape == (2, P.hidden_dim, 3, 4, 4)
    torch.testing.assert_close(full.taps[1], early.taps[1], rtol=0, atol=0)
    assert not torch.equal(full.taps[1], full.taps[3])


def test_per_sample_timesteps_equal_separate_runs(dit):
    lat, ctx = _inputs(batch=2)
    both = dit_forward(dit, lat, torch.tensor([100.0, 700.0]), ctx, taps=(2,), return_output=True)
    for i, t in enumerate([100.0, 700.0]):
        one = dit_forward(dit, lat[i:i + 1], t, ctx[i:i + 1], taps=(2,), return_output=True)
        torch.testing.assert_close(both.output[i:i + 1], one.output, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(both.taps[2][i:i + 1], one.taps[2], atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_same_values_and_grads(dit):
    lat, ctx = _inputs()
    grads = []
    for ckpt in (False, True):
        x = lat.clone().requires_grad_(True)
        out = dit_forward(dit, x, 300.0, ctx, taps=(1, 3), return_output=True, gradient_checkpointing=ckpt)
        (out.output.square().mean() + out.taps[1].mean()).backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


def test_extraction_is_deterministic_and_batch_independent(dit):
    x0, ctx = _inputs(batch=2)
    cfg = ExtractionConfig(timestep=100.0, noise_seed=7)
    a = extract_features(dit, x0, ctx, cfg, P.default_taps)
    b = extract_features(dit, x0, ctx, cfg, P.default_taps)
    single = extract_features(dit, x0[1:], ctx[1:], cfg, P.default_taps)
    other = extract_features(dit, x0, ctx, ExtractionConfig(timestep=100.0, noise_seed=8), P.default_taps)
    for k in P.default_taps:
        assert torch.equal(a.taps[k], b.taps[k])
        torch.testing.assert_close(a.taps[k][1:], single.taps[k], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(a.taps[k], other.taps[k])


def test_noise_schedule_helpers():
    x0 = torch.zeros(1, 2, 3, 2, 2)
    noise = make_noise(x0.shape, seed=3)
    assert torch.equal(noise, make_noise(x0.shape, seed=3))
    xt = noisy_latents(x0, 1.0, noise)
    assert torch.equal(xt[:, :, 0], x0[:, :, 0])  # TI2V: first latent frame stays clean
    assert torch.equal(xt[:, :, 1:], noise[:, :, 1:])
    half = noisy_latents(torch.ones_like(x0), torch.tensor([0.25]), noise, clean_first_frame=False)
    torch.testing.assert_close(half, 0.75 + 0.25 * noise)
    assert sigma_from_timestep(250.0) == 0.25
    assert shifted_sigma(0.0) == 0.0 and shifted_sigma(1.0) == 1.0
    assert shifted_sigma(0.5) == pytest.approx(5 / 6)
    with pytest.raises(ValueError):
        ExtractionConfig(timestep=1001.0)
