"""Faults of the on-disk tensor caches: damaged entries are found and recomputed, a failed write is
one clear error, and runs sharing a cache folder never compute one entry twice."""

from __future__ import annotations

import errno
import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest
import torch

from world_model.cache import CacheError, TensorCache, check_entry


def _entry(cache: TensorCache, key: str = "ab" * 32) -> Path:
    return cache.put(key, {"x": torch.arange(4096, dtype=torch.float32), "y": torch.ones(3, 5)}, {"note": "n"})


def test_truncation_fails_the_cheap_check_and_a_changed_byte_only_the_full_one(tmp_path: Path) -> None:
    cache = TensorCache(tmp_path)
    path = _entry(cache)
    assert check_entry(path) is None and check_entry(path, full=True) is None
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # same size, one tensor byte changed
    path.write_bytes(bytes(data))
    assert check_entry(path) is None
    assert "checksum mismatch" in check_entry(path, full=True)
    path.write_bytes(bytes(data[: len(data) // 2]))
    assert "truncated" in check_entry(path)


def test_an_entry_without_a_checksum_passes_the_cheap_check_and_fails_the_full_one(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "old.safetensors"
    save_file({"x": torch.zeros(8)}, str(path))  # as entries were written before checksums
    assert check_entry(path) is None
    assert "no checksum" in check_entry(path, full=True)


def test_a_full_disk_while_writing_an_entry_is_one_cache_error_and_leaves_no_file(tmp_path: Path, monkeypatch) -> None:
    cache = TensorCache(tmp_path)
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("world_model.cache.os.fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode)))
    with pytest.raises(CacheError, match="No space left on device") as caught:
        _entry(cache, "cd" * 32)
    assert str(cache.path("cd" * 32)) in str(caught.value)
    assert not any(tmp_path.rglob("*.safetensors")) and not any(tmp_path.rglob("*.tmp"))


def _builder(root: str, log: str, start: float) -> None:
    """One 'run' filling the same six entries; each computation is logged and takes 0.2 s."""
    cache = TensorCache(root)

    def compute(item: int):
        with open(log, "a") as handle:
            handle.write(f"{item}\n")
        time.sleep(0.2)
        return {"v": torch.full((4,), float(item))}, {}

    time.sleep(max(0.0, start - time.time()))
    cache.fill([(i, f"{i:02d}" + "e" * 62) for i in range(6)], compute)


def test_two_processes_building_one_cache_compute_each_entry_once(tmp_path: Path) -> None:
    log = tmp_path / "computed.log"
    start = time.time() + 1.0
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_builder, args=(str(tmp_path / "cache"), str(log), start)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    computed = sorted(int(line) for line in log.read_text().split())
    assert computed == list(range(6)), f"entries computed more than once or never: {computed}"
    cache = TensorCache(tmp_path / "cache")
    for i in range(6):
        assert cache.check(f"{i:02d}" + "e" * 62, full=True) is None
        assert cache.get(f"{i:02d}" + "e" * 62)["v"][0].item() == i


def _hold_claim_then_die(root: str, key: str, ready: str) -> None:
    with TensorCache(root).claim(key, wait=False) as mine:
        assert mine
        Path(ready).touch()
        time.sleep(60)


def test_an_entry_claimed_by_a_builder_that_died_is_computed_by_the_other(tmp_path: Path) -> None:
    key, ready = "ff" * 32, tmp_path / "ready"
    holder = mp.get_context("spawn").Process(target=_hold_claim_then_die, args=(str(tmp_path), key, str(ready)))
    holder.start()
    deadline = time.time() + 30
    while not ready.exists() and time.time() < deadline:
        time.sleep(0.05)
    cache = TensorCache(tmp_path)
    with cache.claim(key, wait=False) as mine:
        assert not mine, "the claim of a live builder must hold"
    holder.kill()
    holder.join()
    assert cache.fill([(0, key)], lambda item: ({"v": torch.zeros(2)}, {})) == 1
    assert cache.check(key) is None
