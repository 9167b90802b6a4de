"""``FrozenBackbone``: the DiT as a frozen feature extractor for stage 1 (and LoRA host in stage 2).

Frozen means: every parameter has ``requires_grad=False``, the module stays in eval mode even when
a parent calls ``.train()``, and stage-1 extraction runs under ``torch.no_grad``. On CUDA the DiT
runs under bf16 autocast (the precision it was trained in); on CPU everything stays fp32 so tests
are exact. The attention kernel is chosen explicitly (see :mod:`world_model.attention`).
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from .attention import Backend, SdpaKernel, set_attention_backend, set_sdpa_kernel
from .features import DiTFeatures, ExtractionConfig, dit_forward, extract_features
from .models import build_dit, count_parameters
from .presets import BackbonePreset, get_preset

log = logging.getLogger(__name__)


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA, nothing (fp32) elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class FrozenBackbone(nn.Module):
    """Wraps a diffsynth ``WanModel`` and exposes tapped block outputs.

    Args:
        dit: the DiT (random or loaded).
        preset: its geometry (taps default, shapes).
        attention_backend: kernel to force (``auto`` never picks SageAttention when ``training``).
        sdpa_kernel: torch SDPA kernel to restrict the ``sdpa`` backend to (``auto``: torch chooses).
        training: whether gradients will flow through the DiT (stage 2); only affects the
            attention-backend choice -- the DiT's own weights are frozen either way.
    """

    def __init__(self, dit: nn.Module, preset: str | BackbonePreset,
                 attention_backend: Backend = "auto", training: bool = False, sdpa_kernel: SdpaKernel = "auto") -> None:
        super().__init__()
        self.preset = get_preset(preset)
        self.dit = dit
        self.dit.requires_grad_(False)
        super().train(False)
        self.attention_backend = set_attention_backend(attention_backend, training=training)
        self.sdpa_kernel = set_sdpa_kernel(sdpa_kernel)
        log.info("frozen backbone %s: %.3fB parameters, taps %s", self.preset.name,
                 count_parameters(dit) / 1e9, self.preset.default_taps)

    # ------------------------------------------------------------------ construction
    @classmethod
    def random(cls, preset: str | BackbonePreset = "tiny", seed: int = 0,
               device: torch.device | str = "cpu", **kwargs) -> "FrozenBackbone":
        """Seeded random weights (tests, CPU runs without weights)."""
        return cls(build_dit(preset, seed=seed, device=device), preset, **kwargs)

    @classmethod
    def from_pretrained(cls, root: str | Path, preset: str | BackbonePreset = "ti2v_5b",
                        device: torch.device | str = "cpu", dtype: torch.dtype = torch.bfloat16,
                        **kwargs) -> "FrozenBackbone":
        """Weights from a local Wan2.2-TI2V-5B directory (see :mod:`world_model.loading`)."""
        from .loading import load_dit

        return cls(load_dit(root, preset, device=device, dtype=dtype), preset, **kwargs)

    # ------------------------------------------------------------------ frozen behaviour
    def train(self, mode: bool = True) -> "FrozenBackbone":
        """Stay in eval mode: a parent's ``.train()`` must not flip the frozen backbone."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return next(self.dit.parameters()).device

    def taps(self, taps: Sequence[int] | None = None) -> tuple[int, ...]:
        return self.preset.taps(None if taps is None else tuple(taps))

    # ------------------------------------------------------------------ forward paths
    @torch.no_grad()
    def extract(self, x0: torch.Tensor, context: torch.Tensor,
                cfg: ExtractionConfig = ExtractionConfig()) -> DiTFeatures:
        """Stage 1: deterministic tapped features of clean latents x0 (B, C, T', H', W').

        Runs without autograd; returned grids are (B, dim, F', H', W') in the compute dtype
        (bf16 on CUDA, fp32 on CPU).
        """
        x0 = x0.to(self.device)
        context = context.to(self.device)
        with autocast_for(self.device):
            return extract_features(self.dit, x0, context, cfg, self.taps(cfg.taps))

    def forward(self, latents: torch.Tensor, timestep: float | torch.Tensor, context: torch.Tensor,
                taps: Sequence[int] | None = None, return_output: bool = True,
                gradient_checkpointing: bool = False) -> DiTFeatures:
        """Stage 2: differentiable forward on already-noised latents (first frame clean).

        Gradients flow to inputs and to any trainable adapter (LoRA) inside the DiT, never to
        the frozen base weights.
        """
        with autocast_for(self.device):
            return dit_forward(self.dit, latents, timestep, context, taps=self.taps(taps),
                               return_output=return_output,
                               gradient_checkpointing=gradient_checkpointing)
