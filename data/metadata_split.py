"""Metadata rows (``video,prompt,split``) for a scene root, with family-stratified splits.

Families come from ``scene.json`` for generated scenes, otherwise from the scene name (real data:
``test_ball_collide`` -> ``ball_collide``).  Splits are drawn per family so every family appears
in train at the requested proportions: ``val`` and ``test_seen`` hold unseen scenes of families
seen in training.  Held-out families go entirely to ``holdout`` and nowhere else, so that split
means scenarios never seen in training.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

from data.layout import SCENE_SUBPATH
from data.metadata import read_metadata
from data.scene_meta import scene_look
from data.sim.prompts import family_from_name, prompt_from_name, prompt_from_scene

SPLITS = ("train", "val", "test_seen", "holdout", "holdout_look")
"""Split names: training, validation and test on seen families and looks, the held-out families, and
scenes of seen families in held-out looks."""
HOLDOUT = "holdout"
HOLDOUT_LOOK = "holdout_look"

log = logging.getLogger(__name__)


def discover_scenes(root: Path) -> list[str]:
    """Scene names under ``root`` that have an ``env_0/0/0`` folder (hidden dirs skipped)."""
    return sorted(
        d.name for d in root.iterdir()
        if d.is_dir() and not d.name.startswith(".") and (d / SCENE_SUBPATH).is_dir()
    )


def describe_scene(root: Path, name: str) -> tuple[str, str]:
    """(family, prompt) of one scene: from ``scene.json`` when present, else from its name."""
    meta = _scene_json(root, name)
    if meta is not None:
        return meta.get("family") or family_from_name(name), prompt_from_scene(meta)
    return family_from_name(name), prompt_from_name(name)


def _scene_json(root: Path, name: str) -> dict | None:
    meta_path = root / name / SCENE_SUBPATH / "scene.json"
    return json.loads(meta_path.read_text()) if meta_path.is_file() else None


def describe_look(root: Path, name: str) -> str:
    """The scene's look set (``data.scene_meta.scene_look``; 'unknown' without scene.json)."""
    return scene_look(_scene_json(root, name))


def _apportion(sizes: dict[str, int], fraction: float, capacity: dict[str, int],
               rng: np.random.Generator) -> dict[str, int]:
    """Per-family counts summing to round(N * fraction), proportional to family size.

    Largest-remainder rounding over all families keeps the global proportion even when each
    family is small (e.g. 2 scenes per family still yields a few val/test scenes); ``capacity``
    caps each family so it keeps its minimum in train.  Ties are broken by a seeded shuffle.
    """
    exact = {f: n * fraction for f, n in sizes.items()}
    counts = {f: min(math.floor(x), capacity[f]) for f, x in exact.items()}
    missing = round(sum(sizes.values()) * fraction) - sum(counts.values())
    order = sorted(sizes, key=lambda f: (-(exact[f] - math.floor(exact[f])), rng.random()))
    for family in order:
        if missing <= 0:
            break
        if counts[family] < capacity[family]:
            counts[family] += 1
            missing -= 1
    return counts


def assign_splits(families: dict[str, str], fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
                  holdout: set[str] = frozenset(), seed: int = 0) -> dict[str, str]:
    """Scene name -> 'train' | 'val' | 'test_seen' | 'holdout', deterministic from ``seed``.

    ``fractions`` (train, val, test_seen) apply to the non-held-out families; every such family
    keeps at least one scene in train (if train's fraction is > 0).
    """
    total = sum(fractions)
    if total <= 0 or min(fractions) < 0:
        raise ValueError(f"split fractions must be >= 0 and not all 0, got {fractions}")
    train_f, val_f, test_f = (f / total for f in fractions)
    by_family: dict[str, list[str]] = {}
    for name, family in sorted(families.items()):
        by_family.setdefault(family, []).append(name)
    split = {n: HOLDOUT for f in holdout for n in by_family.pop(f, [])}
    rng = np.random.default_rng(seed)
    sizes = {f: len(names) for f, names in by_family.items()}
    keep = 1 if train_f > 0 else 0
    capacity = {f: n - keep for f, n in sizes.items()}
    n_val = _apportion(sizes, val_f, capacity, rng)
    capacity = {f: capacity[f] - n_val[f] for f in sizes}
    # With no train fraction, whatever is not in val is test (nothing needs to stay in train).
    n_test = capacity if train_f == 0 else _apportion(sizes, test_f, capacity, rng)
    for family, names in by_family.items():
        order = np.random.default_rng([seed, zlib.crc32(family.encode())]).permutation(len(names))
        shuffled = [names[i] for i in order]
        cut_val, cut_test = n_val[family], n_val[family] + n_test[family]
        for i, name in enumerate(shuffled):
            split[name] = "val" if i < cut_val else "test_seen" if i < cut_test else "train"
    if val_f > 0 and "val" not in split.values():
        _scene_level_val(split, families, val_f, seed)
    return split


def _scene_level_val(split: dict[str, str], families: dict[str, str], val_f: float, seed: int) -> None:
    """Move round(N * val) scenes (at least 1) from train to val when the per-family draw gave val
    none (e.g. one scene per family, as real data named per scenario), so validation does not
    silently vanish.  Scenes whose family keeps a training scene go first; one stays in train."""
    pool = [n for n, s in split.items() if s != HOLDOUT]
    train = [n for n in sorted(pool) if split[n] == "train"]
    count = min(max(1, round(len(pool) * val_f)), len(train) - 1)
    if count <= 0:
        log.warning("split: %d training scene(s), none to spare for val; val is empty", len(train))
        return
    in_train = Counter(families[n] for n in train)
    shuffled = [train[i] for i in np.random.default_rng([seed, 1]).permutation(len(train))]
    chosen = sorted(sorted(shuffled, key=lambda n: in_train[families[n]] == 1)[:count])
    for name in chosen:
        split[name] = "val"
        in_train[families[name]] -= 1
    unseen = [n for n in chosen if in_train[families[n]] == 0]
    log.warning("split: no family gave a scene to val (too few scenes per family); drew %d scene(s) for val at the "
                "scene level: %s; %d of them of a family left with no training scene (val then measures "
                "transfer to new families)", count, ", ".join(chosen), len(unseen))


def build_rows(root: Path, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
               holdout: set[str] = frozenset(), seed: int = 0,
               holdout_looks: set[str] = frozenset()) -> list[dict[str, str]]:
    """One ``{video, prompt, split}`` row per scene under ``root``, sorted by scene name.

    Scenes of a held-out family go to ``holdout``; scenes of seen families in a held-out look set go
    to ``holdout_look``; the rest are split by family as ``assign_splits`` does."""
    scenes = discover_scenes(root)
    if not scenes:
        raise FileNotFoundError(f"no scenes (<scene>/{SCENE_SUBPATH}) under {root}")
    described = {name: describe_scene(root, name) for name in scenes}
    unknown = set(holdout) - {family for family, _ in described.values()}
    if unknown:
        raise ValueError(f"held-out families not found under {root}: {sorted(unknown)}")
    looks = {name: describe_look(root, name) for name in scenes}
    unknown_looks = set(holdout_looks) - set(looks.values())
    if unknown_looks:
        raise ValueError(f"held-out looks not found under {root}: {sorted(unknown_looks)}; "
                         f"looks there: {sorted(set(looks.values()))}")
    unseen_look = {n for n in scenes if looks[n] in holdout_looks and described[n][0] not in holdout}
    rest = {n: f for n, (f, _) in described.items() if n not in unseen_look}
    split = assign_splits(rest, fractions, set(holdout), seed)
    split.update({n: HOLDOUT_LOOK for n in unseen_look})
    return [{"video": (Path(n) / SCENE_SUBPATH).as_posix(), "prompt": described[n][1], "split": split[n]}
            for n in scenes]


def seen_families(root: str | Path, metadata: str | Path, train_split: str = "train") -> set[str]:
    """Families with a scene in ``train_split`` of the metadata CSV (none when it has no such rows)."""
    return {describe_scene(Path(root), e.scene)[0] for e in read_metadata(metadata) if e.split == train_split}


def describe_split(root: str | Path, metadata: str | Path, split: str, train_split: str = "train") -> str:
    """What ``split`` holds relative to training, from the CSV itself (not from the split's name),
    e.g. 'unseen scenes of seen families (split val, 3 scenes)'."""
    seen = seen_families(root, metadata, train_split)
    rows = read_metadata(metadata)
    scenes = sorted({e.scene for e in rows if e.split == split})
    n_seen = sum(describe_scene(Path(root), s)[0] in seen for s in scenes)
    seen_looks = {describe_look(Path(root), e.scene) for e in rows if e.split == train_split}
    new_looks = sorted({describe_look(Path(root), s) for s in scenes} - seen_looks)
    if n_seen == len(scenes) and new_looks and all(describe_look(Path(root), s) in new_looks for s in scenes):
        what = f"seen families in looks never seen in training ({', '.join(new_looks)})"
    elif n_seen == len(scenes):
        what = "unseen scenes of seen families"
    elif n_seen == 0:
        what = "scenes of families never seen in training"
    else:
        what = f"{n_seen} scene(s) of seen families and {len(scenes) - n_seen} of families never seen in training"
    return f"{what} (split {split}, {len(scenes)} scene{'' if len(scenes) == 1 else 's'})"


def write_csv(rows: list[dict[str, str]], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["video", "prompt", "split"])
        writer.writeheader()
        writer.writerows(rows)
