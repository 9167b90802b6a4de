"""A training run meeting bad data or a full disk: a corrupt scene is skipped (logged, replaced
deterministically) or stops the run with a checkpoint; a damaged feature-cache entry is recomputed at
the next start, or skipped when it breaks during training; a failed export keeps the checkpoints.
Demo recipe on the generated scenes, in-process."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import pytest

from data.errors import DataFormatError
from stages.trainer import load_checkpoint
from stages.trainer.bad_samples import BadSampleLog, SkippingDataset, replacement
from tests.helpers import overrides, run_stage1


def _copy_with_corrupt_scenes(generated_dataset, tmp_path: Path) -> tuple[Path, Path, list[Path]]:
    """A copy of the data set in which every other training scene has each RGB frame cut in half
    (so the first steps meet one for sure); returns root, csv and the damaged scene directories."""
    root, csv_path = generated_dataset
    copy = tmp_path / "scenes"
    shutil.copytree(root, copy)
    with open(csv_path) as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "train"]
    scenes = [copy / r["video"] for r in rows[::2]]
    for png in (png for scene in scenes for png in scene.glob("**/*.png")):
        png.write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    return copy, csv_path, scenes


def _online(root, csv_path, out: Path, steps: int, **extra) -> list[str]:
    return overrides(root, csv_path, out, out.parent / "cache", **{"features.mode": "online", "optim.max_steps": steps,
                                                                    "checkpoint.every_steps": 1000, **extra})


def test_a_corrupt_scene_is_skipped_logged_and_the_run_finishes(generated_dataset, tmp_path):
    root, csv_path, scenes = _copy_with_corrupt_scenes(generated_dataset, tmp_path)
    out = tmp_path / "run"
    run_stage1(_online(root, csv_path, out, steps=4))
    assert (out / "final" / "heads.safetensors").is_file()
    records = [json.loads(line) for line in (out / "bad_samples.jsonl").read_text().splitlines()]
    assert records and all(any(Path(r["file"]).is_relative_to(s) for s in scenes) for r in records)
    assert all("corrupt image" in r["reason"] and r["step"] >= 1 for r in records)
    saved = load_checkpoint(out / "checkpoint-4")
    assert saved.meta["bad_samples"]["count"] == len(records)


def test_stop_checkpoints_the_step_reached_and_names_the_file(generated_dataset, tmp_path):
    root, csv_path, scenes = _copy_with_corrupt_scenes(generated_dataset, tmp_path)
    out = tmp_path / "run"
    with pytest.raises(DataFormatError, match="data.on_error=stop") as caught:
        run_stage1(_online(root, csv_path, out, steps=4, **{"data.on_error": "stop"}))
    assert any(caught.value.path.is_relative_to(s) for s in scenes)
    assert "bad_samples.jsonl" in str(caught.value)
    saved = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert saved and (saved[-1] / "COMPLETE").is_file(), "the step reached must be checkpointed"
    assert int(saved[-1].name.split("-")[1]) < 4 and not (out / "final").exists()


def test_skip_stops_once_the_count_over_all_ranks_passes_the_limit(tmp_path):
    log = BadSampleLog(tmp_path, "skip", limit=3, rank=0)
    assert log.agreed_count(2) is None and log.agreed_count(0) is None and log.agreed_count(1) is None
    assert log.agreed_count(1) == "4 bad samples, above data.max_bad_samples=3"
    resumed = BadSampleLog(tmp_path, "skip", limit=3, rank=0)
    resumed.load_state_dict({"count": 3})
    assert resumed.agreed_count(1) is not None, "the count must survive a resume"
    assert BadSampleLog(tmp_path, "stop", limit=100, rank=0).agreed_count(1) == "data.on_error=stop"


def test_replacements_are_a_function_of_the_item_alone():
    class Flaky:
        def __len__(self):
            return 50

        def __getitem__(self, index):
            if index % 3 == 0:
                raise DataFormatError(f"frame_{index}.png", "unreadable or corrupt image")
            return {"index": index}

    data = SkippingDataset(Flaky())
    first = [data[i] for i in range(50)]
    assert first == [data[i] for i in range(50)], "a resumed run must see the same replacements"
    assert all(s["index"] % 3 for s in first)
    bad = json.loads(first[3]["bad_samples"])
    assert bad[0] == {"index": 3, "file": "frame_3.png", "reason": "unreadable or corrupt image"}
    assert first[3]["index"] == next(r for a in range(1, 8) if (r := replacement(3, a, 50)) % 3)


def _cached(root, csv_path, out: Path, cache: Path) -> list[str]:
    return overrides(root, csv_path, out, cache, **{"optim.max_steps": 2, "features.windows_per_scene": 1})


@pytest.fixture(scope="module")
def built_cache(generated_dataset, tmp_path_factory) -> Path:
    """The demo's feature cache of the generated scenes with the training windows only (no
    validation split), built once; tests copy it and damage their copy."""
    root, csv_path = generated_dataset
    out = tmp_path_factory.mktemp("built")
    run_stage1(_cached(root, csv_path, out / "run", out / "cache") + ["run.val_split=", "optim.max_steps=1"])
    return out / "cache"


def _copy(cache: Path, tmp_path: Path) -> Path:
    shutil.copytree(cache, tmp_path / "cache")
    return tmp_path / "cache"


def _feature_files(cache: Path) -> list[Path]:
    return sorted((cache / "features").glob("*/*.safetensors"))


def test_a_truncated_feature_cache_entry_is_recomputed_at_the_next_start(generated_dataset, built_cache, tmp_path,
                                                                         caplog):
    root, csv_path = generated_dataset
    cache = _copy(built_cache, tmp_path)
    victim = _feature_files(cache)[0]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with caplog.at_level(logging.WARNING):
        run_stage1(_cached(root, csv_path, tmp_path / "second", cache))
    assert f"removed a damaged entry, to be recomputed: {victim}" in caplog.text
    assert not (tmp_path / "second" / "bad_samples.jsonl").exists()
    from world_model.cache import check_entry

    assert check_entry(victim, full=True) is None


def test_a_cache_entry_that_breaks_during_training_is_skipped_and_repaired_next_start(generated_dataset, built_cache,
                                                                                    tmp_path, monkeypatch):
    root, csv_path = generated_dataset
    cache = _copy(built_cache, tmp_path)  # training entries only
    victims = _feature_files(cache)
    for victim in victims[:2]:
        victim.write_bytes(victim.read_bytes()[:100])
    with monkeypatch.context() as patch:  # the damage happens after the start's check: it passes
        patch.setattr("stages.features.FeatureCache.repair", lambda self, full=False: [])
        # one epoch (one cached window per training scene) meets every entry
        run_stage1(_cached(root, csv_path, tmp_path / "second", cache)
                   + [f"optim.max_steps={len(victims) + 1}", "checkpoint.every_steps=1000", "run.val_split="])
    records = [json.loads(line) for line in (tmp_path / "second" / "bad_samples.jsonl").read_text().splitlines()]
    assert {r["file"] for r in records} == {str(v) for v in victims[:2]}
    assert all("missing or damaged" in r["reason"] for r in records)
    # dropped on read, so the next start's build finds them missing and recomputes them (the
    # truncated-entry test above shows that build)
    assert not any(v.is_file() for v in victims[:2])


def test_a_full_disk_during_the_export_keeps_the_checkpoints_and_the_rerun_exports(generated_dataset, built_cache,
                                                                                   tmp_path, monkeypatch):
    import errno

    from stages.trainer import verify_checkpoint
    from stages.trainer.runner import ExportError

    root, csv_path = generated_dataset
    args = _cached(root, csv_path, tmp_path / "run", _copy(built_cache, tmp_path))

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr("heads.io.save_file", full_disk)
        with pytest.raises(ExportError, match="No space left on device.*checkpoints are intact"):
            run_stage1(args)
    verify_checkpoint(tmp_path / "run" / "checkpoint-2")
    assert not (tmp_path / "run" / "final" / "heads.safetensors").exists()
    run_stage1(args)
    assert (tmp_path / "run" / "final" / "heads.safetensors").is_file()


def test_a_truncated_latest_checkpoint_is_skipped_and_the_run_resumes_exactly_from_the_one_before(
        generated_dataset, built_cache, tmp_path, caplog):
    """The issue's third case end to end: checkpoint-4's weights cut in half; the rerun names the
    file, moves the folder aside, resumes from checkpoint-2 and ends with the same heads."""
    import torch
    from safetensors.torch import load_file

    root, csv_path = generated_dataset
    args = _cached(root, csv_path, tmp_path / "run", _copy(built_cache, tmp_path)) + ["optim.max_steps=4"]
    run_stage1(args)
    run = tmp_path / "run"
    first = load_file(run / "final" / "heads.safetensors")
    damaged = run / "checkpoint-4" / "trainable.safetensors"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    shutil.rmtree(run / "final")
    with caplog.at_level(logging.INFO):
        run_stage1(args)
    assert "trainable.safetensors" in caplog.text and "checkpoint-4.damaged" in caplog.text
    assert f"resumed from {run / 'checkpoint-2'}" in caplog.text
    again = load_file(run / "final" / "heads.safetensors")
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
