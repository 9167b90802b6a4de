"""What an mp4 round trip does to the Physics-IQ metrics, measured on our scenes' takes.

The official tool only reads mp4, so every video it scores went through a lossy codec. Here each
take is compared losslessly (PNG frames) and after encoding with `data.video_io` (OpenCV, mp4v):
  self      take 1 after the round trip scored against take 1 itself: what the codec alone costs
            (a lossless copy has IoUs 1 and MSE 0);
  variance  take 2 vs take 1, lossless and with both coded: how the physical variance moves.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from data.layout import take_directory
from data.metadata import read_metadata
from data.video_io import CODEC, read_mp4, write_mp4
from heads.video_metrics import METRIC_NAMES, physics_iq_metrics
from stages.evaluation.physics_iq_export import take_frames


def round_trip(frames: np.ndarray, fps: float, folder: Path, codec: str = CODEC) -> np.ndarray:
    """frames (T, H, W, 3) uint8 -> the same after writing and reading an mp4."""
    return read_mp4(write_mp4(folder / "clip.mp4", frames, fps, codec))


def scene_effect(take1: np.ndarray, take2: np.ndarray, fps: float, downsample: int, codec: str = CODEC) -> dict:
    """self / variance_lossless / variance_coded metrics of one scene (frames after the switch frame)."""
    with tempfile.TemporaryDirectory() as tmp:
        coded1, coded2 = (round_trip(t, fps, Path(tmp), codec) for t in (take1, take2))
    crop = (slice(None), slice(0, coded1.shape[1]), slice(0, coded1.shape[2]))  # odd sizes lose a row/column
    take1, take2 = take1[crop], take2[crop]
    return {"self": physics_iq_metrics(coded1, take1, downsample=downsample),
            "variance_lossless": physics_iq_metrics(take2, take1, downsample=downsample),
            "variance_coded": physics_iq_metrics(coded2, coded1, downsample=downsample),
            "pixel_abs_error": float(np.abs(coded1.astype(np.float64) - take1).mean())}


def codec_effect(root: str | Path, metadata: str | Path, split: str | None = None, downsample: int = 1,
                 fps: float = 30.0, codec: str = CODEC) -> dict:
    """Per-scene effects and their means over every scene (of ``split``) with a second take."""
    root = Path(root)
    rows = {}
    for entry in read_metadata(metadata, root=root, split=split):
        leaf = root / entry.video
        if take_directory(leaf, 2).is_dir():
            take1, take2 = take_frames(leaf)[1:], take_frames(take_directory(leaf, 2))[1:]
            rows[entry.scene] = scene_effect(take1, take2, fps, downsample, codec)
    if not rows:
        raise FileNotFoundError(f"no scene of {metadata} has a second take (generate_scenes.py --takes 2)")
    mean = {part: {k: float(np.mean([r[part][k] for r in rows.values()])) for k in METRIC_NAMES}
            for part in ("self", "variance_lossless", "variance_coded")}
    mean["pixel_abs_error"] = float(np.mean([r["pixel_abs_error"] for r in rows.values()]))
    return {"scenes": rows, "mean": mean, "downsample": downsample, "codec": codec}
