"""Second takes: a perturbed re-simulation beside take 1 that readers find and metadata never lists."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.dataset import DataConfig, SimPhysicsDataset
from data.errors import DataFormatError
from data.layout import SCENE_SUBPATH, TAKE_SUBPATHS, take_directory
from data.metadata_split import build_rows, write_csv
from data.sampling import WindowSpec
from data.sim.generate import GenConfig, SceneJob
from data.sim.takes import TakeNoise, generate_take, generate_with_takes
from scripts import generate_scenes, make_metadata

CFG = GenConfig(width=64, height=64, frames=10)
JOBS = [SceneJob("ball_collide", 3), SceneJob("bounce", 4)]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("takes")
    status = generate_with_takes(root, JOBS, CFG, 2, TakeNoise(3.0, 5.0), progress=False)
    assert all(s.endswith("+take2 written") for s in status.values()), status
    return root


def _meta(root: Path, name: str, take: int) -> dict:
    return json.loads((root / name / TAKE_SUBPATHS[take] / "scene.json").read_text())


def _rgb(root: Path, name: str, take: int) -> np.ndarray:
    leaf = root / name / TAKE_SUBPATHS[take] / "rgb"
    return np.stack([np.asarray(Image.open(f), np.float64) for f in sorted(leaf.glob("*.png"))])


def test_take2_shares_look_camera_and_bodies_and_starts_a_few_mm_away(root):
    for job in JOBS:
        one, two = _meta(root, job.name, 1), _meta(root, job.name, 2)
        assert "take" not in one and two["take"]["number"] == 2
        assert (one["camera"], one["look"], one["attempt"]) == (two["camera"], two["look"], two["attempt"])
        assert [o["name"] for o in one["objects"]] == [o["name"] for o in two["objects"]]
        for a, b in zip(one["objects"], two["objects"]):
            start = np.subtract(b["poses"][0][:3], a["poses"][0][:3])
            if a["static"]:
                assert np.allclose(start, 0.0)
                continue
            recorded = two["take"]["offsets"][a["name"]]
            assert np.allclose(start, recorded["position_m"], atol=1e-9)  # frame 0 is the perturbed start
            assert start[2] == 0.0 and 0 < np.linalg.norm(start) < 0.02  # horizontal, a few mm
            assert 0 < np.linalg.norm(recorded["velocity_m_s"]) < 0.03
        # The videos are close (same scene) but not identical (the start moved).
        diff = np.abs(_rgb(root, job.name, 1) - _rgb(root, job.name, 2))
        assert 0 < diff.mean() < 10


def test_take2_is_reproducible_and_zero_noise_changes_nothing(root, tmp_path):
    job = JOBS[0]
    before = _meta(root, job.name, 2)
    assert generate_take(root, job, CFG, TakeNoise(3.0, 5.0)) == "skipped"
    assert generate_take(root, job, CFG, TakeNoise(3.0, 5.0), overwrite=True) == "written"
    again = _meta(root, job.name, 2)
    assert again["take"] == before["take"] and again["objects"] == before["objects"]
    generate_with_takes(tmp_path, [job], CFG, 2, TakeNoise(0.0, 0.0), progress=False)
    first = _meta(tmp_path, job.name, 1)["objects"]
    still = _meta(tmp_path, job.name, 2)["objects"]
    for a, b in zip(first, still):
        assert np.allclose(a["poses"], b["poses"], atol=1e-6)


def test_metadata_lists_take1_only_and_the_reader_finds_take2(root, tmp_path, caplog):
    rows = build_rows(root, (1.0, 0.0, 0.0))
    assert sorted(r["video"] for r in rows) == sorted((Path(j.name) / SCENE_SUBPATH).as_posix() for j in JOBS)
    csv = tmp_path / "meta.csv"
    caplog.set_level("INFO")
    make_metadata.main([str(root), "--out", str(csv), "--split", "1", "0", "0"])
    assert "2 of 2 scenes have a second take" in caplog.text
    config = DataConfig(root=str(root), metadata=str(csv), height=64, width=64,
                        window=WindowSpec(num_frames=5, stride=1))
    data = SimPhysicsDataset(config, split="train")
    assert all(data.has_take(i, 2) for i in range(len(data.scenes)))
    take2 = data.take(2)
    assert take2.scenes[0].directory == take_directory(data.scenes[0].directory, 2)
    a, b = data.load_window(0, np.arange(5)), take2.load_window(0, np.arange(5))
    assert a["scene"] == b["scene"] and torch_close(a["intrinsics"], b["intrinsics"])
    assert not np.array_equal(a["rgb"].numpy(), b["rgb"].numpy())


def test_a_missing_take_is_an_error_naming_the_folder(tmp_path):
    generate_with_takes(tmp_path, [JOBS[1]], CFG, 2, progress=False)
    write_csv(build_rows(tmp_path, (1.0, 0.0, 0.0)), tmp_path / "m.csv")
    leaf = tmp_path / JOBS[1].name / TAKE_SUBPATHS[2]
    for png in (leaf / "rgb").glob("*.png"):
        png.unlink()
    config = DataConfig(root=str(tmp_path), metadata=str(tmp_path / "m.csv"), height=64, width=64,
                        window=WindowSpec(num_frames=5, stride=1))
    with pytest.raises(DataFormatError, match="env_0/0/1"):
        SimPhysicsDataset(config).take(2)


def test_generate_scenes_cli_takes_option(tmp_path):
    generate_scenes.main(["--out", str(tmp_path), "--families", "bounce", "--scenes-per-family", "1",
                          "--size", "64", "64", "--frames", "6", "--takes", "2", "--take-position-mm", "1",
                          "--no-shadows", "--log-level", "WARNING"])
    meta = _meta(tmp_path, "bounce_00000", 2)
    assert meta["take"]["noise"] == {"position_mm": 1.0, "velocity_mm_s": 5.0}


def torch_close(a, b) -> bool:
    return bool(np.allclose(a.numpy(), b.numpy()))
