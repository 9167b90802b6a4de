"""Cached training targets (stages/target_cache.py): an item read from the target cache equals the
one loaded from the scene files; the key follows what the targets depend on; a damaged entry is
recomputed at the next start, or skipped through the bad-sample policy when it breaks in training."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from data.augment import AugmentConfig
from data.dataset import DataConfig, SimPhysicsDataset
from data.errors import DataFormatError
from data.sampling import WindowSpec
from data.windows import FixedWindows
from stages.features import CachedFeatureWindows
from stages.target_cache import TargetCache, target_key
from tests.conftest import write_analytic_scene, write_metadata
from tests.helpers import overrides, run_stage1
from world_model.cache import check_entry



class NoFeatures:
    """A FeatureCache stand-in: the items' targets are under test, not their taps."""

    def load(self, window: int, view: int = 0) -> list[torch.Tensor]:
        return []


def _scenes(tmp_path: Path) -> DataConfig:
    root = tmp_path / "root"
    rows = []
    for k, (velocity, start) in enumerate([((2, 1), (8, 10)), ((-1, 2), (30, 8))]):
        scene = write_analytic_scene(root, name=f"slide_{k}", frames=14, velocity=velocity, start=start, seed=k)
        rows.append((f"{scene.name}/env_0/0/0", f"square {k}", "train"))
    csv = write_metadata(tmp_path / "meta.csv", rows)
    return DataConfig(root=str(root), metadata=str(csv), height=64, width=64,
                      window=WindowSpec(num_frames=5, stride=2))


def _windows(config: DataConfig, supervised: int = 2, views: int = 1, augment: AugmentConfig | None = None,
             video: bool = False) -> FixedWindows:
    base = SimPhysicsDataset(config, augment=augment)
    return FixedWindows(base, per_scene=2, repeat=2, supervised_frames=supervised, seed=3, video=video, views=views)


def _assert_same(cached: dict, loaded: dict, rgb_tol: float = 0.0) -> None:
    assert cached.keys() == loaded.keys()
    for name, value in loaded.items():
        if not isinstance(value, torch.Tensor):
            assert cached[name] == value, name
        elif name.endswith("rgb") and rgb_tol:
            assert cached[name].dtype == value.dtype and cached[name].shape == value.shape
            torch.testing.assert_close(cached[name], value, atol=rgb_tol, rtol=0.0)
        else:
            assert cached[name].dtype == value.dtype and torch.equal(cached[name], value), name


def _items_agree(windows: FixedWindows, targets: TargetCache, rgb_tol: float = 0.0) -> None:
    current, cached = CachedFeatureWindows(windows, NoFeatures()), CachedFeatureWindows(windows, NoFeatures(), targets)
    for epoch in (0, 1):
        current.set_epoch(epoch)
        cached.set_epoch(epoch)
        for index in range(len(windows)):
            _assert_same(cached[index], current[index], rgb_tol)


def test_cached_items_equal_loaded_items_exactly(tmp_path):
    config = _scenes(tmp_path)
    for supervised, video in ((2, False), (0, True), (0, False)):  # training items, validation windows
        windows = _windows(config, supervised, video=video)
        targets = TargetCache(tmp_path / "cache", windows)
        targets.build(show_progress=False)
        assert not targets.missing()
        _items_agree(windows, targets)
    stored = targets.store.get(targets.keys[0])
    assert stored["rgb_u8"].dtype == torch.uint8 and "rgb" not in stored, "no resize: RGB is stored losslessly"


def test_resized_flipped_and_colour_jittered_views_agree(tmp_path):
    config = replace(_scenes(tmp_path), height=32, width=32, hflip_prob=0.5)
    augment = AugmentConfig(brightness=0.3, hue=0.1, crop_scale=(0.6, 1.0), strides=(1, 2))
    windows = _windows(config, supervised=3, views=3, augment=augment)
    targets = TargetCache(tmp_path / "cache", windows)
    targets.build(show_progress=False)
    _items_agree(windows, targets)  # resized / jittered RGB is stored as float32: exact too


def test_the_key_follows_what_the_targets_depend_on(tmp_path):
    config = _scenes(tmp_path)
    windows = _windows(config)
    ref = windows.refs[1]
    key = target_key(windows, ref)
    changed = [replace(config, height=32), replace(config, window=WindowSpec(num_frames=5, stride=1)),
               replace(config, window=WindowSpec(num_frames=4, stride=2)), replace(config, far_clip_m=3.0),
               replace(config, flow_timing="shifted")]
    for other in changed:
        assert target_key(_windows(other), ref) != key, other
    view = _windows(config, views=2, augment=AugmentConfig(brightness=0.3))
    assert target_key(view, ref, view.view(1, 1)) != key
    assert target_key(_windows(config, supervised=3), ref) == key, "supervised frames are cut from the same entry"
    depth = windows.base.scenes[ref.scene_index].depth[windows.frames(ref)[1] - 1]  # an intermediate step
    depth.write_bytes(depth.read_bytes() + b"\0")
    assert target_key(windows, ref) != key


def test_a_truncated_entry_is_removed_at_start_and_recomputed(tmp_path):
    windows = _windows(_scenes(tmp_path))
    targets = TargetCache(tmp_path / "cache", windows)
    targets.build(show_progress=False)
    victim = targets.store.path(targets.keys[1])
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    assert [line.split(":")[0] for line in targets.repair()] == [str(victim)]
    assert targets.missing() == [1] and targets.build(show_progress=False) == 1
    assert check_entry(victim, full=True) is None
    _items_agree(windows, targets)


def test_an_entry_that_breaks_after_the_start_is_a_data_error_and_dropped(tmp_path):
    windows = _windows(_scenes(tmp_path))
    targets = TargetCache(tmp_path / "cache", windows)
    targets.build(show_progress=False)
    victim = targets.store.path(targets.keys[0])
    victim.write_bytes(victim.read_bytes()[:100])
    with pytest.raises(DataFormatError, match="missing or damaged") as caught:
        CachedFeatureWindows(windows, NoFeatures(), targets)[0]
    assert caught.value.path == victim and not victim.exists(), "the next start's build recomputes it"


def test_stage1_recomputes_a_truncated_target_entry_and_skips_one_broken_in_training(generated_dataset, tmp_path,
                                                                                     caplog, monkeypatch):
    root, csv_path = generated_dataset
    cache = tmp_path / "cache"
    args = overrides(root, csv_path, tmp_path / "first", cache, **{"optim.max_steps": 1, "run.val_split": "",
                                                                   "features.windows_per_scene": 1})
    run_stage1(args)
    entries = sorted((cache / "targets").glob("*/*.safetensors"))
    assert entries and len(entries) == len(sorted((cache / "features").glob("*/*.safetensors")))
    victim = entries[0]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with caplog.at_level(logging.WARNING):
        run_stage1([a.replace("first", "second") for a in args])
    assert f"target cache: removed a damaged entry, to be recomputed: {victim}" in caplog.text
    assert check_entry(victim, full=True) is None
    assert not (tmp_path / "second" / "bad_samples.jsonl").exists()

    victim.write_bytes(victim.read_bytes()[:100])
    with monkeypatch.context() as patch:  # the damage happens after the start's check: it passes
        patch.setattr("stages.target_cache.TargetCache.repair", lambda self, full=False: [])
        run_stage1([a.replace("first", "third") for a in args]
                   + [f"optim.max_steps={len(entries) + 1}", "checkpoint.every_steps=1000"])
    records = [json.loads(line) for line in (tmp_path / "third" / "bad_samples.jsonl").read_text().splitlines()]
    assert {r["file"] for r in records} == {str(victim)}
    assert all("missing or damaged" in r["reason"] for r in records)


def test_bench_loader_finds_the_h100_cached_step_rates():
    from scripts.bench_loader import h100_step_rates

    rates = h100_step_rates()
    assert {0, 8} <= rates.keys()
    assert all(rate > 0 and "cached_step_ms" in source for found in rates.values() for rate, source in found)
