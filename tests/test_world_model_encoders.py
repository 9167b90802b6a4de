"""VAE/text encoders with caches, tokenizer stand-in, and the tiny end-to-end path."""
import pytest
import torch

from world_model.backbone import FrozenBackbone
from world_model.cache import TensorCache, video_cache_key
from world_model.encoders import PromptEncoder, VideoLatentEncoder
from world_model.features import ExtractionConfig
from world_model.models import build_stand_in_tokenizer, build_text_encoder, build_vae
from world_model.presets import get_preset

P = get_preset("tiny")


def _video(seed=0, frames=9, hw=64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, frames, hw, hw, generator=g) * 2 - 1


class _Factory:
    def __init__(self, build):
        self.build, self.calls = build, 0

    def __call__(self):
        self.calls += 1
        return self.build()


def test_video_latents_cached_and_encoder_released(tmp_path):
    factory = _Factory(lambda: build_vae(P, seed=0))
    enc = VideoLatentEncoder(factory, "tiny-vae:seed0", P, cache=TensorCache(tmp_path))
    video = _video(hw=32)
    z = enc.encode(video, resize=(64, 64))
    assert z.shape == (1, 48, 3, 2, 2) and z.dtype == torch.float32
    enc.release()
    z2 = enc.encode(video, resize=(64, 64))  # served from disk: the VAE is not rebuilt
    assert torch.equal(z, z2) and factory.calls == 1 and enc.cache.hits == 1
    assert not list(tmp_path.rglob("*.tmp"))
    enc.encode(video, resize=(32, 32))  # different resize -> different key -> recomputed
    assert factory.calls == 2
    assert video_cache_key(video[0], None, "a") != video_cache_key(video[0], None, "b")
    with pytest.raises(ValueError):
        enc.encode(video * 3)


def test_causal_temporal_grouping():
    enc = VideoLatentEncoder(build_vae(P, seed=0), "tiny", P)
    video = _video(hw=32)
    z = enc.encode(video)
    changed = video.clone()
    changed[:, :, 5] = -changed[:, :, 5]  # frame 5 belongs to latent frame 2 (frames 5..8)
    z2 = enc.encode(changed)
    assert torch.equal(z[:, :, :2], z2[:, :, :2])
    assert not torch.allclose(z[:, :, 2], z2[:, :, 2])


def test_tiled_encode_shape():
    """96 px with 64 px tiles every 32 px (4/2 latents): 2x2 overlapping tiles blended by diffsynth.
    A corner latent lies in one tile only, so it must equal that 64 px crop encoded alone; the
    untiled encode (one receptive field over all 96 px) must differ there."""
    vae = build_vae(P, seed=0)
    enc = VideoLatentEncoder(vae, "tiny", P, tiled=True, tile_size=(4, 4), tile_stride=(2, 2))
    video = _video(frames=1, hw=96)
    z = enc.encode(video)
    assert z.shape == (1, 48, 1, 6, 6) and torch.isfinite(z).all()
    plain = VideoLatentEncoder(vae, "tiny", P).encode(video)
    with torch.no_grad():
        top_left = vae.encode(video[..., :64, :64], device="cpu")
        bottom_right = vae.encode(video[..., 32:, 32:], device="cpu")
    torch.testing.assert_close(z[..., :2, :2], top_left[..., :2, :2], atol=1e-6, rtol=0)
    torch.testing.assert_close(z[..., -2:, -2:], bottom_right[..., -2:, -2:], atol=1e-6, rtol=0)
    assert (z - plain).abs().max() > 1e-2
    assert not torch.allclose(plain[..., :2, :2], top_left[..., :2, :2], atol=1e-2)


def test_prompt_encoder_matches_pipeline_rules_and_caches(tmp_path):
    tok = build_stand_in_tokenizer(P)
    ids, mask = tok(["a ball falls", "a ball falls"], return_mask=True, add_special_tokens=True)
    assert torch.equal(ids[0], ids[1]) and mask[0].sum() == 4 and ids[0, 3] == 1  # 3 words + EOS
    factory = _Factory(lambda: build_text_encoder(P, seed=0))
    enc = PromptEncoder(factory, tok, "tiny-t5:seed0", cache=TensorCache(tmp_path))
    ctx = enc.encode(["a ball falls", "two dominoes topple over"])
    assert ctx.shape == (2, P.text_len, P.text_dim)
    assert ctx[0, 4:].abs().sum() == 0 and ctx[0, :4].abs().sum() > 0  # padding zeroed
    enc.release()
    again = enc.encode(["two dominoes topple over"])
    assert torch.equal(again[0], ctx[1]) and factory.calls == 1


def test_corrupt_cache_file_is_a_miss(tmp_path):
    cache = TensorCache(tmp_path)
    cache.put("ab" * 32, {"x": torch.ones(2)})
    cache.path("ab" * 32).write_bytes(b"garbage")
    assert cache.get("ab" * 32) is None and "ab" * 32 not in cache


def test_tiny_end_to_end_video_to_features():
    vae_enc = VideoLatentEncoder(build_vae(P, seed=0), "tiny", P)
    txt_enc = PromptEncoder(build_text_encoder(P, seed=0), build_stand_in_tokenizer(P), "tiny")
    video = torch.cat([_video(0), _video(1)])
    z = vae_enc.encode(video)
    assert z.shape == (2, *P.latent_shape(9, 64, 64))
    feats = FrozenBackbone.random("tiny").extract(z, txt_enc.encode(["a", "b"]),
                                                  ExtractionConfig(return_output=True))
    grid = P.token_grid(9, 64, 64)
    assert [tuple(g.shape) for g in feats.as_list()] == [(2, P.hidden_dim, *grid)] * len(P.default_taps)
    assert feats.output.shape == z.shape and torch.isfinite(feats.output).all()
