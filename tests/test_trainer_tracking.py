"""Tracker: metrics.jsonl always, rank-0 only, lazy optional backends with clear errors."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch

from stages.trainer.sections import LogConfig
from stages.trainer.tracking import (
    Tracker,
    build_tracker,
    check_backend,
    format_step_line,
    peak_memory_gib,
    read_metrics,
)


def test_jsonl_written_without_backend(tmp_path: Path) -> None:
    with build_tracker(LogConfig(backend="none"), tmp_path / "run") as tracker:
        tracker.log({"loss": torch.tensor(0.5), "lr": 1e-4}, step=1)
        tracker.log({"loss": float("nan")}, step=2)
    records = read_metrics(tmp_path / "run")
    assert [r["step"] for r in records] == [1, 2]
    assert records[0]["loss"] == 0.5 and records[0]["lr"] == 1e-4
    assert records[1]["loss"] is None  # NaN written as null: the file stays strict JSON
    tracker.close()  # closing twice is harmless


def test_non_main_process_writes_nothing(tmp_path: Path) -> None:
    tracker = Tracker(tmp_path / "run", backend="none", is_main_process=False)
    tracker.log({"loss": 1.0}, step=0)
    tracker.close()
    assert not (tmp_path / "run").exists()


def test_resumed_run_appends(tmp_path: Path) -> None:
    for step in (1, 2):
        with Tracker(tmp_path) as tracker:
            tracker.log({"loss": float(step)}, step)
    assert [r["loss"] for r in read_metrics(tmp_path)] == [1.0, 2.0]


def test_tensorboard_backend_writes_readable_scalars(tmp_path: Path) -> None:
    """The real recipes log to TensorBoard, so it is a dependency and must work offline."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tracker = Tracker(tmp_path, backend="tensorboard")
    tracker.log({"loss": 0.5, "lr": torch.tensor(1e-4)}, step=3)
    tracker.log({"loss": 0.25}, step=4)
    tracker.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(3, 0.5), (4, 0.25)]


def test_missing_tensorboard_gives_install_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now raises ImportError
    with pytest.raises(RuntimeError, match=r"pip install tensorboard.*log.backend=none"):
        Tracker(tmp_path, backend="tensorboard")
    with pytest.raises(RuntimeError, match=r"pip install tensorboard"):
        check_backend("tensorboard")  # what the stages call before building any cache


def test_wandb_is_lazy_and_offline_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: dict = {"logs": []}

    class FakeRun:
        def log(self, metrics: dict, step: int) -> None:
            calls["logs"].append((metrics, step))

        def finish(self) -> None:
            calls["finished"] = True

    def init(**kwargs: object) -> FakeRun:
        calls["init"] = kwargs
        return FakeRun()

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    tracker = build_tracker(LogConfig(backend="wandb", project="p", run_name="r"), tmp_path, config={"a": 1})
    tracker.log({"loss": 2.0}, step=3)
    tracker.close()
    assert calls["init"]["mode"] == "offline" and calls["init"]["project"] == "p" and calls["init"]["config"] == {"a": 1}
    assert calls["logs"] == [({"loss": 2.0}, 3)] and calls["finished"]
    assert read_metrics(tmp_path)[0]["loss"] == 2.0  # the JSONL is written beside the backend

    monkeypatch.setenv("WANDB_MODE", "online")
    Tracker(tmp_path, backend="wandb").close()
    assert calls["init"]["mode"] == "online" and calls["init"]["name"] == tmp_path.name


def test_unknown_backend_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown log backend"):
        Tracker(tmp_path, backend="mlflow")


def test_format_step_line() -> None:
    line = format_step_line(
        120, {"extra": 3.14159, "lr": 1e-4, "loss": torch.tensor(0.12345), "grad_norm": 1.5,
              "samples_per_s": 12.345, "memory_gib": 3.5, "mfu": 0.42}, total_steps=1000)
    assert line == ("step 120/1000 | loss 0.1235 | grad_norm 1.500 | lr 1.00e-04 | samples/s 12.35 | mfu 42.0% "
                    "| mem 3.50 GiB | extra 3.142")
    assert format_step_line(5, {}) == "step 5"
    assert peak_memory_gib() > 0
