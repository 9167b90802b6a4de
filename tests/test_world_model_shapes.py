"""Geometry of the presets: TI2V-5B shapes on the meta device, FLOP counts, temporal grouping."""
import pytest
import torch

from world_model.features import dit_forward
from world_model.flops import dit_block_flops, dit_forward_flops, mfu
from world_model.models import build_dit, count_parameters
from world_model.presets import PRESETS, get_preset


def test_5b_latent_and_token_geometry():
    p = get_preset("ti2v_5b")
    assert p.latent_shape(49, 480, 480) == (48, 13, 30, 30)
    assert p.token_grid(49, 480, 480) == (13, 15, 15)
    assert p.num_tokens(49, 480, 480) == 2925
    assert p.token_stride == (4, 32, 32)
    assert p.text_len == 512 and p.text_dim == 4096 and p.hidden_dim == 3072
    assert len(p.default_taps) == 4 and p.default_taps[-1] == 29
    # the middle of the network is covered (DiffTrack: around block 17 of 30)
    assert any(10 <= t <= 20 for t in p.default_taps)


@pytest.mark.parametrize("frames,h,w,message", [
    (48, 480, 480, r"frames must be 1 \+ 4k, got 48"),
    (0, 480, 480, r"frames must be 1 \+ 4k, got 0"),
    (-3, 480, 480, r"frames must be 1 \+ 4k, got -3"),  # (-3 - 1) % 4 == 0: only the 'frames >= 1' rule stops it
    (49, 470, 480, "height/width must be multiples of 32/32, got 470x480"),
    (49, 480, 500, "height/width must be multiples of 32/32, got 480x500"),
    # 16 px is one whole latent (VAE stride 16) but half a 2x2 DiT patch: still rejected.
    (49, 496, 480, "height/width must be multiples of 32/32, got 496x480"),
    (49, 480, 496, "height/width must be multiples of 32/32, got 480x496"),
])
def test_invalid_video_sizes_are_rejected(frames, h, w, message):
    p = get_preset("ti2v_5b")
    with pytest.raises(ValueError, match=message):
        p.latent_shape(frames, h, w)
    with pytest.raises(ValueError, match=message):
        p.token_grid(frames, h, w)


@pytest.mark.parametrize("frames,h,w,latent", [
    (1, 32, 32, (48, 1, 2, 2)), (5, 480, 512, (48, 2, 30, 32)), (49, 512, 480, (48, 13, 32, 30)),
])
def test_valid_neighbours_of_the_invalid_sizes_are_accepted(frames, h, w, latent):
    p = get_preset("ti2v_5b")
    assert p.latent_shape(frames, h, w) == latent
    assert p.token_grid(frames, h, w) == (latent[1], latent[2] // 2, latent[3] // 2)


def test_temporal_grouping_of_latent_frames():
    p = get_preset("ti2v_5b")
    assert list(p.video_frames_of_latent(0)) == [0]
    assert list(p.video_frames_of_latent(1)) == [1, 2, 3, 4]
    assert list(p.video_frames_of_latent(12)) == [45, 46, 47, 48]
    covered = [i for k in range(13) for i in p.video_frames_of_latent(k)]
    assert covered == list(range(49))


def test_5b_dit_on_meta_has_5b_params_and_tapped_grid_shapes():
    p = get_preset("ti2v_5b")
    dit = build_dit(p, empty=True)
    assert 4.99e9 < count_parameters(dit) < 5.01e9
    assert all(t.is_meta for t in dit.parameters())
    lat = torch.empty(1, *p.latent_shape(49, 480, 480), device="meta")
    ctx = torch.empty(1, p.text_len, p.text_dim, device="meta")
    out = dit_forward(dit, lat, 100.0, ctx, taps=p.default_taps, return_output=True)
    assert sorted(out.taps) == list(p.default_taps)
    for grid in out.as_list():
        assert grid.shape == (1, 3072, 13, 15, 15)
    assert out.output.shape == (1, 48, 13, 30, 30)


def test_tap_validation():
    p = get_preset("tiny")
    assert p.taps([3, 1, 1]) == (1, 3)
    with pytest.raises(ValueError):
        p.taps([p.num_layers])
    with pytest.raises(ValueError):
        p.taps([])


def test_flops_formula_known_values():
    p = get_preset("tiny")  # dim 64, ffn 128, text_len 16
    terms = dit_block_flops(p, num_tokens=10)
    assert terms["self_attn_proj"] == 2 * 10 * 4 * 64 * 64
    assert terms["cross_attn_k_v"] == 2 * 16 * 2 * 64 * 64
    assert terms["ffn"] == 2 * 10 * 2 * 64 * 128
    assert terms["self_attn_core"] == 4 * 100 * 64
    assert terms["cross_attn_core"] == 4 * 10 * 16 * 64
    # 5B at 49x480^2: ~2 * params * tokens plus attention, i.e. about 30 TFLOP
    f = dit_forward_flops("ti2v_5b", 49, 480, 480)
    assert 29e12 < f < 33e12
    assert dit_forward_flops("ti2v_5b", 49, 480, 480, batch=2) == pytest.approx(2 * f)
    assert mfu(f, f / 989e12, 989.0) == pytest.approx(1.0)


def test_presets_are_consistent():
    for p in PRESETS.values():
        assert p.dit.in_dim == p.vae.z_dim == p.latent_channels
        assert p.dit.seperated_timestep and p.dit.fuse_vae_embedding_in_latents
    with pytest.raises(ValueError):
        get_preset("nope")
