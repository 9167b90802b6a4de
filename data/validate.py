"""Deep check of a whole data set: read every file once, report the first problem clearly.

Loading checks structure up front and contents lazily; this is the up-front version of the
lazy checks, for a user who wants to know a data set is sound before a long run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.layout import SceneFiles, scan_scene
from data.metadata import read_metadata
from data.readers import DEFAULT_FAR_CLIP_M, read_depth, read_flow_file, read_rgb


@dataclass(frozen=True)
class SceneReport:
    """What a sound scene looks like, for a one-line summary."""

    video: str
    frames: int
    height: int
    width: int
    valid_depth_fraction: float
    max_flow_px: float


def validate_scene(scene: SceneFiles, far_clip: float = DEFAULT_FAR_CLIP_M) -> tuple[int, int, float, float]:
    """Read every frame of every modality; returns (H, W, valid depth fraction, max |flow|)."""
    height, width = read_rgb(scene.rgb[0]).shape[:2]
    valid_pixels, max_flow = 0, 0.0
    for rgb_path, flow_path, depth_path in zip(scene.rgb, scene.flow, scene.depth):
        read_rgb(rgb_path, (height, width))
        flow = read_flow_file(flow_path, (height, width))
        max_flow = max(max_flow, float(np.abs(flow).max()))
        _, valid = read_depth(depth_path, (height, width), far_clip)
        valid_pixels += int(valid.sum())
    return height, width, valid_pixels / (scene.num_frames * height * width), max_flow


def validate_dataset(
    root: str | Path, metadata: str | Path, split: str | None = None, far_clip: float = DEFAULT_FAR_CLIP_M
) -> list[SceneReport]:
    """Check the CSV, every scene's structure and every file's contents."""
    reports = []
    for entry in read_metadata(metadata, root=root, split=split):
        scene = scan_scene(Path(root) / entry.video)
        height, width, fraction, max_flow = validate_scene(scene, far_clip)
        reports.append(SceneReport(entry.video, scene.num_frames, height, width, fraction, max_flow))
    return reports
