"""Stage 1's augmentation and curriculum settings: what the config refuses, and the curriculum's
ranking of the generated families by their scene.json."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from stages.stage1 import Stage1Config, curriculum_sampler
from stages.trainer import ConfigError, load_config
from stages.trainer.config_text import missing_docstrings
from tests.helpers import DEMO, overrides

ONE_PROCESS = SimpleNamespace(num_processes=1, process_index=0, is_main_process=True)


def test_cached_features_with_augmentation_need_augmented_views():
    for augmenting in ("augment.brightness=0.2", "data.hflip_prob=0.5", "augment.strides=1,2"):
        with pytest.raises(ConfigError, match="views_per_window >= 2"):
            load_config(Stage1Config, DEMO, [augmenting])
        load_config(Stage1Config, DEMO, [augmenting, "features.views_per_window=2"])
        load_config(Stage1Config, DEMO, [augmenting, "features.mode=online"])
    config = load_config(Stage1Config, DEMO, ["augment.crop_scale=0.5,1", "augment.strides=1,3",
                                              "features.views_per_window=4", "curriculum.enabled=true"])
    assert config.augment.crop_scale == (0.5, 1.0) and config.augment.strides == (1, 3)
    with pytest.raises(ConfigError, match="crop_scale"):
        load_config(Stage1Config, DEMO, ["augment.crop_scale=0,1"])
    assert missing_docstrings(Stage1Config) == []


@pytest.mark.parametrize("mode", ["online", "cached"])
def test_the_curriculum_ranks_every_training_item_by_its_scene(generated_dataset, tmp_path, mode):
    from data.complexity import complexity_ranks, scene_complexity
    from data.dataset import SimPhysicsDataset
    from data.scene_meta import read_scene_meta
    from data.windows import FixedWindows
    from stages.features import CachedFeatureWindows

    root, csv = generated_dataset
    config = load_config(Stage1Config, DEMO, overrides(root, csv, tmp_path / "run", tmp_path / "cache",
                                                       **{"curriculum.enabled": "true"}))
    base = SimPhysicsDataset(config.data, split="train")
    # The cached set's items are its windows, repeated; no features are needed to rank them.
    train = base if mode == "online" else CachedFeatureWindows(FixedWindows(base, 2, repeat=2), cache=None)
    sampler = curriculum_sampler(config, ONE_PROCESS, train)
    scores = [scene_complexity(read_scene_meta(s.directory)).score for s in base.scenes]
    expected = complexity_ranks(scores)
    assert sampler.ranks.tolist() == [expected[train.scene_of(i)] for i in range(len(train))]
    by_family = {}
    for entry, score in zip(base.entries, scores):
        by_family.setdefault(entry.scene.rsplit("_", 1)[0], []).append(score)
    # A row of dominoes (many bodies, chained collisions, hidden behind each other) is harder
    # than one ball rolling down a ramp.
    assert min(by_family["domino"]) > max(by_family["ramp_roll"]), by_family
    again = curriculum_sampler(config, ONE_PROCESS, train)
    for s in (sampler, again):
        s.plan_run(200)
    assert all(sampler.global_order(e) == again.global_order(e) for e in range(3))
    disabled = load_config(Stage1Config, DEMO, overrides(root, csv, tmp_path / "run", tmp_path / "cache"))
    assert curriculum_sampler(disabled, ONE_PROCESS, base) is None
