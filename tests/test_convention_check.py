"""The convention check tells apart sign flips, a one-step file offset and normalised units.

Each case rewrites the motion-vector files of written scenes (the analytic square of
conftest.py, and the generator's PyBullet scenes) the way a faulty exporter would, and asserts
the check names the reading that fits and the setting that converts it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import AnalyticScene
from data.convention_check import check_scenes, verdict
from data.dataset import DataConfig, SimPhysicsDataset
from data.flow import FlowConvention
from data.sampling import WindowSpec
from scripts.check_flow_convention import main as check_main

Rewrite = Callable[[list[np.ndarray]], list[np.ndarray]]


def _rewrite_flows(root: Path, rewrite: Rewrite) -> None:
    """Replace every scene's motion_vectors files under ``root`` by ``rewrite(all of them)``."""
    for directory in sorted(root.rglob("motion_vectors")):
        paths = sorted(directory.glob("step_*.npy"))
        for path, flow in zip(paths, rewrite([np.load(p) for p in paths])):
            np.save(path, flow.astype(np.float32))


def shifted(flows: list[np.ndarray]) -> list[np.ndarray]:
    """File t holds what belongs in file t+1 (the motion t -> t+1); the last file is zero."""
    return flows[1:] + [np.zeros_like(flows[-1])]


def fraction(flows: list[np.ndarray]) -> list[np.ndarray]:
    """Vectors as fractions of the image width (x) and height (y)."""
    height, width = flows[0].shape[:2]
    return [f / np.asarray([width, height, 1, 1], dtype=np.float32) for f in flows]


def ndc(flows: list[np.ndarray]) -> list[np.ndarray]:
    """Vectors in [-1, 1] image coordinates (2 units span the image)."""
    return [2.0 * f for f in fraction(flows)]


def flip_x(flows: list[np.ndarray]) -> list[np.ndarray]:
    return [f * np.asarray([-1, 1, 1, 1], dtype=np.float32) for f in flows]


def _copy(source_root: Path, csv: Path, tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "scenes"
    shutil.copytree(source_root, root)
    return root, csv


def _run_script(root: Path, csv: Path, capsys, *extra: str) -> tuple[int, str]:
    code = check_main(["--root", str(root), "--metadata", str(csv), *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("rewrite, reading, setting", [
    (shifted, ("replicator", "pixels", "shifted"), "data.flow_timing=shifted"),
    (fraction, ("replicator", "fraction", "current"), "data.flow_units=fraction"),
    (ndc, ("replicator", "ndc", "current"), "data.flow_units=ndc"),
])
def test_script_names_the_setting_for_an_offset_or_normalised_analytic_scene(
        analytic_scene: AnalyticScene, analytic_csv: Path, capsys, rewrite: Rewrite, reading, setting: str) -> None:
    _rewrite_flows(analytic_scene.root, rewrite)
    code, output = _run_script(analytic_scene.root, analytic_csv, capsys)
    assert code == 0, output
    assert f"files read best as {'/'.join(reading)}" in output
    assert setting in output.splitlines()[-1]


@pytest.mark.parametrize("rewrite", [shifted, fraction])
def test_script_fails_when_the_training_settings_do_not_match_the_files(
        analytic_scene: AnalyticScene, analytic_csv: Path, capsys, rewrite: Rewrite) -> None:
    _rewrite_flows(analytic_scene.root, rewrite)
    code, output = _run_script(analytic_scene.root, analytic_csv, capsys, "--flow-convention", "replicator")
    assert code == 1
    assert "FAIL: the files read best as" in output and "but the settings say replicator/pixels/current" in output
    assert str(analytic_scene.root) in output


def test_script_passes_the_analytic_scene_as_documented(analytic_scene, analytic_csv, capsys) -> None:
    code, output = _run_script(analytic_scene.root, analytic_csv, capsys, "--flow-convention", "replicator")
    assert code == 0, output
    assert "files read best as replicator/pixels/current" in output
    assert "FAIL" not in output


@pytest.mark.parametrize("rewrite, reading, named", [
    (None, ("replicator", "pixels", "current"), True),
    (shifted, ("replicator", "pixels", "shifted"), False),
    (fraction, ("replicator", "fraction", "current"), False),
    (ndc, ("replicator", "ndc", "current"), True),
    (flip_x, ("flip_x", "pixels", "current"), True),
])
def test_check_catches_rewritten_generated_scenes(generated_dataset, tmp_path: Path, rewrite, reading, named) -> None:
    """PyBullet scenes written by the generator, then rewritten.  Their motion is small (64 px)
    and steady, so an offset or fraction-vs-ndc is not always told clearly (``named`` False):
    then the check must still fail rather than pass the documented reading."""
    root, csv = _copy(*generated_dataset, tmp_path)
    if rewrite is not None:
        _rewrite_flows(root, rewrite)
    per_scene = check_scenes(root, csv)
    result = verdict(per_scene)
    assert result.ok == named, result.lines
    if named:
        assert result.best.reading == reading, result.lines
    assert verdict(per_scene, expected=FlowConvention()).ok == (rewrite is None), result.lines


def test_forward_files_fail_with_an_explanation(analytic_scene: AnalyticScene, analytic_csv: Path) -> None:
    """A reading the loader cannot convert fails, saying what the files hold."""
    from data.convention_check import ConventionScore, all_readings

    per_scene = {"scene": [ConventionScore(n, 0.01 if (n, u, t) == ("replicator", "pixels", "forward") else 0.2, 100, u, t)
                           for n, u, t in all_readings()]}
    result = verdict(per_scene)
    assert not result.ok and result.best.timing == "forward"
    assert any("no loader setting converts this" in line for line in result.lines)


@pytest.mark.parametrize("rewrite, settings", [
    (shifted, {"flow_timing": "shifted"}),
    (fraction, {"flow_units": "fraction"}),
    (ndc, {"flow_units": "ndc"}),
])
def test_loader_settings_undo_the_rewrite(analytic_scene: AnalyticScene, tmp_path: Path, rewrite, settings) -> None:
    """The settings the check names give the loader the same flow as the documented files."""
    from conftest import write_metadata

    csv = write_metadata(tmp_path / "m.csv", [(f"{analytic_scene.name}/env_0/0/0", "p", "train")])
    base = dict(root=str(analytic_scene.root), metadata=str(csv), height=64, width=64,
                window=WindowSpec(num_frames=4, stride=2))
    frames = np.asarray([1, 3, 5, 7])
    expected = SimPhysicsDataset(DataConfig(**base)).load_window(0, frames)["flow"]
    _rewrite_flows(analytic_scene.root, rewrite)
    converted = SimPhysicsDataset(DataConfig(**base, **settings)).load_window(0, frames)["flow"]
    unconverted = SimPhysicsDataset(DataConfig(**base)).load_window(0, frames)["flow"]
    assert expected.abs().max() == 4.0  # velocity (2, 1) px per step, composed over stride 2
    torch.testing.assert_close(converted, expected, atol=1e-5, rtol=0)
    assert (unconverted - expected).abs().max() > 1.0
