"""Every kind of broken input fails with a message that names the file and the problem.

Each case copies a sound scene, breaks one thing, and checks the error: the path it names
and a phrase of the problem.  Problems in file contents surface when the window is read, so
the window spans the whole scene.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from data.dataset import DataConfig, SimPhysicsDataset
from data.errors import DataFormatError
from data.sampling import WindowSpec
from data.validate import validate_dataset
from tests.conftest import write_metadata

FRAMES = 12  # the analytic scene; generated scenes are trimmed to the same length when copied
SCENE = "slide_square"
VIDEO = f"{SCENE}/env_0/0/0"


def _frame(root: Path, modality: str, step: int) -> Path:
    ext = "png" if modality == "rgb" else "npy"
    return root / VIDEO / modality / f"step_{step:04d}.{ext}"


def _load_all(root: Path, csv: Path, frames: int = FRAMES) -> None:
    config = DataConfig(root=str(root), metadata=str(csv), height=64, width=64,
                        window=WindowSpec(num_frames=frames, stride=1))
    SimPhysicsDataset(config)[0]


# Each case: (id, break(root, csv) -> csv to use, path fragment the message names, phrase).
def _rm_modality(root, csv):
    shutil.rmtree(root / VIDEO / "distance_to_camera")
    return csv


def _drop_last_depth(root, csv):
    _frame(root, "distance_to_camera", FRAMES - 1).unlink()
    return csv


def _renumber_flow(root, csv):
    _frame(root, "motion_vectors", 5).rename(_frame(root, "motion_vectors", 40))
    return csv


def _gap_everywhere(root, csv):
    for modality in ("rgb", "motion_vectors", "distance_to_camera"):
        _frame(root, modality, 4).unlink()
    return csv


def _truncate_png(root, csv):
    path = _frame(root, "rgb", 3)
    path.write_bytes(path.read_bytes()[:60])
    return csv


def _text_as_png(root, csv):
    _frame(root, "rgb", 2).write_text("not an image")
    return csv


def _save(root, modality, step, array):
    np.save(_frame(root, modality, step), array)


CASES: list[tuple[str, Callable, str, str]] = [
    ("missing scene dir", lambda r, c: (shutil.rmtree(r / SCENE), c)[1], "meta.csv", "do not exist"),
    ("missing modality dir", _rm_modality, "distance_to_camera", "modality directory is missing"),
    ("frame counts differ", _drop_last_depth, "distance_to_camera", "11 frames vs 12"),
    ("step numbers differ", _renumber_flow, "motion_vectors", "only in motion_vectors: [40]"),
    ("gap in steps", _gap_everywhere, "rgb", "gap in step numbers"),
    ("truncated png", _truncate_png, "step_0003.png", "corrupt image"),
    ("text file as png", _text_as_png, "step_0002.png", "corrupt image"),
    ("flow wrong shape", lambda r, c: (_save(r, "motion_vectors", 6, np.zeros((64, 64), np.float32)), c)[1],
     "step_0006.npy", "must be (H, W, 4)"),
    ("flow wrong dtype", lambda r, c: (_save(r, "motion_vectors", 7, np.zeros((64, 64, 4), np.int32)), c)[1],
     "step_0007.npy", "not a float type"),
    ("flow has NaN", lambda r, c: (_save(r, "motion_vectors", 8, np.full((64, 64, 4), np.nan, np.float32)), c)[1],
     "step_0008.npy", "non-finite"),
    ("depth wrong shape", lambda r, c: (_save(r, "distance_to_camera", 9, np.ones((64, 64, 3), np.float32)), c)[1],
     "step_0009.npy", "must be (H, W)"),
    ("depth wrong dtype", lambda r, c: (_save(r, "distance_to_camera", 1, np.ones((64, 64), np.int64)), c)[1],
     "step_0001.npy", "not a float type"),
    ("depth wrong size", lambda r, c: (_save(r, "distance_to_camera", 2, np.ones((32, 64), np.float32)), c)[1],
     "step_0002.npy", "frame size (32, 64)"),
    ("garbage npy", lambda r, c: (_frame(r, "motion_vectors", 3).write_bytes(b"\x00garbage"), c)[1],
     "step_0003.npy", "unreadable .npy"),
    ("pickled npy", lambda r, c: (np.save(_frame(r, "motion_vectors", 4), np.array([{}], dtype=object)), c)[1],
     "step_0004.npy", "unreadable .npy"),
    ("foreign file in modality dir", lambda r, c: ((r / VIDEO / "rgb" / "thumb.png").write_bytes(b""), c)[1],
     "thumb.png", "unexpected file"),
    ("duplicate step", lambda r, c: (shutil.copy(_frame(r, "rgb", 1), r / VIDEO / "rgb" / "step_001.png"), c)[1],
     "rgb", "appears twice"),
    ("csv missing column", lambda r, c: (c.write_text("video,caption\nx,y\n"), c)[1], "meta.csv", "missing column"),
    ("csv empty", lambda r, c: (c.write_text("video,prompt,split\n"), c)[1], "meta.csv", "no rows"),
    ("csv absent", lambda r, c: c.with_name("nope.csv"), "nope.csv", "does not exist"),
    ("csv names unknown scene", lambda r, c: write_metadata(c, [("ghost/env_0/0/0", "p", "train")]),
     "meta.csv", "ghost/env_0/0/0"),
]


@pytest.fixture(params=["analytic", "generated"])
def sound_copy(request, tmp_path, analytic_scene, generated_dataset) -> tuple[Path, Path]:
    """A sound scene under the fixed name SCENE with FRAMES frames: the analytic one, or the first
    PyBullet scene of the generated data set (its later frames dropped), plus a CSV naming it."""
    root = tmp_path / "broken"
    if request.param == "analytic":
        shutil.copytree(analytic_scene.root, root)
    else:
        generated_root, _ = generated_dataset
        first = sorted(p for p in generated_root.iterdir() if p.is_dir() and not p.name.startswith("."))[0]
        shutil.copytree(first, root / SCENE)
        for modality in ("rgb", "motion_vectors", "distance_to_camera"):
            for path in (root / VIDEO / modality).iterdir():
                if int(path.stem.split("_")[1]) >= FRAMES:
                    path.unlink()
    return root, write_metadata(tmp_path / "meta.csv", [(VIDEO, "a scene", "train")])


@pytest.mark.parametrize("name,breaker,path_fragment,phrase", CASES, ids=[c[0] for c in CASES])
def test_broken_copy_fails_with_a_clear_message(sound_copy, name, breaker, path_fragment, phrase):
    root, sound_csv = sound_copy
    _load_all(root, sound_csv)  # sound before breaking
    csv = breaker(root, sound_csv)
    with pytest.raises(DataFormatError) as raised:
        _load_all(root, csv)
    message = str(raised.value)
    assert path_fragment in str(raised.value.path) or path_fragment in message, message
    assert phrase in message, message
    # The deep validator reports the same problem without building a data set.
    with pytest.raises(DataFormatError, match=phrase.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        validate_dataset(root, csv)


def test_fewer_frames_than_requested_is_reported_with_the_scene(analytic_scene, analytic_csv):
    with pytest.raises(DataFormatError, match="needs 23") as raised:
        _load_all(analytic_scene.root, analytic_csv, frames=23)
    assert str(analytic_scene.directory) in str(raised.value)


def test_invalid_depth_and_zero_first_flow_are_not_errors(analytic_scene, analytic_csv):
    _save(analytic_scene.root, "distance_to_camera", 3, np.full((64, 64), np.nan, np.float32))
    _save(analytic_scene.root, "distance_to_camera", 4, np.zeros((64, 64), np.float32))
    _load_all(analytic_scene.root, analytic_csv)
    reports = validate_dataset(analytic_scene.root, analytic_csv)
    assert reports[0].frames == FRAMES and 0 < reports[0].valid_depth_fraction < 1


def test_validate_script_exit_codes(tmp_path, analytic_scene, analytic_csv, capsys):
    from scripts.validate_data import main
    assert main(["--root", str(analytic_scene.root), "--metadata", str(analytic_csv)]) == 0
    _frame(analytic_scene.root, "rgb", 0).write_text("x")
    assert main(["--root", str(analytic_scene.root), "--metadata", str(analytic_csv)]) == 1
    assert "step_0000.png" in capsys.readouterr().err
