"""Export a peft-trained DiT LoRA to a file diffsynth's own loader reads at the right strength.

diffsynth 2.1.12 loads a LoRA for Wan through ``BasePipeline.load_lora`` (``WanVideoPipeline`` does
not override it), which uses ``diffsynth.utils.lora.GeneralLoRALoader``:

* Keys. For every key containing ``lora_B`` (or ``lora_up``), ``get_name_dict`` drops the
  ``lora_B`` part, one extra part after it if present (peft's ``.default``), a leading
  ``diffusion_model.`` and the trailing ``weight``; what remains must be a module name of the DiT,
  e.g. ``blocks.0.self_attn.q``. The partner key is the same string with ``lora_B`` → ``lora_A``.
  No other prefix is stripped (``pipe.dit.`` is *not*), and keys that parse to no module -- or do
  not parse at all -- are **silently ignored** (the loader only prints how many layers it fused).
* Fusion (non-hotload path, ``fuse_lora_to_base_model``): ``W += strength * B @ A`` with
  ``strength`` the ``alpha`` argument of ``load_lora`` (default 1). peft's ``lora_alpha / r`` is
  **not** applied.
* An ``<module>.alpha`` tensor in the file is "deprecated but retained for compatibility": the
  loader warns ("may be a LoRA model not trained by DiffSynth-Studio") and multiplies A by
  ``alpha / rank`` (rank = ``A.shape[0]``).

How scaling is carried: **folded into lora_B** (``B_file = scaling * B`` computed in float32, then
cast to the export dtype); no ``alpha`` tensor is written. Reasons: (1) it is the format
DiffSynth-Studio's own trainer writes (it trains with ``lora_alpha = rank``, i.e. scaling 1, and
saves bare ``lora_A/lora_B`` weights), so the file takes the loader's main path without the
deprecation warning; (2) the file is self-contained for every consumer that ignores ``alpha``
(``diffsynth.utils.lora.merge_lora``, diffsynth's ``lora_checkpoint`` resume path, hotloading via
``LoRAHotLoadMixin`` after conversion) -- all of them compute ``B @ A`` and nothing else;
(3) reading the scaling from each peft layer (``layer.scaling[adapter]``) also covers rsLoRA
(``alpha / sqrt(r)``) and per-module ``rank_pattern`` / ``alpha_pattern`` without special cases.
The folded factor is recorded in the metadata (``scaling_folded_into = "lora_B"``, ``rank``,
``alpha``, ``scaling``) so B can be unscaled again to resume peft training.

File format: safetensors, keys ``<module>.lora_A.weight`` (r, in) and ``<module>.lora_B.weight``
(out, r), module names exactly as in ``WanModel`` (no prefix), written atomically (temp file in
the same directory + ``os.replace``). The suffix must be ``.safetensors``: diffsynth's
``load_state_dict`` picks the reader by that suffix and would otherwise try ``torch.load``.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

FORMAT_NAME = "diffsynth-lora"
FORMAT_VERSION = "1"


class LoraFileError(ValueError):
    """A LoRA file does not fit the DiT it is loaded into (diffsynth would silently skip it)."""


def _unwrap(model: nn.Module) -> nn.Module:
    """Strip DDP/DataParallel (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def _lora_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    from peft.tuners.lora import LoraLayer

    return [(name, m) for name, m in model.named_modules() if isinstance(m, LoraLayer)]


def lora_state_dict(dit: nn.Module) -> dict[str, torch.Tensor]:
    """The peft-injected adapter weights, named as in ``dit.named_parameters()`` (detached).

    E.g. ``blocks.0.self_attn.q.lora_A.default.weight``. Raises if the model carries no LoRA.
    """
    state = {name: p.detach() for name, p in dit.named_parameters() if ".lora_" in name}
    if not state:
        raise ValueError("the model has no peft LoRA parameters (call world_model.lora.add_lora first)")
    return state


def _collect(dit: nn.Module, adapter_name: str) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor, float]],
                                                         dict[str, Any]]:
    """module name -> (A, B, scaling) for one adapter, plus summary facts for the metadata."""
    model = _unwrap(dit)
    layers = _lora_layers(model)
    if not layers:
        raise ValueError("the model has no peft LoRA layers (call world_model.lora.add_lora first)")
    out: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = {}
    ranks, alphas = set(), set()
    for name, layer in layers:
        if adapter_name not in layer.lora_A:
            if adapter_name in getattr(layer, "lora_embedding_A", {}):
                raise ValueError(f"{name}: LoRA on an embedding layer is not supported by this export")
            continue
        if getattr(layer, "use_dora", {}).get(adapter_name, False):
            raise ValueError(f"{name}: DoRA adapters cannot be expressed as W += B @ A; not exportable")
        if getattr(layer, "lora_bias", {}).get(adapter_name, False):
            raise ValueError(f"{name}: LoRA with lora_bias=True has a B bias diffsynth cannot load")
        a = layer.lora_A[adapter_name].weight.detach()
        b = layer.lora_B[adapter_name].weight.detach()
        if a.dim() != 2 or b.dim() != 2:
            raise ValueError(f"{name}: only Linear LoRA layers are exportable, got A {tuple(a.shape)}")
        if getattr(layer, "fan_in_fan_out", False):
            raise ValueError(f"{name}: fan_in_fan_out layers are not supported")
        out[name] = (a, b, float(layer.scaling[adapter_name]))
        ranks.add(int(layer.r[adapter_name]))
        alphas.add(float(layer.lora_alpha[adapter_name]))
    if not out:
        raise ValueError(f"no LoRA layer has an adapter named {adapter_name!r}")
    scalings = {s for _, _, s in out.values()}
    config = getattr(model, "peft_config", {}).get(adapter_name)
    targets = getattr(config, "target_modules", None)
    if targets is None:
        targets = sorted({n.rsplit(".", 1)[-1] for n in out})
    elif isinstance(targets, str):
        targets = [targets]
    facts = {
        "rank": json.dumps(next(iter(ranks)) if len(ranks) == 1 else sorted(ranks)),
        "alpha": json.dumps(next(iter(alphas)) if len(alphas) == 1 else sorted(alphas)),
        "scaling": json.dumps(next(iter(scalings)) if len(scalings) == 1 else sorted(scalings)),
        "use_rslora": json.dumps(bool(getattr(config, "use_rslora", False))),
        "targets": json.dumps(sorted(targets)),
    }
    return out, facts


def export_lora_for_diffsynth(dit: nn.Module, path: str | Path, dtype: torch.dtype = torch.bfloat16,
                              adapter_name: str = "default",
                              extra_metadata: Mapping[str, str] | None = None) -> Path:
    """Write the adapter of a peft-injected DiT as a diffsynth-loadable safetensors LoRA file.

    peft ``blocks.0.self_attn.q.lora_{A,B}.default.weight`` become
    ``blocks.0.self_attn.q.lora_{A,B}.weight``; each B is multiplied by that layer's peft scaling
    (``lora_alpha / r``, or ``/ sqrt(r)`` with rsLoRA) in float32 before the cast to ``dtype``, so
    ``pipe.load_lora(pipe.dit, path)`` (strength 1) reproduces the peft model. See the module
    docstring for why the scaling is folded rather than written as an ``alpha`` tensor.

    Metadata (all strings): format, format_version, rank, alpha, scaling, use_rslora, targets
    (JSON), scaling_folded_into="lora_B", dtype, adapter_name, num_modules, base_model.
    Returns the written path.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: use a .safetensors suffix (diffsynth picks its reader by suffix)")
    layers, facts = _collect(dit, adapter_name)
    tensors: dict[str, torch.Tensor] = {}
    for name, (a, b, scaling) in layers.items():
        tensors[f"{name}.lora_A.weight"] = a.float().to(dtype).cpu().contiguous().clone()
        tensors[f"{name}.lora_B.weight"] = (b.float() * scaling).to(dtype).cpu().contiguous().clone()
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        **facts,
        "scaling_folded_into": "lora_B",
        "dtype": str(dtype).removeprefix("torch."),
        "adapter_name": adapter_name,
        "num_modules": str(len(layers)),
        "base_model": type(_unwrap(dit)).__name__,
    }
    if extra_metadata:
        metadata.update({str(k): str(v) for k, v in extra_metadata.items()})

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_lora_metadata(path: str | Path) -> dict[str, str]:
    """The safetensors metadata of an exported LoRA file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        return dict(f.metadata() or {})


def check_lora_state_dict(dit: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Raise :class:`LoraFileError` unless every key will be used by diffsynth on this DiT.

    Keys are parsed with diffsynth's own ``GeneralLoRALoader.get_name_dict`` (the parser
    ``load_lora`` uses), so "matches a module" means exactly what it means to the loader. Checks:
    every key is a lora_B/lora_A/alpha key of some parsed pair; every pair names a module of
    ``dit`` that has its own ``weight`` parameter; the lora_A partner exists; ``B @ A`` has that
    weight's shape. Returns the sorted module names the file patches.
    """
    from diffsynth.utils.lora import GeneralLoRALoader

    model = _unwrap(dit)
    if _lora_layers(model):
        raise LoraFileError("the DiT is peft-injected; load the LoRA file into a plain DiT "
                            "(diffsynth fuses into module.weight, which a peft layer does not own)")
    name_dict = GeneralLoRALoader().get_name_dict(dict(state_dict))
    modules = dict(model.named_modules())
    used: set[str] = set()
    unknown, problems = [], []
    for target, (key_b, key_a, key_alpha) in name_dict.items():
        used.update(k for k in (key_b, key_a, key_alpha) if k is not None)
        module = modules.get(target) if target else None
        if module is None:
            unknown.append(f"{key_b} -> module '{target}'")
            continue
        weight = module._parameters.get("weight")
        if weight is None:
            problems.append(f"{key_b}: module '{target}' ({type(module).__name__}) has no weight parameter")
            continue
        if key_a not in state_dict:
            problems.append(f"{key_b}: partner key {key_a} missing")
            continue
        b, a = state_dict[key_b], state_dict[key_a]
        expected = tuple(weight.shape)
        if b.dim() != 2 or a.dim() != 2 or b.shape[1] != a.shape[0] or (b.shape[0], a.shape[1]) != expected[:2] \
                or len(expected) != 2:
            problems.append(f"{target}: B {tuple(b.shape)} @ A {tuple(a.shape)} does not fit weight {expected}")
    stray = sorted(set(state_dict) - used)
    if unknown or stray or problems:
        lines = []
        if unknown:
            lines.append(f"{len(unknown)} LoRA pair(s) match no module of {type(model).__name__}: "
                         + "; ".join(unknown[:8]) + (" ..." if len(unknown) > 8 else ""))
            if any(u.split("module '", 1)[1].startswith(("pipe.", "dit.", "model.", "module."))
                   for u in unknown):
                lines.append("hint: diffsynth strips only a leading 'diffusion_model.' prefix")
        if stray:
            lines.append(f"{len(stray)} key(s) diffsynth's loader would silently ignore: "
                         + ", ".join(stray[:8]) + (" ..." if len(stray) > 8 else ""))
        lines.extend(problems[:8])
        raise LoraFileError("LoRA file does not fit the DiT:\n  " + "\n  ".join(lines))
    return sorted(name_dict)


def load_lora_into_dit(dit: nn.Module, path: str | Path, strength: float = 1.0, *, pipe: Any = None,
                       torch_dtype: torch.dtype = torch.float32, check: bool = True) -> nn.Module:
    """Fuse a LoRA file into ``dit`` with diffsynth's own ``load_lora`` (what the pipeline uses).

    Thin wrapper: validates the file against the DiT first (:func:`check_lora_state_dict`, so a
    file for another model fails loudly instead of being silently skipped), then calls
    ``pipe.load_lora(dit, str(path), alpha=strength)``. Without ``pipe`` a bare
    ``WanVideoPipeline(device=<dit's device>, torch_dtype=torch_dtype)`` is made for the call; its
    ``torch_dtype`` is the dtype the file is read in and the fusion ``W + B @ A`` is computed in
    (float32 by default, then copied into the DiT's own dtype, one rounding). With a ``pipe``
    its device/dtype are used, exactly as in generation. Returns ``dit`` (modified in place).
    """
    path = Path(path)
    if check:
        from diffsynth.core import load_state_dict

        check_lora_state_dict(dit, load_state_dict(str(path), device="cpu"))
    if pipe is None:
        from diffsynth.pipelines.wan_video import WanVideoPipeline

        device = next(_unwrap(dit).parameters()).device
        pipe = WanVideoPipeline(device=str(device), torch_dtype=torch_dtype)
    pipe.load_lora(_unwrap(dit), str(path), alpha=strength)
    return dit
