"""LoRA injection: only adapter weights train, the model starts equal to the base."""

import torch

from world_model.features import dit_forward
from world_model.lora import add_lora, lora_parameters
from world_model.models import build_dit
from world_model.presets import get_preset


def test_lora_starts_as_identity_and_only_adapters_train():
    preset = get_preset("tiny")
    dit = build_dit(preset, seed=0)
    gen = torch.Generator().manual_seed(0)
    c, t, h, w = preset.latent_shape(9, 64, 64)
    latents = torch.randn(1, c, t, h, w, generator=gen)
    context = torch.randn(1, preset.text_len, preset.text_dim, generator=gen)
    with torch.no_grad():
        before = dit_forward(dit, latents, 500.0, context).output
    base = {n: p.detach().clone() for n, p in dit.named_parameters()}
    dit = add_lora(dit, rank=4)
    adapters = lora_parameters(dit)
    # q, k, v, o of self- and cross-attention and two FFN linears: 10 targets x (A, B) per block.
    assert len(adapters) == preset.num_layers * 10 * 2
    with torch.no_grad():
        torch.testing.assert_close(dit_forward(dit, latents, 500.0, context).output, before)
    optimizer = torch.optim.SGD(adapters, lr=1.0)
    for _ in range(2):  # step twice: B leaves zero after the first step, then A moves too
        dit_forward(dit, latents, 500.0, context).output.square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    for name, parameter in dit.named_parameters():
        if "lora_" in name:
            continue
        original = name.replace(".base_layer", "")
        assert torch.equal(parameter, base[original]), name
    with torch.no_grad():
        assert not torch.allclose(dit_forward(dit, latents, 500.0, context).output, before)
