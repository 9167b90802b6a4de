"""Metadata CSV: prompts from scene.json or names, family-stratified and held-out splits."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from data.metadata_split import assign_splits, build_rows
from data.sim.prompts import family_from_name, prompt_from_name, prompt_from_scene

REPO = Path(__file__).resolve().parents[1]
LEAF = Path("env_0") / "0" / "0"


def _fake_root(root: Path, counts: dict[str, int]) -> Path:
    """Scene folders with a minimal scene.json (no frames: only metadata is read)."""
    for family, n in counts.items():
        for seed in range(n):
            leaf = root / f"{family}_{seed:05d}" / LEAF
            leaf.mkdir(parents=True)
            objects = [{"name": "ball", "shape": "sphere", "color_name": "red"},
                       {"name": "block", "shape": "box", "color_name": "orange"}]
            (leaf / "scene.json").write_text(json.dumps({"family": family, "objects": objects}))
    return root


def test_names_and_prompts() -> None:
    assert family_from_name("test_ball_collide") == "ball_collide"
    assert family_from_name("train_domino_00012") == "domino"
    assert family_from_name("ball_collide_00012") == "ball_collide"
    assert prompt_from_name("test_duck_falls_in_box") == "duck falls in box"
    meta = {"family": "ball_on_block", "objects": [
        {"name": "ball", "shape": "sphere", "color_name": "red"},
        {"name": "block", "shape": "box", "color_name": "orange"}]}
    assert prompt_from_scene(meta) == "A red ball falls onto an orange block on a checkered floor."
    dominoes = [{"name": f"domino_{i}", "shape": "box", "color_name": "blue"} for i in range(5)]
    assert "five blue dominoes" in prompt_from_scene({"family": "domino", "objects": dominoes})
    assert prompt_from_scene({"family": "new_family", "objects": []}) == "new family"


def test_stratified_split_is_deterministic_and_covers_families() -> None:
    families = {f"{f}_{i:05d}": f for f, n in {"a": 20, "b": 10, "c": 3, "d": 1}.items() for i in range(n)}
    split = assign_splits(families, seed=3)
    assert split == assign_splits(families, seed=3)
    assert split != assign_splits(families, seed=4)
    counts = Counter(split.values())
    assert counts == {"train": 28, "val": 3, "test": 3}  # round(34 * 0.1) each
    for family in "abcd":
        assert any(s == "train" for n, s in split.items() if families[n] == family), family
    per_a = Counter(s for n, s in split.items() if families[n] == "a")
    assert per_a == {"train": 16, "val": 2, "test": 2}


def test_small_families_still_give_val_and_test() -> None:
    """2 scenes per family (the demo preset) still yields a few val/test scenes overall."""
    families = {f"{f}_{i}": f for f in "abcdefgh" for i in range(2)}
    split = assign_splits(families, seed=0)
    counts = Counter(split.values())
    assert counts["val"] >= 1 and counts["test"] >= 1
    for family in "abcdefgh":
        assert "train" in {s for n, s in split.items() if families[n] == family}


def test_holdout_families_only_in_test(tmp_path: Path) -> None:
    root = _fake_root(tmp_path, {"ball_collide": 6, "domino": 6, "ramp_roll": 5, "stack_topple": 4})
    rows = build_rows(root, holdout={"domino", "stack_topple"}, seed=1)
    by_family = {}
    for row in rows:
        by_family.setdefault(row["video"].split("/")[0].rsplit("_", 1)[0], set()).add(row["split"])
    assert by_family["domino"] == {"test"} and by_family["stack_topple"] == {"test"}
    assert all("train" in by_family[f] for f in ("ball_collide", "ramp_roll"))
    assert rows[0]["video"] == "ball_collide_00000/env_0/0/0"
    # Objects the template names (ball_a, ball_b) are missing: colours drop out, no crash.
    assert rows[0]["prompt"] == "A ball and a ball roll towards each other and collide on a checkered floor."
    with pytest.raises(ValueError):
        build_rows(root, holdout={"no_such_family"})


def test_cli_on_real_style_names(tmp_path: Path) -> None:
    """Real data has no scene.json: family and prompt come from the folder name."""
    root = tmp_path / "real"
    for name in ("test_ball_collide", "test_domino", "test_roll_behind_box"):
        (root / name / LEAF).mkdir(parents=True)
    out = tmp_path / "meta" / "real.csv"
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_metadata.py"), str(root), "--out", str(out),
                    "--split", "1", "0", "0", "--holdout-families", "domino"], check=True, capture_output=True)
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["video"] for r in rows] == [f"{n}/env_0/0/0" for n in
                                          ("test_ball_collide", "test_domino", "test_roll_behind_box")]
    assert [r["prompt"] for r in rows] == ["ball collide", "domino", "roll behind box"]
    assert [r["split"] for r in rows] == ["train", "test", "train"]
