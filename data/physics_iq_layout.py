"""The official Physics-IQ dataset layout and file naming (github.com/google-deepmind/physics-IQ-benchmark).

Facts from its README and `code/` (commit e457754f):
  ROOT/split-videos/testing/{fps}FPS/{ID}_testing-videos_{fps}FPS_{perspective}_{take}_{scenario}.mp4
      (the README draws the folder as ``testing-videos``; the download and scoring scripts use
      ``testing``: both are accepted here)
  ROOT/switch-frames/{ID}_switch-frames_anyFPS_{perspective}_{scenario}.jpg   (i2v conditioning)
  ROOT/descriptions.csv (or descriptions/descriptions.csv): scenario,description,category,generated_video_name
  IDs are 4 digits; take-1 and take-2 recordings of one (scenario, perspective) have different IDs
  (0001-0198 take 1, 0199-0396 take 2); perspectives left, center, right; scenario names start
  with ``trimmed-`` and contain no underscore (names are split on "_").
  Generated videos: MODEL_DIR/{ID}_{anything}.mp4 with the take-1 ID, 5 s long, e.g. the
  ``generated_video_name`` {ID}_{perspective}_{scenario}.mp4.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from data.errors import DataFormatError

TESTING_DIRS = (Path("split-videos") / "testing", Path("split-videos") / "testing-videos")
SWITCH_DIR = Path("switch-frames")
DESCRIPTIONS = (Path("descriptions.csv"), Path("descriptions") / "descriptions.csv")
DESCRIPTION_COLUMNS = ("scenario", "description", "category", "generated_video_name")
TESTING_NAME = re.compile(r"^(\d{4})_testing-videos_(\d+)FPS_(perspective-[a-z]+)_(take-[12])_([^_]+)\.mp4$")
GENERATED_ID = re.compile(r"^(\d{4})_.*\.mp4$")


@dataclass(frozen=True)
class Recording:
    """One real test video: its ID, view, take and scenario."""

    id: str
    perspective: str
    take: str
    scenario: str
    path: Path


@dataclass(frozen=True)
class Case:
    """One (scenario, perspective) to score: take 1 (the reference, whose ID names the generated
    video) and take 2 (the physical variance)."""

    take1: Recording
    take2: Recording
    category: str = ""
    description: str = ""

    @property
    def generated_name(self) -> str:
        return generated_name(self.take1.id, self.take1.perspective, self.take1.scenario)


def testing_name(id_: str, fps: int, perspective: str, take: str, scenario: str) -> str:
    return f"{id_}_testing-videos_{fps}FPS_{perspective}_{take}_{scenario}.mp4"


def switch_frame_name(id_: str, perspective: str, scenario: str) -> str:
    return f"{id_}_switch-frames_anyFPS_{perspective}_{scenario}.jpg"


def generated_name(id_: str, perspective: str, scenario: str) -> str:
    return f"{id_}_{perspective}_{scenario}.mp4"


def testing_dir(root: str | Path, fps: int) -> Path:
    """The folder of the real test videos at ``fps`` (either spelling of the testing folder)."""
    root = Path(root)
    for sub in TESTING_DIRS:
        if (root / sub / f"{fps}FPS").is_dir():
            return root / sub / f"{fps}FPS"
    raise DataFormatError(root, f"no {TESTING_DIRS[0]}/{fps}FPS (or {TESTING_DIRS[1]}/{fps}FPS) folder: not a "
                                f"Physics-IQ root at {fps} fps (the official tool resamples from 30FPS; do that first)")


def read_descriptions(root: str | Path) -> dict[str, dict[str, str]]:
    """ID -> descriptions.csv row ({} when the file is absent)."""
    for sub in DESCRIPTIONS:
        path = Path(root) / sub
        if path.is_file():
            with path.open(newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                missing = [c for c in DESCRIPTION_COLUMNS if c not in (reader.fieldnames or [])]
                if missing:
                    raise DataFormatError(path, f"missing column(s) {missing}")
                return {row["scenario"][:4]: row for row in reader}
    return {}


def read_cases(root: str | Path, fps: int) -> list[Case]:
    """Every take-1 test video at ``fps`` paired with its take 2, sorted by take-1 ID."""
    folder = testing_dir(root, fps)
    recordings = []
    for path in sorted(folder.glob("*.mp4")):
        match = TESTING_NAME.match(path.name)
        if match is None:
            raise DataFormatError(path, "not an official testing-video name "
                                        "({ID}_testing-videos_{fps}FPS_{perspective}_{take}_{scenario}.mp4)")
        recordings.append(Recording(match[1], match[3], match[4], match[5], path))
    if not recordings:
        raise DataFormatError(folder, "no .mp4 test videos")
    second = {(r.scenario, r.perspective): r for r in recordings if r.take == "take-2"}
    descriptions = read_descriptions(root)
    cases = []
    for r in (r for r in recordings if r.take == "take-1"):
        if (r.scenario, r.perspective) not in second:
            raise DataFormatError(r.path, "has no take-2 recording beside it (needed for the physical variance)")
        row = descriptions.get(r.id, {})
        cases.append(Case(r, second[(r.scenario, r.perspective)], row.get("category", ""), row.get("description", "")))
    return cases


def generated_videos(folder: str | Path) -> dict[str, Path]:
    """ID -> generated .mp4 in ``folder`` (named ``{ID}_anything.mp4``); two files with one ID are an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataFormatError(folder, "generated-video folder does not exist")
    found: dict[str, Path] = {}
    for path in sorted(folder.glob("*.mp4")):
        match = GENERATED_ID.match(path.name)
        if match is None:
            raise DataFormatError(path, "generated videos must start with their 4-digit take-1 ID, e.g. 0001_...")
        if match[1] in found:
            raise DataFormatError(path, f"ID {match[1]} also names {found[match[1]].name}")
        found[match[1]] = path
    return found
