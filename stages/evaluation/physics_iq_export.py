"""Our generated scenes with two takes, written as a small benchmark in the official Physics-IQ layout.

Each scene with a second take becomes one scenario seen from one perspective (``perspective-center``):
frame 0 of take 1 is the switch frame (the image an i2v model is conditioned on) and the frames
after it are the testing videos of take 1 and take 2, as mp4 at the scenes' frame rate. IDs follow
the official numbering: take-1 videos 0001..N, take-2 videos N+1..2N. ``descriptions.csv`` holds the
prompt as description and the scenario family as category. The official tool expects 3 perspectives
and 5 s per video; this tool's scorer (`physics_iq_bench`) accepts any perspectives present and the
length the videos have.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from data import physics_iq_layout as layout
from data.layout import RGB_DIR, take_directory
from data.metadata import read_metadata
from data.video_io import write_mp4

PERSPECTIVE = "perspective-center"
SWITCH_JPEG_QUALITY = 95


def scenario_name(scene: str) -> str:
    """``ball_collide_00003`` -> ``trimmed-ball-collide-00003`` (official names carry no underscore)."""
    return "trimmed-" + scene.replace("_", "-")


def take_frames(leaf: Path) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB frames of one take folder, in step order."""
    pngs = sorted((leaf / RGB_DIR).glob("step_*.png"), key=lambda p: int(p.stem.split("_")[1]))
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in pngs])


def at_fps(frames: np.ndarray, scene_fps: float, fps: float) -> np.ndarray:
    """The frames nearest in time to i / fps (as `stages.evaluation.timebase` re-cuts ground truth;
    the official fps changer blends neighbouring frames instead)."""
    if fps == scene_fps:
        return frames
    if fps > scene_fps:
        raise ValueError(f"cannot export {scene_fps:g} fps scenes at a higher {fps:g} fps")
    count = int(np.floor((len(frames) - 1) * fps / scene_fps)) + 1
    return frames[np.floor(np.arange(count) * scene_fps / fps + 0.5).astype(np.int64).clip(0, len(frames) - 1)]


def export_takes(root: str | Path, metadata: str | Path, out: str | Path, split: str | None = None,
                 fps: int = 0) -> list[dict]:
    """Write every metadata scene (of ``split``) that has take 2 under ``out``; returns the rows of
    ``descriptions.csv`` (take 1 first). Scenes without take 2 are skipped (there is nothing to
    normalise them by). ``fps`` (default: the scenes' own) re-cuts the videos to a model's rate."""
    root, out = Path(root), Path(out)
    entries = [e for e in read_metadata(metadata, root=root, split=split)
               if take_directory(root / e.video, 2).is_dir()]
    if not entries:
        raise FileNotFoundError(f"no scene of {metadata} under {root} has a second take (generate_scenes.py --takes 2)")
    rows: list[list[dict]] = [[], []]
    for i, entry in enumerate(entries):
        leaf = root / entry.video
        meta = json.loads((leaf / "scene.json").read_text()) if (leaf / "scene.json").is_file() else {}
        scene_fps = float(meta.get("fps", 30))
        rate = fps or int(scene_fps)
        scenario, family = scenario_name(entry.scene), meta.get("family", "")
        for take in (1, 2):
            frames = at_fps(take_frames(take_directory(leaf, take)), scene_fps, rate)
            id_ = f"{i + 1 + (take - 1) * len(entries):04d}"
            folder = out / layout.TESTING_DIRS[0] / f"{rate}FPS"
            write_mp4(folder / layout.testing_name(id_, rate, PERSPECTIVE, f"take-{take}", scenario), frames[1:], rate)
            if take == 1:
                (out / layout.SWITCH_DIR).mkdir(parents=True, exist_ok=True)
                Image.fromarray(frames[0]).save(out / layout.SWITCH_DIR / layout.switch_frame_name(
                    id_, PERSPECTIVE, scenario), quality=SWITCH_JPEG_QUALITY)
            rows[take - 1].append({"scenario": f"{id_}_{PERSPECTIVE}_take-{take}_{scenario}.mp4",
                                   "description": entry.prompt, "category": family,
                                   "generated_video_name": layout.generated_name(id_, PERSPECTIVE, scenario)})
    with (out / layout.DESCRIPTIONS[0]).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(layout.DESCRIPTION_COLUMNS))
        writer.writeheader()
        writer.writerows(rows[0] + rows[1])
    return rows[0] + rows[1]
