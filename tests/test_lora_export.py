"""peft LoRA -> diffsynth file -> diffsynth's own loader reproduces the peft model."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from world_model.features import dit_forward
from world_model.lora import add_lora
from world_model.lora_export import (LoraFileError, export_lora_for_diffsynth, load_lora_into_dit,
                                     lora_state_dict, read_lora_metadata)
from world_model.models import build_dit
from world_model.presets import get_preset

RANK, ALPHA = 4, 8.0  # peft scaling 2: a forgotten scaling cannot pass


@pytest.fixture(scope="module")
def setup():
    preset = get_preset("tiny")
    gen = torch.Generator().manual_seed(0)
    c, t, h, w = preset.latent_shape(9, 64, 64)
    latents = torch.randn(1, c, t, h, w, generator=gen)
    context = torch.randn(1, preset.text_len, preset.text_dim, generator=gen)

    base = build_dit("tiny", seed=0)
    with torch.no_grad():
        base_out = dit_forward(base, latents, 500.0, context).output
    dit = add_lora(build_dit("tiny", seed=0), rank=RANK, alpha=ALPHA)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in dit.named_parameters():
            if "lora_" in name:  # peft zero-inits B: randomise A and B
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
        peft_out = dit_forward(dit, latents, 500.0, context).output
    return dict(latents=latents, context=context, dit=dit, base_out=base_out, peft_out=peft_out)


def _loaded_output(setup, path, **kwargs):
    fresh = build_dit("tiny", seed=0)
    load_lora_into_dit(fresh, path, **kwargs)
    with torch.no_grad():
        return dit_forward(fresh, setup["latents"], 500.0, setup["context"]).output


def test_lora_state_dict_has_peft_names(setup):
    state = lora_state_dict(setup["dit"])
    assert "blocks.0.self_attn.q.lora_A.default.weight" in state
    assert len(state) == get_preset("tiny").num_layers * 10 * 2
    with pytest.raises(ValueError, match="no peft LoRA"):
        lora_state_dict(build_dit("tiny", seed=0))


def test_fp32_export_loads_through_diffsynth_exactly(setup, tmp_path):
    path = export_lora_for_diffsynth(setup["dit"], tmp_path / "sub" / "lora.safetensors",
                                     dtype=torch.float32)
    assert path.exists() and not list(path.parent.glob("*.tmp"))
    tensors = load_file(str(path))
    assert set(tensors) == {k.replace(".default", "") for k in lora_state_dict(setup["dit"])}
    assert all(t.dtype == torch.float32 for t in tensors.values())
    meta = read_lora_metadata(path)
    assert meta["format"] == "diffsynth-lora" and meta["scaling_folded_into"] == "lora_B"
    assert (meta["rank"], float(meta["alpha"]), float(meta["scaling"])) == ("4", ALPHA, 2.0)
    assert set(json.loads(meta["targets"])) == {"q", "k", "v", "o", "ffn.0", "ffn.2"}

    out = _loaded_output(setup, path)
    effect = (setup["peft_out"] - setup["base_out"]).abs().max()
    assert effect > 1e-2  # the LoRA changes the output far beyond the tolerance below
    torch.testing.assert_close(out, setup["peft_out"], rtol=1e-5, atol=1e-5)


def test_bf16_export_is_close(setup, tmp_path):
    path = export_lora_for_diffsynth(setup["dit"], tmp_path / "lora_bf16.safetensors")
    assert all(t.dtype == torch.bfloat16 for t in load_file(str(path)).values())
    out = _loaded_output(setup, path)
    err = (out - setup["peft_out"]).norm() / (setup["peft_out"] - setup["base_out"]).norm()
    assert err < 2e-2, float(err)


def test_key_for_missing_module_raises_before_touching_weights(setup, tmp_path):
    path = export_lora_for_diffsynth(setup["dit"], tmp_path / "lora.safetensors", dtype=torch.float32)
    tensors = load_file(str(path))
    tensors["blocks.99.self_attn.q.lora_A.weight"] = torch.zeros(RANK, 64)
    tensors["blocks.99.self_attn.q.lora_B.weight"] = torch.zeros(64, RANK)
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad))
    fresh = build_dit("tiny", seed=0)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(LoraFileError, match=r"match no module.*blocks\.99\.self_attn\.q"):
        load_lora_into_dit(fresh, bad)
    assert all(torch.equal(v, before[k]) for k, v in fresh.state_dict().items())

    prefixed = {f"pipe.dit.{k}": v for k, v in load_file(str(path)).items()}
    save_file(prefixed, str(bad))
    with pytest.raises(LoraFileError, match="diffusion_model"):
        load_lora_into_dit(build_dit("tiny", seed=0), bad)

    stray = dict(load_file(str(path)), **{"blocks.0.self_attn.q.lora_A.extra": torch.zeros(1)})
    save_file(stray, str(bad))
    with pytest.raises(LoraFileError, match="silently ignore"):
        load_lora_into_dit(build_dit("tiny", seed=0), bad)


def test_diffusion_model_prefix_and_peft_default_keys_are_accepted(setup, tmp_path):
    """The loader's other accepted spellings: 'diffusion_model.' prefix and peft '.default'."""
    path = export_lora_for_diffsynth(setup["dit"], tmp_path / "lora.safetensors", dtype=torch.float32)
    renamed = {"diffusion_model." + k.replace(".weight", ".default.weight"): v
               for k, v in load_file(str(path)).items()}
    other = tmp_path / "renamed.safetensors"
    save_file(renamed, str(other))
    torch.testing.assert_close(_loaded_output(setup, other), setup["peft_out"], rtol=1e-5, atol=1e-5)


def test_misuse_is_refused(setup, tmp_path):
    with pytest.raises(ValueError, match="safetensors"):
        export_lora_for_diffsynth(setup["dit"], tmp_path / "lora.pt")
    path = export_lora_for_diffsynth(setup["dit"], tmp_path / "lora.safetensors")
    with pytest.raises(LoraFileError, match="peft-injected"):
        load_lora_into_dit(setup["dit"], path)
