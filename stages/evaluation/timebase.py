"""Ground truth on the backbone's time base: the simulator's frames nearest to each generated frame.

A rollout of T frames from a backbone running at ``fps`` shows times i / fps (i = 0..T-1). The
ground truth it is compared with must cover the same seconds, so its window is re-cut: for each
generated frame, the simulator frame nearest in time (what video frame-rate conversion does; no
blending, so RGB, distance and motion stay those of real simulator frames and moving edges never
mix object and background). Flow targets come from the dataset for exactly those frames, composed
over the simulator steps between them, so images, distances and flow stay consistent.

When the simulator rate is not a multiple of the backbone's (30 vs 24 fps), the chosen frames are
unevenly spaced (1 or 2 steps at 30 -> 24). Their true times are kept: the window's ``dt`` becomes
per-frame intervals (T,), which `heads.physics.kinematics` differentiates exactly. Rounding them
to 1 / fps instead would bias accelerations by up to ~20 %.
"""

from __future__ import annotations

import numpy as np
import torch

from data.dataset import SimPhysicsDataset
from data.scene_meta import fps_from_meta, read_scene_meta


class TimeBaseError(ValueError):
    """The scene cannot be shown at the backbone's frame rate (too short, or slower than it)."""


def resampled_frames(start: int, frames: int, sim_fps: float, backbone_fps: float, available: int) -> np.ndarray:
    """Simulator frame indices nearest in time to backbone frames i / backbone_fps, i < frames."""
    if backbone_fps > sim_fps:
        raise TimeBaseError(f"the backbone's {backbone_fps:g} fps is faster than the data's {sim_fps:g} fps: "
                            f"ground truth would repeat frames")
    index = start + np.floor(np.arange(frames) * sim_fps / backbone_fps + 0.5).astype(np.int64)
    if index[-1] >= available:
        raise TimeBaseError(f"{frames} frames at {backbone_fps:g} fps need {index[-1] - start + 1} simulator frames "
                            f"from frame {start}, the scene has {available}")
    return index


def frame_intervals(index: np.ndarray, sim_fps: float) -> torch.Tensor:
    """Per-frame intervals (T,) in seconds of frames ``index``; entry 0 (no previous frame) repeats entry 1."""
    steps = np.diff(index.astype(np.float64)) / sim_fps
    return torch.from_numpy(np.concatenate([steps[:1], steps])).float()


def scene_fps(dataset: SimPhysicsDataset, scene_index: int) -> float:
    """The scene's recorded frame rate: scene.json's fps, else the data config's."""
    return fps_from_meta(read_scene_meta(dataset.scenes[scene_index].directory), dataset.config.fps)


def backbone_window(dataset: SimPhysicsDataset, scene_index: int, start: int, frames: int,
                    backbone_fps: float) -> dict:
    """The ground-truth window a rollout of ``frames`` frames at ``backbone_fps`` is compared with.

    Same fields as `SimPhysicsDataset.load_window`, with dt replaced by per-frame intervals (T,)
    and 'fps' = backbone_fps (the rate its frames stand for)."""
    sim_fps = scene_fps(dataset, scene_index)
    index = resampled_frames(start, frames, sim_fps, backbone_fps, dataset.scenes[scene_index].num_frames)
    sample = dataset.load_window(scene_index, index)
    sample["dt"], sample["fps"] = frame_intervals(index, sim_fps), float(backbone_fps)
    return sample
