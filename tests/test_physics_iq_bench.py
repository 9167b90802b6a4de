"""A small synthetic Physics-IQ benchmark in the official layout, built from generated scenes with two
takes (mp4 files), scored without generating: take 2 as the model scores 100 %, a frozen model what
the formula says; mp4 round trips; names and missing files fail clearly."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from data import physics_iq_layout as layout
from data.errors import DataFormatError
from data.metadata_split import build_rows, write_csv
from data.sim.generate import GenConfig, SceneJob
from data.sim.takes import TakeNoise, generate_with_takes
from data.video_io import read_mp4, video_fps, write_mp4
from heads import iq_score
from heads.video_metrics import motion_masks, physics_iq_metrics
from stages.evaluation import physics_iq_bench as bench
from stages.evaluation.codec_effect import codec_effect
from stages.evaluation.physics_iq_export import export_takes, take_frames

JOBS = [SceneJob("ball_collide", 1), SceneJob("bounce", 2), SceneJob("bounce", 3)]
CFG = GenConfig(width=64, height=64, frames=16, shadows=False)


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory) -> tuple[Path, Path]:
    """(scene root, benchmark root): 3 scenes with two takes, exported in the official layout."""
    tmp = tmp_path_factory.mktemp("piq")
    generate_with_takes(tmp / "scenes", JOBS, CFG, 2, TakeNoise(3.0, 5.0), progress=False)
    write_csv(build_rows(tmp / "scenes", (1.0, 0.0, 0.0)), tmp / "meta.csv")
    export_takes(tmp / "scenes", tmp / "meta.csv", tmp / "bench")
    return tmp / "scenes", tmp / "bench"


def test_the_export_follows_the_official_layout(benchmark):
    _, bench_root = benchmark
    videos = sorted(p.name for p in (bench_root / "split-videos/testing/30FPS").iterdir())
    assert videos[0] == "0001_testing-videos_30FPS_perspective-center_take-1_trimmed-ball-collide-00001.mp4"
    assert videos[3] == "0004_testing-videos_30FPS_perspective-center_take-2_trimmed-ball-collide-00001.mp4"
    assert all(layout.TESTING_NAME.match(v) for v in videos) and len(videos) == 6
    assert (bench_root / "switch-frames/0002_switch-frames_anyFPS_perspective-center_trimmed-bounce-00002.jpg").is_file()
    cases = layout.read_cases(bench_root, 30)
    assert [(c.take1.id, c.take2.id, c.category) for c in cases] == [
        ("0001", "0004", "ball_collide"), ("0002", "0005", "bounce"), ("0003", "0006", "bounce")]
    assert cases[0].generated_name == "0001_perspective-center_trimmed-ball-collide-00001.mp4"
    assert video_fps(cases[0].take1.path) == 30.0 and read_mp4(cases[0].take1.path).shape == (15, 64, 64, 3)


def test_take2_as_the_model_scores_100_and_a_frozen_model_what_the_formula_says(benchmark, tmp_path):
    _, bench_root = benchmark
    ideal = bench.score_folder(bench_root, bench.copy_takes_as_generated(bench_root, tmp_path / "ideal", 30),
                               downsample=1, samples=50)
    assert ideal["all"]["score"] == 100.0
    assert iq_score.score(ideal["records"], official_rounding=False) == pytest.approx(100.0)
    assert set(ideal["per_family"]) == {"ball_collide", "bounce"}

    frozen = bench.score_folder(bench_root, bench.frozen_as_generated(bench_root, tmp_path / "frozen", 30),
                                downsample=1, samples=50)
    r = frozen["records"]
    for case, x in zip(layout.read_cases(bench_root, 30), r):
        # No predicted motion: spatial IoUs are 0 where take 1 moves, 1 (both empty) where it does not.
        still = float(not motion_masks(read_mp4(case.take1.path)).any())
        assert (x["spatial_iou"], x["weighted_spatial_iou"]) == (still, still)
    mean = {k: np.mean([x[k] for x in r]) for k in r[0] if k.startswith(("spati", "weighted", "mse", "variance"))}
    v = {k: round(mean[f"variance_{k}"], 5 if k == "spatial_iou" else 4)
         for k in ("spatiotemporal_iou", "spatial_iou", "weighted_spatial_iou", "mse")}
    expected = 100 * ((mean["spatiotemporal_iou"] / v["spatiotemporal_iou"] + mean["spatial_iou"] / v["spatial_iou"]
                       + mean["weighted_spatial_iou"] / v["weighted_spatial_iou"]) / 3 - (mean["mse"] - v["mse"]))
    assert frozen["all"]["score"] == round(max(expected, 0.0), 2)
    assert 0.0 < frozen["all"]["score"] < 60.0
    table = bench.leaderboard([frozen, ideal])
    assert table.index("| ideal |") < table.index("| frozen |")


@pytest.mark.parametrize("codec", ["mp4v", "libx264"])
def test_mp4_round_trip_changes_pixels_a_little_and_masks_hardly(benchmark, tmp_path, codec):
    """The codec measurement documented in docs/physics_iq.md, on the tiny scenes."""
    scenes, _ = benchmark
    frames = take_frames(scenes / JOBS[0].name / "env_0/0/0")
    decoded = read_mp4(write_mp4(tmp_path / "t.mp4", frames, 30, codec))
    assert decoded.shape == frames.shape
    error = np.abs(decoded.astype(float) - frames).mean()
    assert 0 < error < 8  # lossy, but close
    m = physics_iq_metrics(decoded, frames, downsample=1)
    assert m["mse"] < 2e-3 and m["spatial_iou"] > 0.6


def test_bad_names_and_missing_videos_are_errors_naming_the_file(benchmark, tmp_path):
    _, bench_root = benchmark
    empty = tmp_path / "gen"
    empty.mkdir()
    (empty / "clip.mp4").write_bytes(b"")
    with pytest.raises(DataFormatError, match="clip.mp4.*4-digit"):
        bench.score_folder(bench_root, empty)
    partial = bench.copy_takes_as_generated(bench_root, tmp_path / "partial", 30)
    (partial / "0002_perspective-center_trimmed-bounce-00002.mp4").unlink()
    with pytest.raises(DataFormatError, match="1 of 3 generated videos missing.*0002_perspective-center"):
        bench.score_folder(bench_root, partial, downsample=1)
    broken = tmp_path / "broken"
    shutil.copytree(bench_root, broken)
    next((broken / "split-videos/testing/30FPS").glob("*take-2*")).unlink()
    with pytest.raises(DataFormatError, match="0001_testing-videos.*no take-2"):
        layout.read_cases(broken, 30)
    with pytest.raises(DataFormatError, match="24FPS"):
        layout.read_cases(bench_root, 24)


def test_codec_effect_reports_self_and_variance_per_scene(benchmark, tmp_path):
    scenes, _ = benchmark
    write_csv(build_rows(scenes, (1.0, 0.0, 0.0)), tmp_path / "m.csv")
    effect = codec_effect(scenes, tmp_path / "m.csv")
    assert set(effect["scenes"]) == {j.name for j in JOBS}
    assert 0 < effect["mean"]["self"]["mse"] < 2e-3 and effect["mean"]["pixel_abs_error"] > 0
    assert effect["mean"]["variance_lossless"]["spatial_iou"] < 1.0
