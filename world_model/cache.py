"""On-disk tensor cache: safetensors files keyed by sha256 of whatever determines their content.

VAE latents and text contexts of a frozen backbone are pure functions of (input bytes, resize,
model id), so they are computed once and reused by every later run. Writes are atomic (temporary
file in the same folder, then ``os.replace``) so a crash or a concurrent writer never leaves a torn
file that a later run would read.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)


def sha256_key(*parts: Any) -> str:
    """sha256 over an ordered list of parts: tensors (shape, dtype and bytes), bytes, or JSON-able values."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            t = part.detach().to("cpu").contiguous()
            h.update(f"tensor:{tuple(t.shape)}:{t.dtype}:".encode())
            # view as bytes: works for every dtype incl. bf16 (numpy has no bf16)
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(part, (bytes, bytearray)):
            h.update(b"bytes:" + bytes(part))
        else:
            h.update(b"json:" + json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"|")
    return h.hexdigest()


def video_cache_key(frames: torch.Tensor, resize: tuple[int, int] | None, model_id: str,
                    **settings: Any) -> str:
    """Key of a video window's latents: frame bytes + resize + VAE id (+ e.g. tiling settings)."""
    return sha256_key("video-latents-v1", frames, list(resize) if resize else None, model_id, settings)


def prompt_cache_key(prompt: str, encoder_id: str) -> str:
    """Key of a prompt's text context: prompt text + text-encoder/tokenizer id."""
    return sha256_key("text-context-v1", prompt, encoder_id)


class TensorCache:
    """A folder of ``<key[:2]>/<key>.safetensors`` files."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def __contains__(self, key: str) -> bool:
        return self.path(key).is_file()

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        """Tensors stored under ``key``, or None (a corrupt file counts as a miss and is removed)."""
        path = self.path(key)
        if not path.is_file():
            self.misses += 1
            return None
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError) as err:
            log.warning("dropping unreadable cache file %s: %s", path, err)
            path.unlink(missing_ok=True)
            self.misses += 1
            return None
        self.hits += 1
        return tensors

    def put(self, key: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
        """Store tensors atomically; returns the final path."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:8]}-", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, tmp,
                      metadata={k: str(v) for k, v in (metadata or {}).items()})
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def size_bytes(self) -> int:
        """Total bytes of cached files (for disk-budget reporting)."""
        return sum(p.stat().st_size for p in self.root.glob("*/*.safetensors"))
