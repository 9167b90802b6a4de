"""Load the frozen backbone from a LOCAL directory in the official Wan2.2-TI2V-5B layout.

    <root>/diffusion_pytorch_model-0000X-of-0000N.safetensors  (+ diffusion_pytorch_model.safetensors.index.json)
    <root>/Wan2.2_VAE.pth                                        (or Wan2.2_VAE.safetensors)
    <root>/models_t5_umt5-xxl-enc-bf16.pth                       (or .safetensors)
    <root>/google/umt5-xxl/                                      tokenizer files

Nothing is downloaded. ``.pth`` files are read only with ``torch.load(weights_only=True)`` (no
pickle code execution). Models are built with parameters on ``meta`` and the checkpoint tensors are
*assigned* (``load_state_dict(assign=True)``), so a 5 B model never exists twice in memory. Key
names go through diffsynth's own converters (VAE: ``model.`` prefix; DiT: diffusers -> diffsynth
names when needed). Every key and shape is checked first; any problem raises a
:class:`WeightsError` naming the file and what was expected, instead of a silent partial load.
"""
from __future__ import annotations

import json
import logging
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .models import build_dit, build_text_encoder, build_vae
from .presets import BackbonePreset, get_preset

log = logging.getLogger(__name__)

DIT_INDEX = "diffusion_pytorch_model.safetensors.index.json"
DIT_SINGLE = "diffusion_pytorch_model.safetensors"
DIT_SHARD_RE = re.compile(r"^diffusion_pytorch_model-(\d+)-of-(\d+)\.safetensors$")
VAE_FILES = ("Wan2.2_VAE.safetensors", "Wan2.2_VAE.pth")
TEXT_ENCODER_FILES = ("models_t5_umt5-xxl-enc-bf16.safetensors", "models_t5_umt5-xxl-enc-bf16.pth")
TOKENIZER_DIR = "google/umt5-xxl"
_MAX_LISTED = 8


class WeightsError(RuntimeError):
    """Base class: a weights directory cannot provide what a model needs."""


class MissingWeightsError(WeightsError, FileNotFoundError):
    """A required file is absent."""


class WeightsMismatchError(WeightsError):
    """A file exists but its keys/shapes do not fit the model."""


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f", ... ({len(items)} in all)" if len(items) > _MAX_LISTED else "")


# ----------------------------------------------------------------------------- file discovery
def find_dit_files(root: str | Path) -> list[Path]:
    """DiT shard paths, via the index json if present, else by the ``-XXXXX-of-NNNNN`` pattern."""
    root = Path(root)
    index = root / DIT_INDEX
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        names = sorted(set(weight_map.values()))
        missing = [n for n in names if not (root / n).is_file()]
        if missing:
            raise MissingWeightsError(f"{index} lists DiT shards that are missing: {_listing(missing)}")
        return [root / n for n in names]
    shards = sorted(p for p in root.glob("diffusion_pytorch_model-*-of-*.safetensors")
                    if DIT_SHARD_RE.match(p.name))
    if shards:
        total = int(DIT_SHARD_RE.match(shards[0].name).group(2))  # type: ignore[union-attr]
        expected = [f"diffusion_pytorch_model-{i:05d}-of-{total:05d}.safetensors" for i in range(1, total + 1)]
        missing = [n for n in expected if not (root / n).is_file()]
        if missing:
            raise MissingWeightsError(f"DiT shards missing in {root}: {_listing(missing)} "
                                      f"(expected {_listing(expected)})")
        return [root / n for n in expected]
    if (root / DIT_SINGLE).is_file():
        return [root / DIT_SINGLE]
    raise MissingWeightsError(
        f"no DiT weights in {root}: expected {DIT_INDEX} with its shards, "
        f"diffusion_pytorch_model-0000X-of-0000N.safetensors, or {DIT_SINGLE}")


def find_one(root: str | Path, candidates: tuple[str, ...], what: str) -> Path:
    """First existing file among ``candidates`` (safetensors preferred)."""
    root = Path(root)
    for name in candidates:
        if (root / name).is_file():
            return root / name
    raise MissingWeightsError(f"no {what} weights in {root}: expected one of {', '.join(candidates)}")


def find_tokenizer_dir(root: str | Path) -> Path:
    path = Path(root) / TOKENIZER_DIR
    if not path.is_dir():
        raise MissingWeightsError(f"tokenizer folder {path} missing: expected {TOKENIZER_DIR}/ "
                                  "(tokenizer.json or spiece.model + tokenizer_config.json)")
    return path


# ----------------------------------------------------------------------------- reading / checking
def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or ``.pth`` file (the latter only with ``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    if path.suffix not in (".pth", ".pt", ".bin"):
        raise WeightsError(f"{path}: unsupported weights format (use .safetensors or .pth)")
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise WeightsError(f"{path}: refused to unpickle non-tensor objects (weights_only=True): "
                           f"{str(err).splitlines()[0]}") from err
    if isinstance(obj, dict) and len(obj) == 1:
        (key, inner), = obj.items()
        if key in ("model_state", "state_dict", "module") and isinstance(inner, dict):
            obj = inner
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsMismatchError(f"{path}: expected a flat dict of tensors")
    return obj


def check_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Raise :class:`WeightsMismatchError` unless keys and shapes match ``model`` exactly."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = [f"{k}: file {tuple(state_dict[k].shape)} vs model {expected[k]}"
             for k in sorted(set(expected) & set(state_dict)) if tuple(state_dict[k].shape) != expected[k]]
    if missing or unexpected or wrong:
        parts = [f"{source} does not match {type(model).__name__} ({len(expected)} tensors expected)"]
        if missing:
            parts.append(f"missing keys: {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_listing(unexpected)}")
        if wrong:
            parts.append(f"shape mismatches: {_listing(wrong)}")
        raise WeightsMismatchError("; ".join(parts))


def assign_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str,
                      device: torch.device | str, dtype: torch.dtype) -> nn.Module:
    """Check, cast and assign ``state_dict`` into a (meta-parameter) model; frozen, eval."""
    check_state_dict(model, state_dict, source)
    sd = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype)
          for k, v in state_dict.items()}
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval().requires_grad_(False)


# ----------------------------------------------------------------------------- converters
def convert_dit_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official Wan keys already match diffsynth; diffusers-format checkpoints are renamed."""
    from diffsynth.utils.state_dict_converters.wan_video_dit import (
        WanVideoDiTFromDiffusers, WanVideoDiTStateDictConverter)

    if any(k.startswith("condition_embedder.") for k in state_dict):
        return WanVideoDiTFromDiffusers(state_dict)
    return WanVideoDiTStateDictConverter(state_dict)


def convert_vae_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official ``Wan2.2_VAE.pth`` keys lack diffsynth's ``model.`` prefix."""
    from diffsynth.utils.state_dict_converters.wan_video_vae import WanVideoVAEStateDictConverter

    if all(k.startswith("model.") for k in state_dict):
        return state_dict
    return WanVideoVAEStateDictConverter(state_dict)


# ----------------------------------------------------------------------------- public loaders
@dataclass(frozen=True)
class WeightsLayout:
    """Resolved paths of every backbone component inside a weights directory."""

    root: Path
    dit_files: tuple[Path, ...]
    vae_file: Path
    text_encoder_file: Path
    tokenizer_dir: Path

    @classmethod
    def resolve(cls, root: str | Path) -> "WeightsLayout":
        root = Path(root)
        if not root.is_dir():
            raise MissingWeightsError(f"weights directory {root} does not exist")
        return cls(root, tuple(find_dit_files(root)), find_one(root, VAE_FILES, "VAE"),
                   find_one(root, TEXT_ENCODER_FILES, "text encoder"), find_tokenizer_dir(root))


def _load(builder: Callable[..., nn.Module], preset: BackbonePreset, files: list[Path],
          convert: Callable[[dict], dict], device: torch.device | str, dtype: torch.dtype) -> nn.Module:
    model = builder(preset, empty=True)
    state_dict: dict[str, torch.Tensor] = {}
    for f in files:
        log.info("reading %s", f)
        state_dict.update(read_state_dict(f))
    source = files[0].name if len(files) == 1 else f"{files[0].parent}/{{{', '.join(f.name for f in files)}}}"
    return assign_state_dict(model, convert(state_dict), source, device, dtype)


def load_dit(root: str | Path, preset: str | BackbonePreset = "ti2v_5b", *,
             device: torch.device | str = "cpu", dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """The DiT (``WanModel``) from the (sharded) safetensors in ``root``."""
    return _load(build_dit, get_preset(preset), find_dit_files(root), convert_dit_keys, device, dtype)


def load_vae(root: str | Path, preset: str | BackbonePreset = "ti2v_5b", *,
             device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> nn.Module:
    """``WanVideoVAE38`` from ``Wan2.2_VAE.{safetensors,pth}``."""
    return _load(build_vae, get_preset(preset), [find_one(root, VAE_FILES, "VAE")],
                 convert_vae_keys, device, dtype)


def load_text_encoder(root: str | Path, preset: str | BackbonePreset = "ti2v_5b", *,
                      device: torch.device | str = "cpu", dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """``WanTextEncoder`` from ``models_t5_umt5-xxl-enc-bf16.{safetensors,pth}`` (keys match)."""
    return _load(build_text_encoder, get_preset(preset),
                 [find_one(root, TEXT_ENCODER_FILES, "text encoder")], lambda sd: sd, device, dtype)


def load_tokenizer(root: str | Path, preset: str | BackbonePreset = "ti2v_5b"):
    """The umt5 tokenizer from ``<root>/google/umt5-xxl`` (local files only)."""
    from .tokenizer import load_umt5_tokenizer

    return load_umt5_tokenizer(find_tokenizer_dir(root), seq_len=get_preset(preset).text_len)
