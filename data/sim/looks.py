"""Look sets: named families of appearance a scene draws its floor, backdrop, light and camera from.

Heads trained on one look learn that look.  A look *set* fixes which texture kinds, colour ranges,
background kind, light ranges and field-of-view range a scene may use; the scene draws its values
within the set from its own stream of the seed (``look_rng``), separate from the physics stream, so
the same family and seed move identically under every look.  Holding a set out of training
(``make_metadata.py --holdout-looks``) then measures transfer to an unseen appearance.

Everything drawn is written to ``scene.json["look"]`` (``set`` names the set) and the camera's
placement to ``scene.json["camera"]``.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

Range = tuple[float, float]


@dataclass(frozen=True)
class LookSet:
    """The ranges one named look draws from (colours are HSV value/saturation ranges of two tones)."""

    name: str
    floor_kinds: tuple[str, ...]
    background: str
    """'sky' (nothing behind the scene: invalid depth), 'wall' (a textured wall) or 'plane' (a plain
    back plane facing the camera)."""
    background_kinds: tuple[str, ...] = ("stripes",)
    background_distance: Range = (2.0, 3.5)
    """Metres from the action's centre to the wall or plane, behind it."""
    hue: Range = (0.0, 1.0)
    saturation: Range = (0.1, 0.5)
    value: Range = (0.45, 0.9)
    contrast: Range = (0.35, 0.65)
    """Second tone's brightness as a fraction of the first's."""
    light_elevation_deg: Range = (35.0, 75.0)
    light_azimuth_deg: Range = (-180.0, 180.0)
    light_color: Range = (0.85, 1.0)
    ambient: Range = (0.4, 0.7)
    diffuse: Range = (0.4, 0.7)
    specular: Range = (0.0, 0.3)
    shadow_prob: float = 0.7
    fov_deg: Range = (40.0, 55.0)
    object_textures: tuple[str, ...] = ("stripes", "checker", "dots")
    object_texture_prob: float = 0.6
    """Pattern painted on moving bodies in their own colour (so rolling shows), drawn with probability
    ``object_texture_prob`` and recorded as ``object_texture`` (None: plain colours); the cells
    each body got (0 = too small to carry it) are recorded as ``body_pattern_cells``."""


LOOK_SETS: dict[str, LookSet] = {s.name: s for s in (
    LookSet("studio", ("checker",), "wall", ("stripes",), (2.3, 2.7), saturation=(0.05, 0.3), fov_deg=(40.0, 50.0)),
    LookSet("outdoor", ("noise",), "sky", hue=(0.18, 0.4), saturation=(0.3, 0.7), value=(0.35, 0.75),
            light_elevation_deg=(25.0, 80.0), ambient=(0.3, 0.6), diffuse=(0.6, 0.9), shadow_prob=0.9,
            fov_deg=(55.0, 75.0)),
    LookSet("tiled_hall", ("tiles",), "wall", ("bricks",), (1.8, 3.5), hue=(0.0, 0.12), saturation=(0.2, 0.6),
            fov_deg=(35.0, 50.0)),
    LookSet("workshop", ("planks",), "plane", ("noise",), (1.5, 3.0), hue=(0.05, 0.12), saturation=(0.35, 0.7),
            light_color=(0.75, 0.95), specular=(0.1, 0.5), fov_deg=(45.0, 65.0)),
    LookSet("gallery", ("dots", "stripes"), "plane", ("dots", "checker"), (2.0, 4.0), saturation=(0.4, 0.9),
            ambient=(0.25, 0.45), diffuse=(0.6, 0.9), shadow_prob=0.5, fov_deg=(38.0, 60.0)),
)}

FOV_LIMITS = (35.0, 75.0)
YAW_DEG = 30.0
PITCH_DEG = 8.0
ROLL_DEG = 4.0


def look_rng(family: str, seed: int, attempt: int) -> np.random.Generator:
    """The look's own stream of the scene seed (the physics uses another)."""
    return np.random.default_rng([seed, zlib.crc32(family.encode()), attempt, 0x100C])


def _u(rng: np.random.Generator, r: Range) -> float:
    return float(rng.uniform(*r))


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + h * 6.0) % 6.0
    return v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _tones(rng: np.random.Generator, look: LookSet) -> list[list[float]]:
    first = _hsv_to_rgb(_u(rng, look.hue), _u(rng, look.saturation), _u(rng, look.value))
    second = first * _u(rng, look.contrast)
    return [first.round(4).tolist(), second.round(4).tolist()]


def draw_look(rng: np.random.Generator, sets: tuple[str, ...] | None = None) -> dict:
    """A look for one scene: its set (uniform over ``sets``, default all) and every value within it."""
    names = tuple(sets) if sets else tuple(LOOK_SETS)
    unknown = sorted(set(names) - set(LOOK_SETS))
    if unknown:
        raise ValueError(f"unknown look sets {unknown}; known: {sorted(LOOK_SETS)}")
    look = LOOK_SETS[names[int(rng.integers(len(names)))]]
    elevation, azimuth = math.radians(_u(rng, look.light_elevation_deg)), math.radians(_u(rng, look.light_azimuth_deg))
    background = {"kind": look.background}
    if look.background != "sky":
        background.update(texture=str(rng.choice(look.background_kinds)), tones=_tones(rng, look),
                          distance=_u(rng, look.background_distance))
    else:
        background.update(horizon=_hsv_to_rgb(_u(rng, (0.5, 0.62)), _u(rng, (0.05, 0.25)), _u(rng, (0.8, 0.95))).tolist(),
                          zenith=_hsv_to_rgb(_u(rng, (0.55, 0.65)), _u(rng, (0.4, 0.7)), _u(rng, (0.6, 0.85))).tolist())
    textured = rng.random() < look.object_texture_prob
    return {
        "set": look.name,
        "floor": {"texture": str(rng.choice(look.floor_kinds)), "tones": _tones(rng, look)},
        "background": background,
        "light": {
            "direction": [math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth),
                          math.sin(elevation)],
            "color": [_u(rng, look.light_color) for _ in range(3)],
            "ambient": _u(rng, look.ambient),
            "diffuse": _u(rng, look.diffuse),
            "specular": _u(rng, look.specular),
            "shadows": bool(rng.random() < look.shadow_prob),
        },
        "fov_y_deg": _u(rng, look.fov_deg),
        "object_texture": str(rng.choice(look.object_textures)) if textured else None,
        "texture_seed": int(rng.integers(2**31)),
    }


@dataclass(frozen=True)
class Placement:
    """Where the camera sits relative to the family's aim: an orbit about the target."""

    fov_y_deg: float
    distance: float
    yaw_deg: float
    pitch_deg: float
    roll_deg: float


def draw_placement(rng: np.random.Generator, fov_y_deg: float, nominal_fov_deg: float,
                   nominal_distance: float) -> Placement:
    """Yaw, pitch and roll about the aim; the distance keeps the view's width at the target as the
    family's nominal camera had it, so the action stays in frame at any field of view."""
    fov = float(np.clip(fov_y_deg, *FOV_LIMITS))
    width_ratio = math.tan(math.radians(nominal_fov_deg) / 2) / math.tan(math.radians(fov) / 2)
    return Placement(fov_y_deg=fov, distance=nominal_distance * width_ratio * float(rng.uniform(0.95, 1.1)),
                     yaw_deg=float(rng.uniform(-YAW_DEG, YAW_DEG)), pitch_deg=float(rng.uniform(-PITCH_DEG, PITCH_DEG)),
                     roll_deg=float(rng.uniform(-ROLL_DEG, ROLL_DEG)))
