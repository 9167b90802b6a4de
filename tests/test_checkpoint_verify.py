"""Verified checkpoints (issue 19): a manifest of sizes and sha256, damaged checkpoints skipped or
refused, a full disk during a save leaves the earlier checkpoints intact."""

from __future__ import annotations

import errno
import json
import logging
import resource
import signal
from pathlib import Path

import pytest
import torch

from stages.trainer import checkpoint as checkpoint_module
from stages.trainer.checkpoint import (
    CheckpointError,
    latest_intact_checkpoint,
    list_checkpoints,
    load_checkpoint,
    resolve_resume,
    save_checkpoint,
    verify_checkpoint,
)
from stages.trainer.checkpoint_verify import MANIFEST
from stages.trainer.sections import CheckpointConfig


def _save(root: Path, step: int) -> Path:
    tensors = {"trainable": {"w": torch.arange(64, dtype=torch.float32) + step}, "ema": {"w": torch.ones(8) * step}}
    return save_checkpoint(root, step, tensors=tensors, state={"optimizer": {"lr": 0.1}}, meta={"epoch": 0})


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_manifest_lists_every_file_with_size_and_sha256(tmp_path: Path) -> None:
    path = _save(tmp_path, 10)
    files = json.loads((path / MANIFEST).read_text())["files"]
    assert sorted(files) == ["ema.safetensors", "meta.json", "state.pt", "trainable.safetensors"]
    assert files["trainable.safetensors"]["size"] == (path / "trainable.safetensors").stat().st_size
    assert len(files["trainable.safetensors"]["sha256"]) == 64
    assert verify_checkpoint(path) == []


def test_truncated_newest_checkpoint_falls_back_to_the_older_one(tmp_path: Path, caplog) -> None:
    older, newer = _save(tmp_path, 40), _save(tmp_path, 60)
    _truncate(newer / "trainable.safetensors")
    problems = verify_checkpoint(newer)
    assert len(problems) == 1 and problems[0].startswith("trainable.safetensors: size ")
    with caplog.at_level(logging.WARNING, logger=checkpoint_module.__name__):
        assert resolve_resume(tmp_path, "latest") == older
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "checkpoint-60" in warnings[0] and "trainable.safetensors" in warnings[0] and str(older) in warnings[0]
    # The damaged folder is moved aside, so pruning and later resumes no longer count it as the newest.
    assert [step for step, _ in list_checkpoints(tmp_path)] == [40]
    assert (tmp_path / "checkpoint-60.damaged" / "trainable.safetensors").is_file()
    assert load_checkpoint(older).step == 40


def test_same_size_flipped_byte_is_a_checksum_mismatch(tmp_path: Path) -> None:
    path = _save(tmp_path, 5)
    target = path / "ema.safetensors"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    problems = verify_checkpoint(path)
    assert len(problems) == 1 and problems[0].startswith("ema.safetensors: checksum mismatch")
    with pytest.raises(CheckpointError, match="ema.safetensors: checksum mismatch"):
        load_checkpoint(path)


def test_missing_file_is_reported(tmp_path: Path) -> None:
    path = _save(tmp_path, 5)
    (path / "state.pt").unlink()
    assert verify_checkpoint(path) == ["state.pt: missing"]


def test_explicit_resume_to_a_damaged_checkpoint_is_an_error_naming_the_file(tmp_path: Path) -> None:
    _save(tmp_path, 40)
    damaged = _save(tmp_path, 60)
    _truncate(damaged / "trainable.safetensors")
    with pytest.raises(CheckpointError, match=r"checkpoint-60.*trainable\.safetensors: size \d+ expected \d+"):
        resolve_resume(tmp_path, str(damaged))
    assert damaged.is_dir()  # a named checkpoint is reported, never moved


def test_all_damaged_is_an_error_unless_the_user_opts_in_to_a_fresh_start(tmp_path: Path, caplog) -> None:
    for step in (40, 60):
        _truncate(_save(tmp_path, step) / "state.pt")
    with pytest.raises(CheckpointError, match=r"no intact checkpoint.*state\.pt.*start_fresh_if_damaged"):
        resolve_resume(tmp_path, "latest")
    assert [step for step, _ in list_checkpoints(tmp_path)] == [40, 60]  # nothing moved without the opt-in
    assert CheckpointConfig().start_fresh_if_damaged is False
    with caplog.at_level(logging.WARNING, logger=checkpoint_module.__name__):
        assert resolve_resume(tmp_path, "latest", CheckpointConfig(start_fresh_if_damaged=True).start_fresh_if_damaged) is None
    assert any("starts fresh" in r.getMessage() for r in caplog.records)
    assert list_checkpoints(tmp_path) == []  # a fresh run's checkpoints are not pruned in favour of damaged ones
    assert latest_intact_checkpoint(tmp_path) is None


def test_checkpoint_without_manifest_still_loads(tmp_path: Path) -> None:
    path = _save(tmp_path, 3)
    (path / MANIFEST).unlink()  # as written before manifests existed
    assert verify_checkpoint(path) == []
    assert resolve_resume(tmp_path, "latest") == path
    assert resolve_resume(tmp_path, str(path)) == path
    assert torch.equal(load_checkpoint(path).tensors["ema"]["w"], torch.ones(8) * 3)


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_during_save_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    previous = _save(tmp_path, 40)
    monkeypatch.setattr(checkpoint_module, "_write_bytes", _no_space)
    with pytest.raises(CheckpointError, match="No space left") as caught:
        _save(tmp_path, 60)
    assert str(tmp_path / "checkpoint-60") in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-40"]  # no tmp folder left
    # Re-saving an existing step on a full disk keeps the earlier save of that step.
    with pytest.raises(CheckpointError, match="No space left"):
        _save(tmp_path, 40)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-40"]
    assert resolve_resume(tmp_path, "latest") == previous
    assert load_checkpoint(previous).step == 40


def test_disk_full_while_publishing_a_resaved_step_puts_the_old_one_back(tmp_path: Path, monkeypatch) -> None:
    _save(tmp_path, 40)
    real_replace = checkpoint_module.os.replace

    def replace(src, dst):
        if ".tmp-" in str(src):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(checkpoint_module.os, "replace", replace)
    with pytest.raises(CheckpointError, match="No space left"):
        _save(tmp_path, 40)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-40"]
    assert verify_checkpoint(tmp_path / "checkpoint-40") == []


def test_a_real_failed_write_is_one_clear_error_not_a_library_traceback(tmp_path: Path) -> None:
    """The kernel refuses the write (a file-size cap: EFBIG, as a full disk gives ENOSPC): the error
    is a CheckpointError naming the checkpoint, not safetensors' or torch's own exception type."""
    previous = _save(tmp_path, 40)
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, old_limit[1]))
        with pytest.raises(CheckpointError, match="File too large") as caught:
            save_checkpoint(tmp_path, 60, tensors={"trainable": {"w": torch.zeros(1 << 19)}})  # 2 MiB
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert str(tmp_path / "checkpoint-60") in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-40"]
    assert load_checkpoint(previous).step == 40
