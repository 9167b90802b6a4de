"""LoRA on the DiT through peft: which modules, which rank, and nothing else trainable.

Defaults follow upstream Wan LoRA practice: rank 32 on the attention projections (q, k, v, o of
self- and cross-attention) and both FFN linears.  peft matches a target when a module's name
equals it or ends with '.' + target, so 'q' hits 'blocks.3.self_attn.q' but not 'norm_q'.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from torch import nn

DEFAULT_LORA_TARGETS: tuple[str, ...] = ("q", "k", "v", "o", "ffn.0", "ffn.2")


def add_lora(dit: nn.Module, rank: int = 32, alpha: float | None = None,
             targets: Sequence[str] = DEFAULT_LORA_TARGETS, dropout: float = 0.0) -> nn.Module:
    """Inject LoRA adapters in place; afterwards only ``lora_`` parameters require grad.

    ``alpha`` defaults to ``rank`` (peft scaling alpha / rank = 1).  Base weights stay frozen and
    bitwise untouched: peft initialises B to zero, so the adapted model starts equal to the base.
    Adapters are fp32 whatever the base's dtype (mixed precision comes from autocast).
    """
    from peft import LoraConfig, inject_adapter_in_model

    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    config = LoraConfig(r=rank, lora_alpha=float(alpha if alpha is not None else rank),
                        target_modules=list(targets), lora_dropout=dropout, init_lora_weights=True)
    dit = inject_adapter_in_model(config, dit)
    for name, parameter in dit.named_parameters():
        parameter.requires_grad_("lora_" in name)
        if "lora_" in name:
            # peft's low-level injection gives adapters the base's dtype; a bf16 adapter loses AdamW
            # updates below bf16's resolution (lr 5e-5 on weights ~1e-2), so keep fp32 master
            # weights (peft casts the input to them and the sum back to the base's dtype).
            parameter.data = parameter.data.float()
    if not any(p.requires_grad for p in dit.parameters()):
        raise ValueError(f"no module matched LoRA targets {list(targets)}")
    return dit


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable LoRA parameters (what the optimizer gets)."""
    return [p for n, p in model.named_parameters() if "lora_" in n and p.requires_grad]


@contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[None]:
    """Run ``model`` as its frozen base inside this block (every LoRA layer bypassed), restoring
    each layer's previous state after.  Flips peft's per-layer ``_disable_adapters`` flag rather
    than calling ``enable_adapters``, which also rewrites ``requires_grad`` of the adapters (and
    so would change what the optimizer and DDP think trains)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    before = [layer._disable_adapters for layer in layers]
    for layer in layers:
        layer._disable_adapters = True
    try:
        yield
    finally:
        for layer, state in zip(layers, before):
            layer._disable_adapters = state
