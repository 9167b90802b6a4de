"""Build the diffsynth DiT / VAE / text encoder from a preset: seeded random or empty (meta).

``empty=True`` puts *parameters* on the ``meta`` device (no memory, no init cost) while plain
tensors the modules create in ``__init__`` stay real. That matters: ``WanModel.freqs`` (RoPE
tables) and ``WanVideoVAE38.mean/std`` are plain tensors, not parameters or buffers, so
``with torch.device("meta")`` would leave them without values after a checkpoint load. Loading then
uses ``load_state_dict(assign=True)`` so the checkpoint tensors become the parameters (no second copy).
"""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator

import torch
from torch import nn

from .presets import BackbonePreset, get_preset
from .tokenizer import HashTokenizer

log = logging.getLogger(__name__)


@contextlib.contextmanager
def params_on_meta() -> Iterator[None]:
    """Create every ``nn.Parameter`` registered inside the block on ``meta``; nothing else."""
    original = nn.Module.register_parameter

    def register(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        original(module, name, param)
        if param is not None:
            p = module._parameters[name]
            module._parameters[name] = nn.Parameter(p.to("meta"), requires_grad=p.requires_grad)

    nn.Module.register_parameter = register  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]


@contextlib.contextmanager
def _build_context(empty: bool, seed: int) -> Iterator[None]:
    if empty:
        with params_on_meta():
            yield
    else:
        # fork_rng: seeding the build must not disturb the caller's global RNG stream.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield


def _finish(model: nn.Module, empty: bool, device: torch.device | str | None,
            dtype: torch.dtype | None) -> nn.Module:
    if not empty and (device is not None or dtype is not None):
        model = model.to(device=device, dtype=dtype)
    return model.eval().requires_grad_(False)


def build_dit(preset: str | BackbonePreset, *, seed: int = 0, empty: bool = False,
              device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> nn.Module:
    """``WanModel`` for the preset (frozen, eval). Random weights from ``seed`` unless ``empty``."""
    from diffsynth.models.wan_video_dit import WanModel

    p = get_preset(preset)
    with _build_context(empty, seed):
        model = WanModel(**p.dit.wan_kwargs())
    return _finish(model, empty, device, dtype)


def build_vae(preset: str | BackbonePreset, *, seed: int = 0, empty: bool = False,
              device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> nn.Module:
    """``WanVideoVAE38`` for the preset; its inner ``VideoVAE38_`` gets the preset's widths.

    ``WanVideoVAE38`` exposes ``dim`` but not the decoder width, so the wrapper is built with
    parameters on meta and its ``.model`` replaced by a ``VideoVAE38_`` of the right size.
    """
    from diffsynth.models.wan_video_vae import VideoVAE38_, WanVideoVAE38

    p = get_preset(preset)
    with params_on_meta():
        vae = WanVideoVAE38(z_dim=p.vae.z_dim, dim=p.vae.dim)
    with _build_context(empty, seed):
        vae.model = VideoVAE38_(dim=p.vae.dim, z_dim=p.vae.z_dim, dec_dim=p.vae.dec_dim)
    if vae.upsampling_factor != p.vae.spatial_compression:
        raise RuntimeError("diffsynth VAE compression differs from the preset")
    return _finish(vae, empty, device, dtype)


def build_text_encoder(preset: str | BackbonePreset, *, seed: int = 0, empty: bool = False,
                       device: torch.device | str | None = None,
                       dtype: torch.dtype | None = None) -> nn.Module:
    """``WanTextEncoder`` (umt5 encoder) for the preset, dropout disabled."""
    from diffsynth.models.wan_video_text_encoder import WanTextEncoder

    p = get_preset(preset)
    with _build_context(empty, seed):
        model = WanTextEncoder(**p.text.wan_kwargs())
    return _finish(model, empty, device, dtype)


def build_stand_in_tokenizer(preset: str | BackbonePreset) -> HashTokenizer:
    """Deterministic offline tokenizer sized to the preset's vocab and sequence length."""
    p = get_preset(preset)
    return HashTokenizer(vocab_size=p.text.vocab, seq_len=p.text.seq_len)


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements (works on meta modules)."""
    return sum(t.numel() for t in module.parameters())
