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


def test_adapters_on_a_bf16_base_keep_fp32_weights_and_take_small_updates():
    """A GPU run holds the frozen base in bf16.  Adapters in bf16 (peft's injection gives them the
    base's dtype) round AdamW updates of lr 1e-5 away: lora_A never moved."""
    preset = get_preset("tiny")
    dit = build_dit(preset, seed=0).to(torch.bfloat16)
    gen = torch.Generator().manual_seed(0)
    c, t, h, w = preset.latent_shape(9, 64, 64)
    latents = torch.randn(1, c, t, h, w, generator=gen).to(torch.bfloat16)
    context = torch.randn(1, preset.text_len, preset.text_dim, generator=gen).to(torch.bfloat16)
    dit = add_lora(dit, rank=4)
    adapters = lora_parameters(dit)
    assert {p.dtype for p in adapters} == {torch.float32}
    assert {p.dtype for n, p in dit.named_parameters() if "lora_" not in n} == {torch.bfloat16}
    start = {n: p.detach().clone() for n, p in dit.named_parameters() if "lora_A" in n}
    optimizer = torch.optim.AdamW(adapters, lr=1e-5, weight_decay=0.0)
    for _ in range(2):  # B leaves zero on the first step; A gets a gradient from the second
        output = dit_forward(dit, latents, 500.0, context).output
        assert output.dtype == torch.bfloat16
        output.float().square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    changed = sum(int((p != start[n]).sum()) for n, p in dit.named_parameters() if "lora_A" in n)
    total = sum(t.numel() for t in start.values())
    assert changed > 0.9 * total, f"only {changed} of {total} lora_A values took the update"
