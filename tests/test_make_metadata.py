"""Metadata CSV: prompts from scene.json or names, family-stratified and held-out splits, val for real data."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from data.metadata_split import assign_splits, build_rows, describe_split, seen_families, write_csv
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
    assert counts == {"train": 28, "val": 3, "test_seen": 3}  # round(34 * 0.1) each
    for family in "abcd":
        assert any(s == "train" for n, s in split.items() if families[n] == family), family
    per_a = Counter(s for n, s in split.items() if families[n] == "a")
    assert per_a == {"train": 16, "val": 2, "test_seen": 2}


def test_small_families_still_give_val_and_test() -> None:
    """2 scenes per family (the demo preset) still yields a few val/test scenes overall."""
    families = {f"{f}_{i}": f for f in "abcdefgh" for i in range(2)}
    split = assign_splits(families, seed=0)
    counts = Counter(split.values())
    assert counts["val"] >= 1 and counts["test_seen"] >= 1
    for family in "abcdefgh":
        assert "train" in {s for n, s in split.items() if families[n] == family}


def test_holdout_split_holds_held_out_families_alone(tmp_path: Path) -> None:
    """The holdout split is the held-out families and nothing else; seen families' test scenes are
    test_seen (the old 'test' split mixed both, so 'held out' scored seen families too)."""
    root = _fake_root(tmp_path, {"ball_collide": 10, "domino": 6, "ramp_roll": 10, "stack_topple": 4})
    rows = build_rows(root, holdout={"domino", "stack_topple"}, seed=1)
    by_family: dict[str, set[str]] = {}
    for row in rows:
        by_family.setdefault(row["video"].split("/")[0].rsplit("_", 1)[0], set()).add(row["split"])
    assert by_family["domino"] == {"holdout"} and by_family["stack_topple"] == {"holdout"}
    assert by_family["ball_collide"] == by_family["ramp_roll"] == {"train", "val", "test_seen"}
    holdout = sorted(r["video"].split("/")[0] for r in rows if r["split"] == "holdout")
    assert holdout == [f"domino_{i:05d}" for i in range(6)] + [f"stack_topple_{i:05d}" for i in range(4)]
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
    assert [r["split"] for r in rows] == ["train", "holdout", "train"]


REAL_NAMES = ("test_ball_collide", "test_domino", "test_roll_behind_box", "test_ball_falls_in_box",
              "test_pendulum_swing", "test_stack_topple")


def test_one_scene_per_family_still_gets_val(caplog: pytest.LogCaptureFixture) -> None:
    """Real-style names give one scene per family, so no family can spare one for val: the split
    falls back to drawing val at the scene level (round(6 * 0.1) -> at least 1), with a warning."""
    families = {name: family_from_name(name) for name in REAL_NAMES}
    with caplog.at_level("WARNING", logger="data.metadata_split"):
        split = assign_splits(families, seed=0)
    assert Counter(split.values()) == {"train": 5, "val": 1}
    assert split == assign_splits(families, seed=0)
    assert "scene level" in caplog.text and "1 of them of a family left with no training scene" in caplog.text


def test_scene_level_val_prefers_families_that_keep_a_training_scene(caplog: pytest.LogCaptureFixture) -> None:
    """Two scenes of 'a' and one each of b, c: round(4 * 0.1) = 0 per-family, so val falls back to
    one scene, taken from 'a' (which keeps the other in train), not from a family it would empty."""
    families = {"a_0": "a", "a_1": "a", "b_0": "b", "c_0": "c"}
    with caplog.at_level("WARNING", logger="data.metadata_split"):
        split = assign_splits(families, seed=0)
    assert sorted(n for n, s in split.items() if s == "val") in (["a_0"], ["a_1"])
    assert "0 of them of a family left with no training scene" in caplog.text


def test_single_scene_keeps_train_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="data.metadata_split"):
        assert assign_splits({"test_domino": "domino"}) == {"test_domino": "train"}
    assert "val is empty" in caplog.text


def test_cli_writes_val_for_real_style_names(tmp_path: Path) -> None:
    root = tmp_path / "real"
    for name in REAL_NAMES:
        (root / name / LEAF).mkdir(parents=True)
    out = tmp_path / "real.csv"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "make_metadata.py"), str(root), "--out", str(out)],
                          check=True, capture_output=True, text=True)
    with out.open() as handle:
        assert Counter(r["split"] for r in csv.DictReader(handle)) == {"train": 5, "val": 1}
    assert "WARNING" in done.stderr and "scene level" in done.stderr


def test_describe_split_says_what_a_split_holds(tmp_path: Path) -> None:
    """The printed validation label comes from the CSV: which families of a split were trained on."""
    root = _fake_root(tmp_path / "scenes", {"ball_collide": 10, "ramp_roll": 10, "stack_topple": 3})
    rows = build_rows(root, holdout={"stack_topple"}, seed=0)
    rows.append({"video": f"stack_topple_00000/{LEAF.as_posix()}", "prompt": "p", "split": "mixed"})
    rows.append({"video": f"ramp_roll_00000/{LEAF.as_posix()}", "prompt": "p", "split": "mixed"})
    csv_path = tmp_path / "meta.csv"
    write_csv(rows, csv_path)
    assert seen_families(root, csv_path) == {"ball_collide", "ramp_roll"}
    assert describe_split(root, csv_path, "val") == "unseen scenes of seen families (split val, 2 scenes)"
    assert describe_split(root, csv_path, "holdout") == "scenes of families never seen in training (split holdout, 3 scenes)"
    assert describe_split(root, csv_path, "mixed") == ("1 scene(s) of seen families and 1 of families never seen in "
                                                       "training (split mixed, 2 scenes)")


def test_held_out_looks_go_to_holdout_look_unless_their_family_is_held_out(tmp_path: Path) -> None:
    """--holdout-looks: scenes of seen families in a held-out look set form holdout_look, and no
    scene of that look stays in train, val or test_seen; a held-out family wins over a look."""
    root = _fake_root(tmp_path / "scenes", {"ball_collide": 10, "ramp_roll": 10, "stack_topple": 4})
    for i, leaf in enumerate(sorted(root.glob(f"*/{LEAF.as_posix()}"))):
        meta = json.loads((leaf / "scene.json").read_text())
        meta["look"] = {"set": ("studio", "outdoor", "workshop")[i % 3]}
        (leaf / "scene.json").write_text(json.dumps(meta))
    rows = build_rows(root, holdout={"stack_topple"}, seed=0, holdout_looks={"workshop"})
    split = {r["video"].split("/")[0]: r["split"] for r in rows}
    look = {p.parts[-4]: json.loads((p / "scene.json").read_text())["look"]["set"]
            for p in root.glob(f"*/{LEAF.as_posix()}")}
    assert {s for n, s in split.items() if look[n] == "workshop" and not n.startswith("stack")} == {"holdout_look"}
    assert {s for n, s in split.items() if n.startswith("stack")} == {"holdout"}
    assert "workshop" not in {look[n] for n, s in split.items() if s in ("train", "val", "test_seen")}
    assert {"train", "val"} <= set(split.values())
    csv_path = tmp_path / "meta.csv"
    write_csv(rows, csv_path)
    n_look = sum(s == "holdout_look" for s in split.values())
    assert describe_split(root, csv_path, "holdout_look") == (
        f"seen families in looks never seen in training (workshop) (split holdout_look, {n_look} scenes)")
    with pytest.raises(ValueError, match="looks there"):
        build_rows(root, holdout_looks={"no_such_look"})
