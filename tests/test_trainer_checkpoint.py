"""Atomic checkpoints: exact round trip, killed saves ignored, keep-last pruning, RNG restore."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from stages.trainer.checkpoint import (
    capture_rng,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    resolve_resume,
    restore_rng,
    save_checkpoint,
)
from stages.trainer.config import load_config
from stages.trainer.ema import EMA
from stages.trainer.schedule import load_scheduler_state, warmup_cosine
from stages.trainer.sections import OptimConfig


def _trained() -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = warmup_cosine(optimizer, 2, 10, 0.1)
    for _ in range(3):
        model(torch.randn(5, 4)).pow(2).mean().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return model, optimizer, scheduler


def _tensors_equal(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for key in a:
        if isinstance(a[key], dict):
            if not _tensors_equal(a[key], b[key]):
                return False
        elif isinstance(a[key], torch.Tensor):
            if not torch.equal(a[key], b[key]):
                return False
        elif a[key] != b[key]:
            return False
    return True


def test_save_load_round_trip_is_identical(tmp_path: Path) -> None:
    model, optimizer, scheduler = _trained()
    ema = EMA(model, decay=0.9)
    ema.update(model)
    rng = capture_rng()
    cfg = OptimConfig(lr=3e-4)
    path = save_checkpoint(
        tmp_path, 3,
        tensors={"heads": model.state_dict(), "ema": ema.state_dict()},
        state={"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "sampler": {"epoch": 1, "position": 4}},
        meta={"epoch": 1, "note": "x"}, rng=rng, config=cfg,
    )
    assert path == tmp_path / "checkpoint-3"
    assert sorted(p.name for p in path.iterdir()) == [
        "COMPLETE", "MANIFEST.json", "config.toml", "ema.safetensors", "heads.safetensors", "meta.json", "rng.pt",
        "state.pt"]
    loaded = load_checkpoint(path)
    assert loaded.step == 3 and loaded.meta == {"step": 3, "epoch": 1, "note": "x"}
    assert _tensors_equal(loaded.tensors["heads"], model.state_dict())
    assert _tensors_equal(loaded.state["optimizer"], optimizer.state_dict())
    assert loaded.state["scheduler"] == scheduler.state_dict()
    assert _tensors_equal(loaded.rng, rng)
    assert load_config(OptimConfig, path / "config.toml", []) == cfg

    # Loading into fresh objects continues the same optimisation exactly.
    # The optimizer state is loaded *before* the scheduler is built, the order that trips plain
    # LambdaLR.load_state_dict (lr reset to step 0); load_scheduler_state makes the order irrelevant.
    fresh_model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    fresh_model.load_state_dict(loaded.tensors["heads"], strict=True)
    fresh_opt = torch.optim.AdamW(fresh_model.parameters(), lr=1e-2)
    fresh_opt.load_state_dict(loaded.state["optimizer"])
    fresh_sched = warmup_cosine(fresh_opt, 2, 10, 0.1)
    load_scheduler_state(fresh_sched, loaded.state["scheduler"])
    assert fresh_opt.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    x = torch.randn(5, 4)
    for m, o, s in ((model, optimizer, scheduler), (fresh_model, fresh_opt, fresh_sched)):
        m(x).pow(2).mean().backward()
        o.step()
        s.step()
    assert _tensors_equal(model.state_dict(), fresh_model.state_dict())


def test_killed_save_and_unmarked_folders_are_ignored(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 10, tensors={"heads": {"w": torch.ones(2)}})
    # A save killed mid-way leaves its tmp folder; a folder without the marker is also incomplete.
    killed = tmp_path / "checkpoint-20.tmp-12345"
    killed.mkdir()
    (killed / "heads.safetensors").write_bytes(b"partial")
    (tmp_path / "checkpoint-30").mkdir()
    (tmp_path / "checkpoint-30" / "meta.json").write_text(json.dumps({"step": 30}))
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-10"
    assert [step for step, _ in list_checkpoints(tmp_path)] == [10]
    with pytest.raises(FileNotFoundError, match="COMPLETE"):
        load_checkpoint(tmp_path / "checkpoint-30")
    assert latest_checkpoint(tmp_path / "missing") is None


def test_failed_save_leaves_no_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tensor group name"):
        save_checkpoint(tmp_path, 5, tensors={"heads": {"w": torch.ones(1)}, "bad/name": {"w": torch.ones(1)}})
    assert list(tmp_path.iterdir()) == []  # the tmp folder is removed, nothing is published


def test_keep_last_prunes_oldest_and_never_the_newest(tmp_path: Path) -> None:
    for step in (100, 200, 300, 400):
        save_checkpoint(tmp_path, step, tensors={"heads": {"w": torch.full((1,), float(step))}}, keep_last=2)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [300, 400]
    assert prune_checkpoints(tmp_path, 1) == [tmp_path / "checkpoint-300"]
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-400"
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-400"]
    with pytest.raises(ValueError):
        prune_checkpoints(tmp_path, 0)


def test_resaving_a_step_replaces_it(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 7, tensors={"heads": {"w": torch.zeros(1)}})
    save_checkpoint(tmp_path, 7, tensors={"heads": {"w": torch.ones(1)}})
    assert torch.equal(load_checkpoint(tmp_path / "checkpoint-7").tensors["heads"]["w"], torch.ones(1))
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-7"]


def test_resolve_resume(tmp_path: Path) -> None:
    assert resolve_resume(tmp_path, "latest") is None
    path = save_checkpoint(tmp_path, 1, tensors={"heads": {"w": torch.zeros(1)}})
    assert resolve_resume(tmp_path, "latest") == path
    assert resolve_resume(tmp_path, "none") is None
    assert resolve_resume(tmp_path, str(path)) == path
    with pytest.raises(FileNotFoundError):
        resolve_resume(tmp_path, str(tmp_path / "checkpoint-99"))


def test_rng_restore_reproduces_random_numbers(tmp_path: Path) -> None:
    random.gauss(0, 1)  # leaves a cached gauss_next in Python's state
    state = capture_rng()
    expected = (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), np.random.randn(), torch.rand(4))
    path = save_checkpoint(tmp_path, 1, rng=state)
    for _ in range(5):  # move every generator on
        random.random(), np.random.rand(), torch.rand(1)
    restore_rng(load_checkpoint(path).rng)  # loaded with weights_only=True: no pickle needed
    got = (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), np.random.randn(), torch.rand(4))
    assert got[:4] == expected[:4]
    assert torch.equal(got[4], expected[4])
    assert state["torch"].dtype == torch.uint8
