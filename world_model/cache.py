"""On-disk tensor cache: safetensors files keyed by sha256 of whatever determines their content.

VAE latents, text contexts and frozen-backbone features are pure functions of their inputs, so
they are computed once and reused by every later run.  Writes are atomic (temporary file in the
same folder, then ``os.replace``) so a crash or a concurrent writer never leaves a torn file at an
entry's name; but files also get damaged after they are written (copies between file systems, a
disk fault), so every entry records a checksum of its tensors in its header.  ``check`` looks at
an entry cheaply (size against the header: catches truncation) or fully (the checksum); a build
recomputes what fails, and a read that fails drops the entry so the next build repairs it.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

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


CHECKSUM_FIELD = "pwm_tensors_sha256"
"""Header metadata field holding ``tensors_sha256`` of an entry's tensors."""


class CacheError(RuntimeError):
    """A cache entry that cannot be written (full disk, read-only folder) or read; the message names
    the file.  The stage scripts print it as one line and exit with status 2."""


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """Checksum of named tensors (names, dtypes, shapes and bytes, in name order): independent of
    how safetensors lays the file out, so it can be checked from the loaded tensors."""
    return sha256_key(*[part for name in sorted(tensors) for part in (name, tensors[name])])


def check_entry(path: Path, full: bool = False) -> str | None:
    """What is wrong with a cache file, or None when it looks intact.

    Cheap (default): the file size must equal what its safetensors header declares, which
    catches truncation and appended garbage with one small read.  ``full`` also loads the
    tensors and compares their checksum with the one recorded at write time; an entry written
    before checksums existed fails it (and is recomputed once)."""
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        size = path.stat().st_size
    except (OSError, struct.error, ValueError) as err:
        return f"unreadable header ({err})"
    ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
    if size != 8 + length + max(ends, default=0):
        return f"size {size} B, but its header describes {8 + length + max(ends, default=0)} B (truncated?)"
    if not full:
        return None
    recorded = (header.get("__metadata__") or {}).get(CHECKSUM_FIELD)
    if recorded is None:
        return "no checksum recorded (written by an older version)"
    try:
        actual = tensors_sha256(load_file(str(path)))
    except (SafetensorError, OSError) as err:
        return f"unreadable tensors ({err})"
    return None if actual == recorded else "checksum mismatch (the tensors changed after they were written)"


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
        return self.get_rows(key, None)

    def get_rows(self, key: str, rows: dict[str, list[int] | None] | None) -> dict[str, torch.Tensor] | None:
        """Rows (indices along the first dimension, in the order given) of the named tensors under
        ``key``, or the whole tensor for None, reading only those bytes of the file; names the entry
        lacks are left out; ``rows`` None reads every tensor whole.  None when the entry is missing
        or unreadable (a damaged file is removed)."""
        path = self.path(key)
        if not path.is_file():
            self.misses += 1
            return None
        try:
            with safe_open(str(path), framework="pt") as handle:
                out, present = {}, set(handle.keys())
                rows = dict.fromkeys(present) if rows is None else rows
                for name, wanted in rows.items():
                    if name not in present:
                        continue
                    if wanted is None:
                        out[name] = handle.get_tensor(name)
                        continue
                    whole = handle.get_slice(name)
                    out[name] = torch.cat([whole[i:i + 1] for i in wanted]) if wanted else whole[0:0]
        except (SafetensorError, OSError) as err:
            log.warning("dropping unreadable cache file %s: %s", path, err)
            path.unlink(missing_ok=True)
            self.misses += 1
            return None
        self.hits += 1
        return out

    def repair(self, keys: Iterable[str], full: bool = False) -> list[str]:
        """Remove the damaged entries among ``keys`` (``check_entry``; missing ones are left alone)
        so that the next ``fill`` recomputes them; one line per entry removed.  Run it on one
        process: the others would race on the removals."""
        damaged = []
        for key in keys:
            path = self.path(key)
            problem = check_entry(path, full) if path.is_file() else None
            if problem is not None:
                path.unlink(missing_ok=True)
                damaged.append(f"{path}: {problem}")
        return damaged

    def check(self, key: str, full: bool = False) -> str | None:
        """``check_entry`` of the entry under ``key`` ("missing" when there is none)."""
        path = self.path(key)
        return check_entry(path, full) if path.is_file() else "missing"

    def put(self, key: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
        """Store tensors atomically with their checksum; returns the final path.  Any write error
        (a full disk, a read-only folder) leaves no partial file and is one CacheError."""
        path = self.path(key)
        cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        header = {**{k: str(v) for k, v in (metadata or {}).items()}, CHECKSUM_FIELD: tensors_sha256(cpu)}
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{key[:8]}-", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "wb") as handle:
                handle.write(safetensors_bytes(cpu, metadata=header))
            os.replace(tmp, path)
        except OSError as err:
            raise CacheError(f"could not write cache entry {path}: {err.strerror or err}; free space under "
                             f"{self.root} or point the cache elsewhere") from err
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @contextlib.contextmanager
    def claim(self, key: str, wait: bool) -> Iterator[bool]:
        """An exclusive claim on computing ``key``, across processes and runs sharing the folder.

        A ``flock`` on a lock file beside the entry: the kernel releases it when its holder exits,
        so a builder killed mid-entry never blocks the others.  Yields False at once when another
        process holds it and ``wait`` is False."""
        path = self.path(key).with_suffix(".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def fill(self, todo: Iterable[tuple[int, str]], compute: Callable[[int], tuple[dict, dict] | None],
             should_stop: Callable[[], bool] = lambda: False, done: Callable[[], None] = lambda: None) -> int:
        """Write the entries ``todo`` (item, key) that are missing, ``compute(item)`` giving
        (tensors, metadata), or None for an item that cannot be computed (it stays missing);
        returns how many this process wrote.

        Runs that share the folder never compute one entry twice: each entry is computed under its
        claim, entries another process is computing are left for the end, and then waited for
        (and computed only if that process died without writing them)."""
        written, busy = 0, []
        for wait, items in ((False, list(todo)), (True, busy)):
            for item, key in items:
                if should_stop():
                    return written
                with self.claim(key, wait) as mine:
                    if not mine:
                        busy.append((item, key))
                        continue
                    computed = compute(item) if self.check(key) is not None else None
                    if computed is not None:
                        self.put(key, *computed)
                        written += 1
                done()
        return written

    def size_bytes(self) -> int:
        """Total bytes of cached files (for disk-budget reporting)."""
        return sum(p.stat().st_size for p in self.root.glob("*/*.safetensors"))
