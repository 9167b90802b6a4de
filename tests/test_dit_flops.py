"""The analytic DiT FLOP counts (world_model.flops) against torch's own FLOP counter, at the 5B
geometry on the meta device (no memory, no arithmetic): MFU figures divide by these counts, so a
count that is off makes every MFU in the benchmarks wrong by the same factor."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from world_model.features import dit_forward
from world_model.flops import dit_forward_flops, dit_train_step_flops
from world_model.lora import add_lora
from world_model.models import build_dit
from world_model.presets import get_preset

GEOMETRY = (9, 480, 480)  # 9 frames keep the count quick; the terms scale with tokens alike


def counted_lora_step(gradient_checkpointing: bool) -> tuple[float, float]:
    """(forward, backward) FLOPs torch counts for a rank-1 LoRA step of the 5B DiT on meta."""
    p = get_preset("ti2v_5b")
    dit = add_lora(build_dit(p, empty=True), 1, 1.0, ("q", "k", "v", "o", "ffn.0", "ffn.2"))
    for name, param in dit.named_parameters():
        param.requires_grad_("lora" in name)
    latents = torch.randn(1, *p.latent_shape(*GEOMETRY), device="meta")
    context = torch.randn(1, p.text_len, p.text_dim, device="meta")
    with FlopCounterMode(display=False) as forward:
        out = dit_forward(dit, latents, torch.tensor([500.0]), context, return_output=True,
                          gradient_checkpointing=gradient_checkpointing)
    with FlopCounterMode(display=False) as backward:
        out.output.float().square().mean().backward()
    return forward.get_total_flops(), backward.get_total_flops()


@pytest.mark.parametrize("checkpointing", [False, True])
def test_train_step_flops_match_torchs_count(checkpointing):
    counted_forward, counted_backward = counted_lora_step(checkpointing)
    step = dit_train_step_flops("ti2v_5b", *GEOMETRY, gradient_checkpointing=checkpointing)
    assert step["forward"] == dit_forward_flops("ti2v_5b", *GEOMETRY)
    # Within 2 %: the analytic count leaves out the rank-1 adapters, norms and time embeddings.
    assert step["forward"] == pytest.approx(counted_forward, rel=0.02)
    assert step["backward"] + step["recompute"] == pytest.approx(counted_backward, rel=0.02)
    assert (step["recompute"] > 0.9 * step["forward"]) == checkpointing
    assert step["total"] == step["forward"] + step["backward"] + step["recompute"]
