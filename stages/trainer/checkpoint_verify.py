"""Checkpoint manifests: the size and sha256 of every file a checkpoint folder holds.

`save_checkpoint` writes `MANIFEST.json` after the data files and before `COMPLETE`;
`verify_checkpoint` re-reads the files and lists what does not match (truncated or extended
files, flipped bytes, missing files), so resume can skip a checkpoint damaged by a copy between
file systems instead of crashing inside safetensors. A folder without a manifest (written before
manifests existed) is trusted on its `COMPLETE` marker alone.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

__all__ = ["MANIFEST", "CheckpointError", "file_sha256", "manifest_entries", "verify_checkpoint", "write_manifest"]

MANIFEST = "MANIFEST.json"
_CHUNK = 1 << 20  # hash in 1 MiB chunks: checkpoint files can be many GiB
_UNLISTED = {MANIFEST, "COMPLETE"}  # the manifest cannot list itself; COMPLETE is written after it


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (damaged files, none intact) or written (a full disk, any
    write error); the message names the checkpoint and the file. The runner prints it as one line
    and exits with status 2."""


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_entries(folder: Path) -> dict[str, dict[str, int | str]]:
    """{file name: {"size", "sha256"}} for every regular file in `folder` but the manifest and marker."""
    return {p.name: {"size": p.stat().st_size, "sha256": file_sha256(p)}
            for p in sorted(folder.iterdir()) if p.is_file() and p.name not in _UNLISTED}


def write_manifest(folder: Path) -> Path:
    """Write `folder/MANIFEST.json` (not fsynced here: the caller fsyncs what it publishes)."""
    path = folder / MANIFEST
    path.write_text(json.dumps({"version": 1, "files": manifest_entries(folder)}, indent=2) + "\n", encoding="utf-8")
    return path


def verify_checkpoint(path: str | os.PathLike) -> list[str]:
    """Problems with a checkpoint folder's files, each naming the file; [] when it is intact.

    Sizes are compared before hashing, so a truncated file is reported without reading it.
    Without a manifest only the `COMPLETE` marker can be checked.
    """
    folder = Path(path)
    if not folder.is_dir():
        return [f"{folder.name}: missing (not a folder)"]
    problems = [] if (folder / "COMPLETE").is_file() else ["COMPLETE: missing (the save did not finish)"]
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return problems
    try:
        files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
        entries = [(str(name), int(entry["size"]), str(entry["sha256"])) for name, entry in files.items()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        return [*problems, f"{MANIFEST}: unreadable ({error})"]
    for name, size, sha256 in entries:
        file = folder / name
        if not file.is_file():
            problems.append(f"{name}: missing")
            continue
        actual = file.stat().st_size
        if actual != size:
            problems.append(f"{name}: size {actual} expected {size}")
        elif file_sha256(file) != sha256:
            problems.append(f"{name}: checksum mismatch (sha256 differs from the manifest)")
    return problems
