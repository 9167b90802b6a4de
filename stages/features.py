"""From a data window to tapped backbone grids: VAE latents, text context, frozen DiT features.

Latents and text contexts go through on-disk caches (world_model.cache) keyed by what determines
them, so they are computed once per window/prompt across runs and stages.  Per-phase wall time
is accumulated in ``timer`` for the stage-1 benchmark's step breakdown.
"""

from __future__ import annotations

from pathlib import Path

import torch

from stages.common.timing import PhaseTimer
from stages.sections import BackboneConfig
from world_model.backbone import FrozenBackbone
from world_model.cache import TensorCache
from world_model.encoders import PromptEncoder, VideoLatentEncoder
from world_model.features import ExtractionConfig
from world_model.presets import BackbonePreset, get_preset


def compute_dtype(config: BackboneConfig, device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" and config.dtype == "bf16" else torch.float32


def backbone_id(config: BackboneConfig) -> str:
    """Identity of the weights, part of every cache key (random tiny weights are identified by seed)."""
    if not config.model_dir:
        return f"{config.preset}:random:{config.seed}"
    return f"{config.preset}:{Path(config.model_dir).resolve()}"


class FeatureSource:
    """Builds the frozen backbone and its encoders for a config; turns windows into tapped grids."""

    def __init__(self, config: BackboneConfig, device: torch.device, cache_dir: str | Path) -> None:
        self.config, self.device = config, device
        self.preset: BackbonePreset = get_preset(config.preset)
        self.dtype = compute_dtype(config, device)
        self.id = backbone_id(config)
        self.extraction = ExtractionConfig(timestep=config.timestep, noise_seed=config.noise_seed,
                                           taps=tuple(config.taps) or None)
        self.taps = self.preset.taps(tuple(config.taps) or None)
        self.backbone = self._build_backbone()
        cache = Path(cache_dir)
        self.video_encoder = VideoLatentEncoder(self._vae_factory(), f"{self.id}:vae", self.preset, device=device,
                                                dtype=self.dtype, cache=TensorCache(cache / "latents"),
                                                tiled=config.vae_tiled)
        encoder, tokenizer = self._text_parts()
        self.prompt_encoder = PromptEncoder(encoder, tokenizer, f"{self.id}:text", device=device,
                                            dtype=self.dtype, cache=TensorCache(cache / "text"))
        self.timer = PhaseTimer(device, enabled=False)  # benchmarks turn it on (it syncs the GPU)

    def _build_backbone(self) -> FrozenBackbone:
        c = self.config
        if c.model_dir:
            return FrozenBackbone.from_pretrained(c.model_dir, self.preset, device=self.device, dtype=self.dtype,
                                                  attention_backend=c.attention)
        backbone = FrozenBackbone.random(self.preset, seed=c.seed, attention_backend=c.attention)
        return backbone.to(self.device, self.dtype)

    def _vae_factory(self):
        from world_model.loading import load_vae
        from world_model.models import build_vae

        c = self.config
        if c.model_dir:
            return lambda: load_vae(c.model_dir, self.preset, device=self.device, dtype=self.dtype)
        return lambda: build_vae(self.preset, seed=c.seed, device=self.device, dtype=self.dtype)

    def _text_parts(self):
        from world_model.loading import load_text_encoder, load_tokenizer
        from world_model.models import build_stand_in_tokenizer, build_text_encoder

        c = self.config
        if c.model_dir:
            encoder = lambda: load_text_encoder(c.model_dir, self.preset, device=self.device, dtype=self.dtype)  # noqa: E731
            return encoder, load_tokenizer(c.model_dir, self.preset)
        encoder = lambda: build_text_encoder(self.preset, seed=c.seed, device=self.device, dtype=self.dtype)  # noqa: E731
        return encoder, build_stand_in_tokenizer(self.preset)

    def encode(self, rgb: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """rgb (B, T, 3, H, W) in [0, 1] -> latents (B, C, T', h, w) and context (B, L, D) on device."""
        with self.timer.phase("encode"):
            video = rgb.permute(0, 2, 1, 3, 4) * 2.0 - 1.0
            latents = self.video_encoder.encode(video.clamp(-1.0, 1.0))
            context = self.prompt_encoder.encode(prompts)
        return latents.to(self.device, self.dtype), context.to(self.device, self.dtype)

    def extract(self, rgb: torch.Tensor, prompts: list[str]) -> list[torch.Tensor]:
        """Tapped grids, num_taps x (B, dim, F', H', W'), for a batch of windows."""
        latents, context = self.encode(rgb, prompts)
        with self.timer.phase("backbone"):
            return self.backbone.extract(latents, context, self.extraction).as_list()

    def release_encoders(self) -> None:
        """Drop VAE and text encoder (their caches stay usable)."""
        self.video_encoder.release()
        self.prompt_encoder.release()
