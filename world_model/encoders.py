"""VAE encoding of video windows and text encoding of prompts, with on-disk caches.

Both encoders are frozen and their outputs depend only on their inputs, so they are computed once
(:mod:`world_model.cache`) and the big modules can be dropped afterwards with :meth:`release` --
umt5-xxl alone is 5.7 B parameters that stage 1 never needs resident. Each encoder takes either a
module or a zero-argument factory; with a factory the module is only built on the first cache miss,
so a fully cached dataset never loads it at all.
"""
from __future__ import annotations

import gc
import logging
from typing import Callable, Sequence, Union

import torch
from torch import nn

from .cache import TensorCache, prompt_cache_key, video_cache_key
from .presets import BackbonePreset, get_preset
from .progress import diffsynth_progress

log = logging.getLogger(__name__)

ModuleOrFactory = Union[nn.Module, Callable[[], nn.Module]]


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class _LazyModule:
    def __init__(self, module: ModuleOrFactory, device: torch.device | str, dtype: torch.dtype) -> None:
        self._source: ModuleOrFactory | None = module
        self._module: nn.Module | None = module if isinstance(module, nn.Module) else None
        self.device = torch.device(device)
        self.dtype = dtype

    def get(self) -> nn.Module:
        if self._module is None:
            if self._source is None:
                raise RuntimeError("encoder was released and has no factory to rebuild it")
            self._module = self._source()  # type: ignore[operator]
        self._module = self._module.to(device=self.device, dtype=self.dtype).eval().requires_grad_(False)
        return self._module

    @property
    def loaded(self) -> bool:
        return self._module is not None

    def release(self) -> None:
        """Drop the module; a factory (if given) can rebuild it later, a bare module cannot."""
        self._module = None
        if isinstance(self._source, nn.Module):
            self._source = None
        _free(self.device)


class VideoLatentEncoder:
    """Video (B, 3, T, H, W) in [-1, 1] -> VAE latents (B, 48, T', H/16, W/16), fp32.

    Args:
        vae: ``WanVideoVAE38`` or a factory building it.
        model_id: identifies the weights (part of the cache key, e.g. "Wan2.2_VAE:<sha>").
        tiled / tile_size / tile_stride: diffsynth's spatially tiled encode (latent units) to bound
            memory at high resolution; part of the cache key because tiling changes values slightly.
    """

    def __init__(self, vae: ModuleOrFactory, model_id: str, preset: str | BackbonePreset = "ti2v_5b",
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 cache: TensorCache | None = None, tiled: bool = False,
                 tile_size: tuple[int, int] = (34, 34), tile_stride: tuple[int, int] = (18, 16)) -> None:
        self.preset = get_preset(preset)
        self._vae = _LazyModule(vae, device, dtype)
        self.model_id = model_id
        self.cache = cache
        self.tiled, self.tile_size, self.tile_stride = tiled, tuple(tile_size), tuple(tile_stride)

    def _settings(self) -> dict:
        return {"tiled": self.tiled, "tile_size": self.tile_size, "tile_stride": self.tile_stride,
                "dtype": str(self._vae.dtype)}

    @torch.no_grad()
    def _encode_one(self, video: torch.Tensor) -> torch.Tensor:
        vae = self._vae.get()
        with diffsynth_progress("VAE"):  # tiled, diffsynth would draw a bar of its own per video
            z = vae.encode(video.unsqueeze(0).to(self._vae.dtype), device=self._vae.device, tiled=self.tiled,
                           tile_size=self.tile_size, tile_stride=self.tile_stride)
        return z[0].float().cpu()

    def encode(self, video: torch.Tensor, resize: tuple[int, int] | None = None, store: bool = True) -> torch.Tensor:
        """Latents for each sample; cached per sample by (frame bytes, resize, model id, settings).
        ``store`` False still reads the cache but writes nothing: for videos never seen twice
        (augmented training windows), whose entries would only fill the disk."""
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"expected video (B, 3, T, H, W), got {tuple(video.shape)}")
        self.preset.check_video_size(*video.shape[2:])
        if video.min() < -1.0001 or video.max() > 1.0001:
            raise ValueError("video values must lie in [-1, 1]")
        out = []
        for sample in video:
            key = video_cache_key(sample, resize, self.model_id, **self._settings())
            hit = self.cache.get(key) if self.cache is not None else None
            if hit is not None:
                out.append(hit["latents"])
                continue
            z = self._encode_one(sample)
            if self.cache is not None and store:
                self.cache.put(key, {"latents": z}, {"model_id": self.model_id, "shape": list(sample.shape)})
            out.append(z)
        return torch.stack(out)

    def release(self) -> None:
        """Free the VAE (cached latents stay usable)."""
        self._vae.release()
        log.info("released VAE %s", self.model_id)


class PromptEncoder:
    """Prompts -> text context (B, seq_len, text_dim), fp32, padded positions zeroed.

    Mirrors ``WanVideoUnit_PromptEmbedder``: tokenize with ``return_mask=True,
    add_special_tokens=True``, run the encoder with the mask, zero everything past each prompt's
    length. Each prompt is cached on its own (text + encoder id).
    """

    def __init__(self, text_encoder: ModuleOrFactory, tokenizer: Callable, encoder_id: str,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 cache: TensorCache | None = None) -> None:
        self._encoder = _LazyModule(text_encoder, device, dtype)
        self.tokenizer = tokenizer
        self.encoder_id = encoder_id
        self.cache = cache

    @torch.no_grad()
    def _encode_one(self, prompt: str) -> torch.Tensor:
        encoder = self._encoder.get()
        ids, mask = self.tokenizer(prompt, return_mask=True, add_special_tokens=True)
        ids, mask = ids.to(self._encoder.device), mask.to(self._encoder.device)
        emb = encoder(ids, mask)[0].float()
        emb[int(mask[0].gt(0).sum()):] = 0
        return emb.cpu()

    def encode(self, prompts: Sequence[str] | str) -> torch.Tensor:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        out = []
        for prompt in prompts:
            key = prompt_cache_key(prompt, self.encoder_id)
            hit = self.cache.get(key) if self.cache is not None else None
            if hit is not None:
                out.append(hit["context"])
                continue
            emb = self._encode_one(prompt)
            if self.cache is not None:
                self.cache.put(key, {"context": emb}, {"encoder_id": self.encoder_id, "prompt": prompt})
            out.append(emb)
        return torch.stack(out)

    def release(self) -> None:
        """Free the text encoder (cached contexts stay usable)."""
        self._encoder.release()
        log.info("released text encoder %s", self.encoder_id)
