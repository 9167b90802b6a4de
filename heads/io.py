"""Save / load the heads as safetensors + a JSON config, without the training code.

Layout of a head directory:
    heads.safetensors   tensors keyed `flow.<param>` and `depth.<param>`
    heads.json          {"format": 1, "flow": HeadConfig dict | null, "depth": HeadConfig dict | null}
Writes are atomic (temp file in the same directory, then os.replace), so a crash mid-save never
leaves a half-written checkpoint that would load. Loading is strict and names what does not match.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from heads.config import HeadConfig
from heads.depth import DepthHead
from heads.flow import MotionVectorHead

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "heads.safetensors"
CONFIG_NAME = "heads.json"
FORMAT_VERSION = 1
_KINDS = {"flow": MotionVectorHead, "depth": DepthHead}


class HeadLoadError(RuntimeError):
    """Raised when saved weights, saved config and expectations disagree."""


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Write via `write(tmp_path)` to a temp file next to `path`, then rename over it (atomic on POSIX)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_heads(directory: str | os.PathLike, flow_head: nn.Module | None, depth_head: nn.Module | None) -> Path:
    """Write both heads (either may be None) to `directory`; returns the directory path."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, object] = {"format": FORMAT_VERSION}
    for kind, head in (("flow", flow_head), ("depth", depth_head)):
        meta[kind] = head.cfg.to_dict() if head is not None else None
        if head is not None:
            for k, v in head.state_dict().items():
                tensors[f"{kind}.{k}"] = v.detach().to("cpu").contiguous()
    # Weights first, config last: a directory whose config is present has matching weights.
    atomic_write(out / WEIGHTS_NAME, lambda p: save_file(tensors, p, metadata={"format": str(FORMAT_VERSION)}))
    atomic_write(out / CONFIG_NAME, lambda p: Path(p).write_text(json.dumps(meta, indent=2, sort_keys=True)))
    logger.info("saved heads (%d tensors) to %s", len(tensors), out)
    return out


def _config_diff(saved: HeadConfig, expected: HeadConfig) -> list[str]:
    a, b = saved.to_dict(), expected.to_dict()
    return [f"{k}: saved {a[k]!r} != expected {b[k]!r}" for k in a if a[k] != b[k]]


def _load_state(head: nn.Module, kind: str, state: dict[str, torch.Tensor], where: Path) -> None:
    """Strict load with a message listing missing, unexpected and wrongly shaped tensors."""
    own = head.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]  # fmt: skip
    if missing or unexpected or shapes:
        raise HeadLoadError(
            f"{kind} head weights in {where} do not match its config: "
            f"missing={missing[:8]}{'...' if len(missing) > 8 else ''} "
            f"unexpected={unexpected[:8]}{'...' if len(unexpected) > 8 else ''} shape_mismatch={shapes[:8]}"
        )
    head.load_state_dict(state, strict=True)


def load_heads(
    directory: str | os.PathLike,
    device: str | torch.device = "cpu",
    expected: dict[str, HeadConfig] | None = None,
) -> tuple[MotionVectorHead | None, DepthHead | None]:
    """Rebuild (flow_head, depth_head) from `directory`; a head that was not saved comes back None.

    `expected` ({"flow": cfg, "depth": cfg}) makes loading fail with the list of differing fields
    when the saved config is not what the caller was built for.
    """
    src = Path(directory)
    cfg_path, w_path = src / CONFIG_NAME, src / WEIGHTS_NAME
    if not cfg_path.is_file() or not w_path.is_file():
        raise HeadLoadError(f"{src} is not a head directory (needs {CONFIG_NAME} and {WEIGHTS_NAME})")
    meta = json.loads(cfg_path.read_text())
    if meta.get("format") != FORMAT_VERSION:
        raise HeadLoadError(f"{cfg_path}: format {meta.get('format')!r}, this code reads {FORMAT_VERSION}")
    tensors = load_file(str(w_path), device=str(device))
    heads: dict[str, nn.Module | None] = {}
    for kind, cls in _KINDS.items():
        prefix = f"{kind}."
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if meta.get(kind) is None:
            if state:
                raise HeadLoadError(f"{w_path} holds {kind} weights but {cfg_path} has no {kind} config")
            heads[kind] = None
            continue
        try:
            cfg = HeadConfig.from_dict(meta[kind])
        except (TypeError, ValueError) as e:
            raise HeadLoadError(f"{cfg_path}: invalid {kind} config: {e}") from e
        if expected and kind in expected and (diff := _config_diff(cfg, expected[kind])):
            raise HeadLoadError(f"{kind} head config in {cfg_path} differs from the expected one: {diff}")
        head = cls(cfg).to(device)
        _load_state(head, kind, state, w_path)
        heads[kind] = head.eval()
    logger.info("loaded heads from %s", src)
    return heads["flow"], heads["depth"]  # type: ignore[return-value]
