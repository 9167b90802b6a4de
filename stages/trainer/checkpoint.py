"""Atomic, pickle-free checkpoint folders `checkpoint-<step>/` with keep-last pruning.

Layout of one checkpoint (a folder per step):
    <group>.safetensors   one file per tensor group (e.g. heads, lora, ema)
    state.pt              optimizer/scheduler/sampler/guard state (tensors + primitives only)
    rng.pt                RNG states (see stages.trainer.rng), tensors + primitives only
    meta.json             step, epoch, data position, ... (JSON)
    config.toml           the resolved run config, when given
    MANIFEST.json         size and sha256 of every file above (see stages.trainer.checkpoint_verify)
    COMPLETE              written last; a folder without it is never loaded

Everything is written into `checkpoint-<step>.tmp-<pid>/`, fsynced, and renamed into place with
`os.replace`, so a run killed mid-save leaves only a tmp folder that `latest_checkpoint` ignores.
Loads use `safetensors` and `torch.load(weights_only=True)`: no arbitrary code runs on load.
Loads and automatic resume verify the manifest: resume=latest skips a damaged checkpoint (moving it
aside to `checkpoint-<step>.damaged`) for the newest intact one; a write error (a full disk) removes
the tmp folder and raises `CheckpointError`, leaving the earlier checkpoints as they were.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from stages.trainer.checkpoint_verify import MANIFEST, CheckpointError, verify_checkpoint, write_manifest
from stages.trainer.config_text import save_config
from stages.trainer.rng import capture_rng, capture_rng_all_ranks, restore_rng, rng_for_rank

logger = logging.getLogger(__name__)

__all__ = [
    "Checkpoint", "CheckpointError", "capture_rng", "capture_rng_all_ranks", "latest_checkpoint",
    "latest_intact_checkpoint", "list_checkpoints", "load_checkpoint", "prune_checkpoints", "resolve_resume",
    "restore_rng", "rng_for_rank", "save_checkpoint", "verify_checkpoint",
]

PREFIX = "checkpoint-"
COMPLETE = "COMPLETE"
_NAME = re.compile(r"^checkpoint-(\d+)$")
_GROUP = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass
class Checkpoint:
    """A loaded checkpoint: the same structure `save_checkpoint` was given."""

    path: Path
    step: int
    tensors: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    rng: dict[str, Any] = field(default_factory=dict)


def _fsync_path(path: Path) -> None:
    """Flush a file or directory entry to disk so the rename below publishes complete data."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(path: Path, writer: Callable[[Path], None]) -> None:
    writer(path)
    _fsync_path(path)


def _write_text(path: Path, text: str) -> None:
    _write(path, lambda p: p.write_text(text, encoding="utf-8"))


def _write_bytes(path: Path, data: bytes) -> None:
    """Write and fsync through Python's own file I/O, so that a full disk (or any failed write) is an
    OSError: safetensors and torch.save writing files themselves raise SafetensorError or a
    RuntimeError instead.  Costs one in-memory copy of the file during the save."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _fill(tmp: Path, step: int, tensors: dict, state: dict | None, meta: dict | None, rng: dict | None, config: Any) -> None:
    for group, group_tensors in tensors.items():
        if not _GROUP.match(group):
            raise ValueError(f"tensor group name {group!r} must match {_GROUP.pattern} (it becomes a file name)")
        # safetensors refuses shared/non-contiguous storage: save independent contiguous copies.
        clean = {k: v.detach().contiguous() for k, v in group_tensors.items()}
        _write_bytes(tmp / f"{group}.safetensors", safetensors_bytes(clean, metadata={"step": str(step)}))
    if state:
        _write_bytes(tmp / "state.pt", _torch_bytes(state))
    if rng:
        _write_bytes(tmp / "rng.pt", _torch_bytes(rng))
    if config is not None:
        save_config(config, tmp / "config.toml")
    _write_text(tmp / "meta.json", json.dumps({"step": step, **(meta or {})}, indent=2, default=str) + "\n")
    _write(tmp / MANIFEST, lambda p: write_manifest(p.parent))  # sizes and sha256 of the files above
    _write_text(tmp / COMPLETE, f"{step}\n")


def save_checkpoint(
    dir_root: str | os.PathLike,
    step: int,
    tensors: dict[str, dict[str, torch.Tensor]] | None = None,
    state: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    rng: dict[str, Any] | None = None,
    config: Any = None,
    keep_last: int = 0,
) -> Path:
    """Write `dir_root/checkpoint-<step>/` atomically, then prune to the newest `keep_last` (0: keep all).

    Call on the main process only. `state` and `rng` must hold only tensors and Python primitives
    (optimizer/scheduler `state_dict()`s qualify) so they load with weights_only=True.
    A write error (a full disk, ...) removes the tmp folder, leaves the earlier checkpoints (and
    an earlier save of this step) in place and raises `CheckpointError` naming the folder.
    """
    root = Path(dir_root)
    final = root / f"{PREFIX}{step}"
    try:
        _publish(root, final, lambda tmp: _fill(tmp, step, tensors or {}, state, meta, rng, config))
    except OSError as error:
        raise CheckpointError(
            f"could not write checkpoint {final}: {error}. The partial folder was removed and the earlier "
            "checkpoints are intact: free some space (or move run.output_dir) and resume") from error
    logger.info("saved checkpoint %s", final)
    if keep_last > 0:
        prune_checkpoints(root, keep_last)
    return final


def _publish(root: Path, final: Path, fill: Callable[[Path], None]) -> None:
    """Fill a tmp folder beside `final`, fsync it and rename it into place; on any failure the tmp
    folder is removed and a previous `final` (a re-saved step) is put back."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f"{final.name}.tmp-{os.getpid()}"
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        fill(tmp)
        _fsync_path(tmp)
        if final.exists():  # re-saving a step (e.g. after resume): move the old one aside first
            old = root / f"{final.name}.old-{os.getpid()}"
            os.replace(final, old)
            try:
                os.replace(tmp, final)
            except BaseException:
                os.replace(old, final)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_path(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def list_checkpoints(dir_root: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints as (step, path), oldest first; tmp and unmarked folders are skipped."""
    root = Path(dir_root)
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        match = _NAME.match(entry.name)
        if not match or not entry.is_dir():
            continue
        if (entry / COMPLETE).is_file():
            found.append((int(match.group(1)), entry))
        else:
            logger.warning("ignoring incomplete checkpoint %s (no %s marker)", entry, COMPLETE)
    return sorted(found)


def latest_checkpoint(dir_root: str | os.PathLike) -> Path | None:
    """Newest complete checkpoint folder under `dir_root`, or None (unverified: see latest_intact_checkpoint)."""
    found = list_checkpoints(dir_root)
    return found[-1][1] if found else None


def _set_aside(path: Path) -> Path | None:
    """Rename a damaged checkpoint to `checkpoint-<step>.damaged[-n]`, out of the way of listing and
    pruning (a damaged newer folder would otherwise count as the newest) but kept for inspection."""
    for n in range(100):
        target = path.with_name(path.name + (".damaged" if n == 0 else f".damaged-{n}"))
        if target.exists():
            continue
        try:
            os.rename(path, target)
            return target
        except FileNotFoundError:  # another rank moved it first
            return None
        except OSError as error:
            logger.warning("could not move damaged checkpoint %s aside: %s", path, error)
            return None
    return None


def latest_intact_checkpoint(dir_root: str | os.PathLike, start_fresh_if_damaged: bool = False) -> Path | None:
    """Newest complete checkpoint whose files match its manifest (older folders without one count
    as intact), or None when there is none at all.

    Damaged newer checkpoints are named in one warning, with the file and what is wrong, and moved
    aside. If every checkpoint is damaged this raises `CheckpointError`, unless
    `start_fresh_if_damaged`, when it warns and returns None (a fresh start).
    """
    damaged: list[tuple[Path, list[str]]] = []
    for _, path in reversed(list_checkpoints(dir_root)):
        problems = verify_checkpoint(path)
        if not problems:
            if damaged:
                logger.warning("%s; resuming from %s, the newest intact checkpoint", _describe(damaged, True), path)
            return path
        damaged.append((path, problems))
    if not damaged:
        return None
    if not start_fresh_if_damaged:
        raise CheckpointError(
            f"no intact checkpoint in {dir_root}: {_describe(damaged, False)}. Resume from a copy of a good checkpoint "
            "(--resume PATH), or set checkpoint.start_fresh_if_damaged=true to start the run again from step 0")
    logger.warning("%s; no intact checkpoint is left, so the run starts fresh (checkpoint.start_fresh_if_damaged)",
                   _describe(damaged, True))
    return None


def _describe(damaged: list[tuple[Path, list[str]]], set_aside: bool) -> str:
    """Say which checkpoints are damaged and what is wrong; with `set_aside`, move them aside and say where."""
    parts = []
    for path, problems in damaged:
        moved = _set_aside(path) if set_aside else None
        where = f", moved to {moved.name}" if moved is not None else ""
        parts.append(f"{path} ({'; '.join(problems)}{where})")
    return f"skipping damaged checkpoint{'s' if len(parts) > 1 else ''} {', '.join(parts)}"


def prune_checkpoints(dir_root: str | os.PathLike, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` (>= 1) complete checkpoints; returns what was deleted."""
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1 to prune (the newest is never deleted), got {keep_last}")
    found = list_checkpoints(dir_root)
    doomed = [path for _, path in found[:-keep_last]]
    for path in doomed:
        # Rename first so a crash mid-delete cannot leave a half-deleted folder that still has COMPLETE.
        trash = path.with_name(path.name + f".del-{os.getpid()}")
        os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
        logger.info("pruned checkpoint %s", path)
    return doomed


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu", verify: bool = True) -> Checkpoint:
    """Load a complete checkpoint folder; tensors land on `device`. Fails clearly on incomplete ones
    and (`verify`, the default) with `CheckpointError` on files that do not match the manifest."""
    folder = Path(path)
    if not (folder / COMPLETE).is_file():
        raise FileNotFoundError(f"{folder} is not a complete checkpoint (missing {COMPLETE} marker)")
    if verify:
        _raise_if_damaged(folder, "")
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    tensors = {p.name[: -len(".safetensors")]: load_file(str(p), device=str(device)) for p in sorted(folder.glob("*.safetensors"))}
    state = torch.load(folder / "state.pt", map_location=device, weights_only=True) if (folder / "state.pt").is_file() else {}
    rng = torch.load(folder / "rng.pt", map_location="cpu", weights_only=True) if (folder / "rng.pt").is_file() else {}
    return Checkpoint(path=folder, step=int(meta["step"]), tensors=tensors, state=state, meta=meta, rng=rng)


def _raise_if_damaged(folder: Path, prefix: str) -> None:
    problems = verify_checkpoint(folder)
    if problems:
        raise CheckpointError(f"{prefix}checkpoint {folder} is damaged: {'; '.join(problems)}. Use another "
                              "checkpoint (resume=latest picks the newest intact one)")


def resolve_resume(dir_root: str | os.PathLike, resume: str, start_fresh_if_damaged: bool = False) -> Path | None:
    """Map `CheckpointConfig.resume` ("none" / "latest" / a path) to a verified checkpoint folder or None.

    "latest" skips damaged checkpoints (see `latest_intact_checkpoint`); a named path that is
    damaged raises `CheckpointError` naming the file.
    """
    choice = resume.strip()
    if choice.lower() == "none":
        return None
    if choice.lower() == "latest":
        found = latest_intact_checkpoint(dir_root, start_fresh_if_damaged)
        logger.info("resume=latest: %s", found if found is not None else f"no checkpoint in {dir_root}, starting fresh")
        return found
    folder = Path(choice)
    if not (folder / COMPLETE).is_file():
        raise FileNotFoundError(f"resume={choice!r}: not a complete checkpoint folder (missing {COMPLETE})")
    _raise_if_damaged(folder, "checkpoint.resume: ")
    return folder
