"""Where the files of a sim_physics scene live, and a structural check of one scene.

A scene directory ``ROOT/<scene>/env_0/0/0`` holds three modality folders with one file per
simulator step.  Frames are matched by the step number in the file name, never by listing
order (``step_10`` would sort before ``step_9`` without zero padding).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from data.errors import DataFormatError

RGB_DIR = "rgb"
FLOW_DIR = "motion_vectors"
DEPTH_DIR = "distance_to_camera"
MODALITY_SUFFIX = {RGB_DIR: ".png", FLOW_DIR: ".npy", DEPTH_DIR: ".npy"}
STEP_PATTERN = re.compile(r"^step_(\d+)$")
SCENE_SUBPATH = Path("env_0") / "0" / "0"
"""Take 1 of a scene: the recording metadata rows point at."""
TAKE_SUBPATHS = {1: SCENE_SUBPATH, 2: Path("env_0") / "0" / "1"}
"""Where each take of a scene lives under ``ROOT/<scene>``.  Take 2 is a re-simulation with the
same look, camera and bodies and a small perturbation of the start (``data.sim.takes``); it sits
beside take 1, never at a scene's top level, so scene discovery and metadata never list it as a
scene of its own.  Evaluation reads it for Physics-IQ's physical variance."""


def take_directory(take1: str | Path, take: int) -> Path:
    """The folder of take ``take`` of the scene whose take-1 folder is ``take1`` (``.../env_0/0/0``)."""
    if take not in TAKE_SUBPATHS:
        raise ValueError(f"take must be one of {sorted(TAKE_SUBPATHS)}, got {take}")
    scene = Path(take1).parents[len(SCENE_SUBPATH.parts) - 1]
    return scene / TAKE_SUBPATHS[take]


@dataclass(frozen=True)
class SceneFiles:
    """The per-step files of one scene, already checked to agree across modalities."""

    directory: Path
    steps: tuple[int, ...]
    rgb: tuple[Path, ...]
    flow: tuple[Path, ...]
    depth: tuple[Path, ...]

    @property
    def num_frames(self) -> int:
        return len(self.steps)


def _steps_in(folder: Path, suffix: str) -> dict[int, Path]:
    """Map step number -> file for one modality folder; foreign files are an error."""
    if not folder.is_dir():
        raise DataFormatError(folder, "modality directory is missing")
    found: dict[int, Path] = {}
    for path in folder.iterdir():
        if path.name.startswith("."):
            continue
        match = STEP_PATTERN.match(path.stem)
        if path.suffix.lower() != suffix or match is None:
            raise DataFormatError(path, f"unexpected file; expected step_XXXX{suffix}")
        step = int(match.group(1))
        if step in found:
            raise DataFormatError(path, f"step {step} appears twice (also {found[step].name})")
        found[step] = path
    if not found:
        raise DataFormatError(folder, f"no step_XXXX{suffix} files")
    return found


def _check_contiguous(folder: Path, steps: list[int]) -> None:
    """Flow files are one-step motions, so a missing step would silently corrupt composition."""
    expected = range(steps[0], steps[0] + len(steps))
    if steps != list(expected):
        missing = sorted(set(expected) - set(steps))[:5] or sorted(set(steps) - set(expected))[:5]
        raise DataFormatError(folder, f"gap in step numbers (missing e.g. {missing})")


def scan_scene(directory: str | Path) -> SceneFiles:
    """List and cross-check the files of one scene without reading their contents."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataFormatError(directory, "scene directory does not exist")
    per_modality = {m: _steps_in(directory / m, s) for m, s in MODALITY_SUFFIX.items()}
    rgb_steps = sorted(per_modality[RGB_DIR])
    for modality in (FLOW_DIR, DEPTH_DIR):
        other = sorted(per_modality[modality])
        if other != rgb_steps:
            only_rgb = sorted(set(rgb_steps) - set(other))[:5]
            only_other = sorted(set(other) - set(rgb_steps))[:5]
            raise DataFormatError(
                directory / modality,
                f"{len(other)} frames vs {len(rgb_steps)} in {RGB_DIR}/; steps only in "
                f"{RGB_DIR}: {only_rgb}, only in {modality}: {only_other}",
            )
    _check_contiguous(directory / RGB_DIR, rgb_steps)
    return SceneFiles(
        directory=directory,
        steps=tuple(rgb_steps),
        rgb=tuple(per_modality[RGB_DIR][s] for s in rgb_steps),
        flow=tuple(per_modality[FLOW_DIR][s] for s in rgb_steps),
        depth=tuple(per_modality[DEPTH_DIR][s] for s in rgb_steps),
    )
