"""What a scene's optional scene.json says about the camera and time, in the loader's conventions.

The loader's intrinsics put pixel centres on integer coordinates (pixel (x, y) is at x, y).
The generator records its intrinsics with centres at col + 0.5 (its ``pixel_centre`` field), so
they are shifted by half a pixel here.  Gravity is turned into a unit 'down' vector in the
camera frame (x right, y down, z forward), which the physics terms need: a tilted camera does
not see gravity along image-down.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from data.errors import DataFormatError

SCENE_META = "scene.json"
DEFAULT_FPS = 30.0
LEVEL_CAMERA_DOWN = (0.0, 1.0, 0.0)


def read_scene_meta(directory: Path) -> dict | None:
    path = directory / SCENE_META
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (ValueError, OSError) as error:
        raise DataFormatError(path, f"unreadable scene.json ({error})") from error


def intrinsics_from_meta(meta: dict | None, hw: tuple[int, int], fov_deg: float, where: Path) -> np.ndarray:
    """(fx, fy, cx, cy), pixel centres on integers; from scene.json, else a horizontal FOV."""
    height, width = hw
    if meta is None:
        focal = (width / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
        return np.array([focal, focal, (width - 1) / 2.0, (height - 1) / 2.0], dtype=np.float32)
    try:
        camera = meta["camera"]
        fx, fy, cx, cy = (float(camera[k]) for k in ("fx", "fy", "cx", "cy"))
    except (KeyError, TypeError, ValueError) as error:
        raise DataFormatError(where / SCENE_META, f"cannot read camera fx, fy, cx, cy ({error})") from error
    if "+0.5" in str(camera.get("pixel_centre", "")).replace(" ", ""):
        cx, cy = cx - 0.5, cy - 0.5
    return np.array([fx, fy, cx, cy], dtype=np.float32)


def down_from_meta(meta: dict | None) -> np.ndarray:
    """Unit gravity direction in the OpenCV camera frame; image-down when the scene says nothing.

    scene.json's view_matrix is OpenGL's world->camera (row-major): camera x right, y up, z back.
    OpenCV's frame flips y and z.
    """
    if meta is None or "gravity" not in meta or "view_matrix" not in meta.get("camera", {}):
        return np.array(LEVEL_CAMERA_DOWN, dtype=np.float32)
    gravity = np.asarray(meta["gravity"], dtype=np.float64)
    rotation = np.asarray(meta["camera"]["view_matrix"], dtype=np.float64)[:3, :3]
    down_gl = rotation @ (gravity / np.linalg.norm(gravity))
    return (down_gl * np.array([1.0, -1.0, -1.0])).astype(np.float32)


def fps_from_meta(meta: dict | None, default: float = DEFAULT_FPS) -> float:
    return float(meta.get("fps", default)) if meta else default


UNKNOWN_LOOK = "unknown"
"""Look of a scene whose scene.json names none (real data, scenes generated before looks)."""


def scene_look(meta: dict | None) -> str:
    """Name of the scene's look set (``scene.json``: ``look.set``), the unit a look hold-out uses.

    A look set is a named family of appearances (texture kinds, background, light and field-of-view
    ranges); scenes of one set share a style, not their pixels.
    """
    look = (meta or {}).get("look")
    name = look.get("set") if isinstance(look, dict) else None
    return str(name) if name else UNKNOWN_LOOK
