"""Loading from a fake local Wan2.2-TI2V-5B-layout directory written from the tiny models."""
import json

import pytest
import torch
from safetensors.torch import save_file

from world_model.features import dit_forward
from world_model.loading import (MissingWeightsError, WeightsError, WeightsLayout,
                                 WeightsMismatchError, load_dit, load_text_encoder, load_vae)
from world_model.models import build_dit, build_text_encoder, build_vae


def _write_weights(root, dit, vae, te):
    sd = {k: v.contiguous() for k, v in dit.state_dict().items()}
    keys = sorted(sd)
    shards = {"diffusion_pytorch_model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "diffusion_pytorch_model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for name, ks in shards.items():
        save_file({k: sd[k] for k in ks}, str(root / name))
    index = {"metadata": {}, "weight_map": {k: n for n, ks in shards.items() for k in ks}}
    (root / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    # the official VAE checkpoint has no "model." prefix (diffsynth's converter adds it)
    torch.save({k[len("model."):]: v for k, v in vae.state_dict().items()}, root / "Wan2.2_VAE.pth")
    torch.save(te.state_dict(), root / "models_t5_umt5-xxl-enc-bf16.pth")
    (root / "google" / "umt5-xxl").mkdir(parents=True)


@pytest.fixture
def weights(tmp_path):
    models = build_dit("tiny", seed=3), build_vae("tiny", seed=4), build_text_encoder("tiny", seed=5)
    _write_weights(tmp_path, *models)
    return tmp_path, models


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_roundtrip_loads_exact_weights(weights):
    root, (dit, vae, te) = weights
    layout = WeightsLayout.resolve(root)
    assert len(layout.dit_files) == 2 and layout.vae_file.name == "Wan2.2_VAE.pth"
    dit2 = load_dit(root, "tiny", dtype=torch.float32)
    vae2 = load_vae(root, "tiny", dtype=torch.float32)
    te2 = load_text_encoder(root, "tiny", dtype=torch.float32)
    assert _same(dit, dit2) and _same(vae, vae2) and _same(te, te2)
    assert not any(p.requires_grad for p in dit2.parameters()) and not dit2.training
    lat, ctx = torch.randn(1, 48, 2, 4, 4), torch.randn(1, 16, 32)
    assert torch.equal(dit_forward(dit, lat, 10.0, ctx).output, dit_forward(dit2, lat, 10.0, ctx).output)
    assert load_dit(root, "tiny", dtype=torch.bfloat16).patch_embedding.weight.dtype == torch.bfloat16


def test_missing_shard_names_the_file(weights):
    root, _ = weights
    (root / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()
    with pytest.raises(MissingWeightsError, match="00002-of-00002"):
        load_dit(root, "tiny")
    (root / "diffusion_pytorch_model.safetensors.index.json").unlink()
    with pytest.raises(MissingWeightsError, match="00002-of-00002"):
        load_dit(root, "tiny")


def test_missing_vae_lists_expected_names(weights):
    root, _ = weights
    (root / "Wan2.2_VAE.pth").unlink()
    with pytest.raises(MissingWeightsError, match="Wan2.2_VAE.safetensors, Wan2.2_VAE.pth"):
        load_vae(root, "tiny")
    with pytest.raises(MissingWeightsError):
        WeightsLayout.resolve(root)


def test_wrong_shape_and_unexpected_key_are_reported(weights):
    root, (dit, _, te) = weights
    sd = te.state_dict()
    sd["norm.weight"] = torch.ones(7)
    sd["extra.weight"] = torch.ones(1)
    torch.save(sd, root / "models_t5_umt5-xxl-enc-bf16.pth")
    with pytest.raises(WeightsMismatchError) as err:
        load_text_encoder(root, "tiny")
    msg = str(err.value)
    assert "models_t5_umt5-xxl-enc-bf16.pth" in msg and "norm.weight" in msg and "extra.weight" in msg
    # a tiny checkpoint is not a 5B model: every shape mismatches, the message says so
    with pytest.raises(WeightsMismatchError, match="shape mismatches"):
        load_dit(root, "ti2v_5b")


def test_pickled_objects_are_refused(weights):
    root, _ = weights
    torch.save({"weights": torch.ones(1), "obj": _Evil()}, root / "Wan2.2_VAE.pth")
    with pytest.raises(WeightsError, match="weights_only"):
        load_vae(root, "tiny")


class _Evil:
    pass
