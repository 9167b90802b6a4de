"""Exponential moving average of a module's trainable parameters, kept in fp32.

The shadow is fp32 even when training in bf16: with decay 0.999 each update moves the shadow by
0.1 % of the difference, which bf16's 8-bit mantissa would round away. Only parameters that
require grad at construction are tracked (the frozen 5B backbone is never copied); buffers (e.g.
norm statistics) are copied verbatim, not averaged, so swapping the EMA in gives a consistent model.

Pass the *unwrapped* module (`accelerator.unwrap_model(model)`), so names carry no `module.` prefix.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
from torch import nn

logger = logging.getLogger(__name__)

_STEP_KEY = "__ema_num_updates__"
_PARAM, _BUFFER = "param.", "buffer."


class EMA:
    """fp32 EMA: after each `update`, shadow = decay * shadow + (1 - decay) * param."""

    def __init__(self, model: nn.Module, decay: float = 0.999, update_every: int = 1, include_buffers: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        if update_every < 1:
            raise ValueError(f"update_every must be >= 1, got {update_every}")
        self.decay, self.update_every = decay, update_every
        self.num_updates = 0
        """Number of `update` calls so far (the shadow changes on every `update_every`-th)."""
        self.params = {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}
        self.buffers = {n: b.detach().clone() for n, b in model.named_buffers()} if include_buffers else {}
        if not self.params:
            raise ValueError("EMA: the model has no parameters that require grad")
        logger.info("EMA over %d tensors (%d values), decay %g", len(self.params), sum(p.numel() for p in self.params.values()), decay)

    @torch.no_grad()
    def update(self, model: nn.Module) -> bool:
        """Call once per optimizer step; returns True when the shadow was updated this call."""
        self.num_updates += 1
        if self.num_updates % self.update_every:
            return False
        live = dict(model.named_parameters())
        sources = [live[name].detach().to(shadow.device, torch.float32) for name, shadow in self.params.items()]
        # One multi-tensor kernel on CUDA instead of one launch per tensor (same arithmetic).
        torch._foreach_lerp_(list(self.params.values()), sources, 1.0 - self.decay)
        live_buffers = dict(model.named_buffers())
        for name, shadow in self.buffers.items():
            shadow.copy_(live_buffers[name])
        return True

    @torch.no_grad()
    def restart_from(self, model: nn.Module) -> None:
        """Restart the average at the model's current weights (after loading weights into it)."""
        live, live_buffers = dict(model.named_parameters()), dict(model.named_buffers())
        for name, shadow in self.params.items():
            shadow.copy_(live[name].detach().float())
        for name, shadow in self.buffers.items():
            shadow.copy_(live_buffers[name])
        self.num_updates = 0

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's tracked parameters (cast to their dtype) and buffers with the EMA."""
        live, live_buffers = dict(model.named_parameters()), dict(model.named_buffers())
        missing = [n for n in self.params if n not in live] + [n for n in self.buffers if n not in live_buffers]
        if missing:
            raise KeyError(f"EMA: model lacks tracked tensors {missing[:5]} (pass the unwrapped module)")
        for name, shadow in self.params.items():
            live[name].copy_(shadow)
        for name, shadow in self.buffers.items():
            live_buffers[name].copy_(shadow)

    @contextlib.contextmanager
    def swap_in(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily load the EMA weights (e.g. for validation); the training weights come back after."""
        live, live_buffers = dict(model.named_parameters()), dict(model.named_buffers())
        backup = {n: live[n].detach().clone() for n in self.params}
        backup_buffers = {n: live_buffers[n].detach().clone() for n in self.buffers}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, value in backup.items():
                    live[name].copy_(value)
                for name, value in backup_buffers.items():
                    live_buffers[name].copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat name -> tensor dict (safetensors-ready): `param.<n>`, `buffer.<n>` and the update count."""
        state = {_PARAM + n: t for n, t in self.params.items()}
        state.update({_BUFFER + n: t for n, t in self.buffers.items()})
        state[_STEP_KEY] = torch.tensor(self.num_updates, dtype=torch.int64)
        return state

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Strict load: the saved names must equal the tracked names, or nothing is loaded."""
        expected = set(self.state_dict())
        got = set(state)
        if expected != got:
            raise KeyError(
                f"EMA state mismatch: missing {sorted(expected - got)[:5]}, unexpected {sorted(got - expected)[:5]}"
            )
        for name, shadow in self.params.items():
            shadow.copy_(state[_PARAM + name])
        for name, shadow in self.buffers.items():
            shadow.copy_(state[_BUFFER + name])
        self.num_updates = int(state[_STEP_KEY])
