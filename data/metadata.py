"""The metadata CSV: one row per clip, columns ``video,prompt`` (+ optional ``split`` and others).

``video`` is the scene path relative to the data root, e.g. ``test_ball_collide/env_0/0/0``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from data.errors import DataFormatError

REQUIRED_COLUMNS = ("video", "prompt")


@dataclass(frozen=True)
class ClipEntry:
    """One metadata row: where the clip is, its prompt, and its split ('' when the CSV has none)."""

    video: str
    prompt: str
    split: str = ""

    @property
    def scene(self) -> str:
        """The scene name: the first path component of ``video``."""
        return Path(self.video).parts[0]


def read_metadata(csv_path: str | Path, root: str | Path | None = None, split: str | None = None) -> list[ClipEntry]:
    """Read and check a metadata CSV; optionally keep one split and check the scenes exist.

    Raises DataFormatError naming the CSV (and the row) for a missing file, a missing column,
    no rows, an empty video field, a split the CSV lacks, or a scene absent from ``root``.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataFormatError(csv_path, "metadata CSV does not exist")
    with csv_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise DataFormatError(csv_path, f"missing column(s) {missing}; found {columns} (need video,prompt)")
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    if not rows:
        raise DataFormatError(csv_path, "metadata CSV has a header but no rows")
    entries = []
    for line, row in enumerate(rows, start=2):
        if not row["video"]:
            raise DataFormatError(csv_path, f"row {line}: empty 'video' field")
        entries.append(ClipEntry(video=row["video"], prompt=row["prompt"], split=row.get("split", "")))
    if split is not None:
        entries = _select_split(csv_path, entries, split)
    if root is not None:
        _check_scenes_exist(csv_path, entries, Path(root))
    return entries


def _select_split(csv_path: Path, entries: list[ClipEntry], split: str) -> list[ClipEntry]:
    if all(not e.split for e in entries):
        raise DataFormatError(csv_path, f"asked for split {split!r} but the CSV has no 'split' column values")
    chosen = [e for e in entries if e.split == split]
    if not chosen:
        present = sorted({e.split for e in entries})
        raise DataFormatError(csv_path, f"no rows with split {split!r}; splits present: {present}")
    return chosen


def _check_scenes_exist(csv_path: Path, entries: list[ClipEntry], root: Path) -> None:
    if not root.is_dir():
        raise DataFormatError(root, "data root does not exist")
    absent = [e.video for e in entries if not (root / e.video).is_dir()]
    if absent:
        raise DataFormatError(
            csv_path, f"{len(absent)} clip(s) named in the CSV do not exist under {root}: {absent[:5]}"
        )
