"""The violation-pair manifest: bad input fails with one line naming the file and row; scoring
counts ties half and the interval brackets the accuracy."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from data.errors import DataFormatError
from stages.evaluation.pairs import Pair, accuracy_row, pair_outcomes, read_pairs
from stages.evaluation.verifiers import trajectory_score, window_starts
from tests.helpers import REPO


@pytest.fixture
def root(tmp_path):
    for name in ("a", "b", "c"):
        (tmp_path / name / "env_0/0/0").mkdir(parents=True)
    return tmp_path


def write(path, text):
    path.write_text(text)
    return path


def test_a_good_manifest_reads_every_row(root):
    manifest = write(root / "pairs.csv", "plausible,implausible,kind\na/env_0/0/0,b/env_0/0/0,gravity_up\n"
                                         "a/env_0/0/0,c/env_0/0/0,My Own Label\n")
    assert read_pairs(manifest, root) == [Pair("a/env_0/0/0", "b/env_0/0/0", "gravity_up"),
                                          Pair("a/env_0/0/0", "c/env_0/0/0", "My Own Label")]


@pytest.mark.parametrize("text, message", [
    ("plausible,kind\na/env_0/0/0,x\n", "lacks column(s) implausible"),
    ("plausible,implausible,kind\na/env_0/0/0,a/env_0/0/0/,x\n", "row 2: names a/env_0/0/0 as both"),
    ("plausible,implausible,kind\na/env_0/0/0,b/env_0/0/0,x\na/env_0/0/0,missing/env_0/0/0,x\n",
     "row 3: implausible video missing/env_0/0/0 is not a directory"),
    ("plausible,implausible,kind\na/env_0/0/0,b/env_0/0/0,\n", "row 2: empty kind"),
    ("plausible,implausible,kind\n", "has no pairs"),
])
def test_malformed_manifests_name_the_file_and_row(root, text, message):
    manifest = write(root / "pairs.csv", text)
    with pytest.raises(DataFormatError) as error:
        read_pairs(manifest, root)
    assert str(error.value).startswith(str(manifest)) and message in str(error.value)


def test_the_command_turns_a_bad_manifest_into_one_line(root, tmp_path):
    manifest = write(root / "pairs.csv", "plausible,implausible\na/env_0/0/0,b/env_0/0/0\n")
    stage1 = tmp_path / "no_run"
    proc = subprocess.run([sys.executable, str(REPO / "scripts/verify_physics.py"), "--stage1", str(stage1),
                           "--root", str(root), "--pairs", str(manifest), "--out", str(tmp_path / "out")],
                          check=False, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [(f"error: {manifest}: lacks column(s) kind "
                                                "(header must hold plausible,implausible,kind)")]


def test_accuracy_counts_ties_half_and_groups_by_kind():
    pairs = [Pair("p1", "i1", "g"), Pair("p2", "i2", "g"), Pair("p3", "i3", "t"), Pair("p4", "i4", "t")]
    scores = {"p1": 1.0, "i1": 0.0, "p2": 0.0, "i2": 1.0, "p3": 2.0, "i3": 2.0, "p4": float("nan"), "i4": 0.0}
    assert pair_outcomes(pairs, scores).tolist() == [1.0, 0.0, 0.5, 0.5]
    row = accuracy_row(pairs, scores)
    assert row["overall"] == 0.5 and row["by_kind"] == {"g": 0.5, "t": 0.5}
    assert row["ci95"][0] <= 0.5 <= row["ci95"][1] and row["ci95"][0] < row["ci95"][1]
    perfect = accuracy_row(pairs, {**{f"p{i}": 1.0 for i in range(1, 5)}, **{f"i{i}": 0.0 for i in range(1, 5)}})
    assert perfect["overall"] == 1.0 and perfect["ci95"] == [1.0, 1.0]


def test_sliding_windows_cover_the_clip_sharing_one_frame():
    assert window_starts(17, 9) == [0, 8]
    assert window_starts(20, 9) == [0, 8, 11]
    with pytest.raises(ValueError, match="shorter"):
        window_starts(5, 9)


def test_a_feature_trajectory_with_a_jump_scores_below_a_steady_one():
    t = np.linspace(0, 1, 12)[:, None]
    steady = np.concatenate([t, t ** 2, np.sin(t)], axis=1)
    jumped = steady.copy()
    jumped[6:] += np.array([0.0, 0.5, 0.0])
    import torch

    assert trajectory_score(torch.from_numpy(steady))["score"] > trajectory_score(torch.from_numpy(jumped))["score"]
