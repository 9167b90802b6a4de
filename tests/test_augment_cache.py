"""Augmentation with the feature cache (features.views_per_window): each window's views are cached
once, a training item shows one view per epoch, and its targets and RGB are loaded with that
same view, so cached features, images and targets describe the same pixels."""

from __future__ import annotations

import torch

from data.augment import AugmentConfig
from data.dataset import DataConfig, SimPhysicsDataset
from data.sampling import WindowSpec
from data.windows import FixedWindows

VIEWS = 3
AUGMENT = AugmentConfig(brightness=0.3, hue=0.1, crop_scale=(0.5, 0.9), strides=(1, 2))


def _windows(scene, csv, views: int = VIEWS, supervised: int = 0, per_scene: int = 2) -> FixedWindows:
    config = DataConfig(root=str(scene.root), metadata=str(csv), height=64, width=64, hflip_prob=0.5,
                        window=WindowSpec(num_frames=5, stride=2))
    base = SimPhysicsDataset(config, augment=AUGMENT)
    return FixedWindows(base, per_scene=per_scene, repeat=2, supervised_frames=supervised, seed=5, video=not supervised,
                        views=views)


def test_views_are_fixed_per_window_and_view_zero_is_the_plain_window(analytic_scene, analytic_csv):
    windows = _windows(analytic_scene, analytic_csv)
    again = _windows(analytic_scene, analytic_csv)
    plain = FixedWindows(windows.base, per_scene=2)
    assert windows.view(0, 0) is None and torch.equal(windows.load(0)["rgb"], plain.load(0)["rgb"])
    drawn = [windows.view(w, v) for w in range(len(windows.refs)) for v in range(1, VIEWS)]
    assert drawn == [again.view(w, v) for w in range(len(windows.refs)) for v in range(1, VIEWS)]
    assert len({view.key() for view in drawn}) == len(drawn), "views differ from each other"
    for w in range(len(windows.refs)):
        for v in range(1, VIEWS):
            sample = windows.load(w, view=v)
            stride = windows.view(w, v).stride
            assert (sample["steps"].diff() == stride).all()
            assert not torch.equal(sample["rgb"], plain.load(w)["rgb"])


def test_training_items_pick_views_by_epoch_and_load_that_views_targets(analytic_scene, analytic_csv):
    windows = _windows(analytic_scene, analytic_csv, supervised=2)
    picked = set()
    for epoch in range(6):
        windows.set_epoch(epoch)
        for index in range(len(windows)):
            sample = windows[index]
            picked.add(sample["view"])
            whole = windows.load(sample["window"], view=sample["view"])
            idx = sample["frame_index"]
            for key in ("flow", "flow_valid", "depth", "depth_valid"):
                assert torch.equal(sample[key], whole[key][idx]), key
            assert torch.equal(sample["frame_rgb"], whole["rgb"][idx])
            assert torch.equal(sample["intrinsics"], whole["intrinsics"])
    assert picked == set(range(VIEWS))


def test_cached_views_hold_the_features_of_their_own_pixels(analytic_scene, analytic_csv, tmp_path):
    from stages.features import (
        CachedFeatureWindows,
        FeatureCache,
        FeatureSource,
        window_key,
    )
    from stages.trainer.sections import BackboneConfig

    source = FeatureSource(BackboneConfig(), torch.device("cpu"), tmp_path)
    windows = _windows(analytic_scene, analytic_csv, views=2, per_scene=1)
    cache = FeatureCache(tmp_path, windows, source)
    assert cache.build(source, show_progress=False) == 2 * len(windows.refs)
    single = FeatureCache(tmp_path, FixedWindows(windows.base, per_scene=1), source)
    assert single.missing() == [], "view 0 is stored under the key a single-view cache uses"
    assert window_key(windows, windows.refs[0], source) == single.keys[0]
    for w in range(len(windows.refs)):
        for v in range(2):
            sample = windows.load(w, view=v)
            live = source.extract(sample["rgb"].unsqueeze(0), [sample["prompt"]])
            for cached, online in zip(cache.load(w, v), live):
                torch.testing.assert_close(cached.float(), online[0].to(torch.bfloat16).float(), rtol=0, atol=0)
    training = CachedFeatureWindows(windows, cache)
    item = training[1]
    assert all(torch.equal(a, b) for a, b in zip(item["taps"], cache.load(item["window"], item["view"])))
