"""FrozenBackbone: frozen weights get no gradient; the attention backend choice is explicit."""
import pytest
import torch
from torch import nn

from world_model.attention import current_attention_backend, set_attention_backend
from world_model.backbone import FrozenBackbone
from world_model.features import ExtractionConfig


@pytest.fixture(scope="module")
def backbone():
    return FrozenBackbone.random("tiny", seed=0)


def test_frozen_backbone_gets_no_gradient(backbone):
    head = nn.Conv3d(backbone.preset.hidden_dim, 2, 1)
    x0 = torch.randn(1, 48, 3, 8, 8)
    ctx = torch.randn(1, 16, 32)
    feats = backbone.extract(x0, ctx, ExtractionConfig(timestep=50.0))
    assert all(not g.requires_grad for g in feats.as_list())
    loss = sum(head(g).square().mean() for g in feats.as_list())
    loss.backward()
    assert all(p.grad is None for p in backbone.parameters())
    assert all(p.grad is not None for p in head.parameters())


def test_stage2_forward_grads_reach_input_not_weights(backbone):
    lat = torch.randn(1, 48, 3, 8, 8, requires_grad=True)
    out = backbone(lat, 600.0, torch.randn(1, 16, 32), taps=(1,), gradient_checkpointing=True)
    out.output.mean().backward()
    assert lat.grad is not None and lat.grad.abs().sum() > 0
    assert all(p.grad is None for p in backbone.parameters())


def test_stays_in_eval_mode(backbone):
    parent = nn.ModuleDict({"backbone": backbone, "head": nn.Linear(2, 2)})
    parent.train()
    assert parent["head"].training and not backbone.training and not backbone.dit.training
    assert not any(p.requires_grad for p in backbone.parameters())


def test_attention_backend_is_explicit():
    assert set_attention_backend("auto", training=True) == "sdpa"  # CPU image: no flash-attn
    assert current_attention_backend() == "sdpa"
    with pytest.raises(ValueError, match="inference-only"):
        set_attention_backend("sage", training=True)
    with pytest.raises(RuntimeError, match="not installed"):
        set_attention_backend("flash_attn_3", training=True)
    with pytest.raises(ValueError):
        set_attention_backend("bogus")  # type: ignore[arg-type]


def test_sdpa_kernel_choice_restricts_torch_and_keeps_the_features():
    """backbone.sdpa_kernel: 'math' switches torch's flash kernel off (so a speed comparison really
    compares kernels), the features agree with torch's own choice, and 'auto' switches all back."""
    import torch.backends.cuda as switches

    from stages.trainer.sections import BackboneConfig
    from world_model.attention import set_sdpa_kernel

    latents, context = torch.randn(1, 48, 3, 4, 4), torch.randn(1, 16, 32)
    cfg = ExtractionConfig(timestep=100.0)
    try:
        chosen = FrozenBackbone.random("tiny", seed=0).extract(latents, context, cfg).as_list()
        math = FrozenBackbone.random("tiny", seed=0, sdpa_kernel="math")
        assert math.sdpa_kernel == "math" and not switches.flash_sdp_enabled() and switches.math_sdp_enabled()
        for a, b in zip(chosen, math.extract(latents, context, cfg).as_list(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    finally:
        set_sdpa_kernel("auto")
    assert switches.flash_sdp_enabled() and switches.cudnn_sdp_enabled()
    with pytest.raises(ValueError, match="sdpa_kernel must be one of"):
        BackboneConfig(sdpa_kernel="fast")
