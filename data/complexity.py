"""How hard a scene is to read, from its scene.json alone: the order a curriculum follows.

Four counts, each something a flow or depth head finds harder:

- ``moving_bodies``: objects that are not static and move (> 1 cm or > 5 degrees) over the scene;
  each is one more independent motion to get right.
- ``contact_events``: contact onsets after the first frame involving a moving body (a pair of
  bodies, scenery included, that touches at frame t but not at t - 1): collisions, landings,
  where the motion changes abruptly.
- ``contact_fraction``: fraction of frames in which a moving body touches another body that can
  move (not the floor, the wall or a static object such as a ramp or table): pushing, stacking,
  bodies rolling against each other.
- ``occluded_fraction``: fraction of frames in which a moving body is at least partly hidden by
  a nearer object (its projected bounding disc overlaps a nearer object's disc): flow and depth
  change discontinuously there, and the composed flow goes invalid.

``score`` adds them with the fractions weighted by ``FRACTION_WEIGHT`` (a scene whose bodies touch
or hide in every frame counts like two more collisions).  Curricula use ranks of the score, so
only its order matters.  Unknown shapes get a bounding radius from whatever size fields they
carry (or ``DEFAULT_RADIUS_M``); a scene without scene.json has no score (callers rank it in the
middle).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

MOVING_DISTANCE_M = 0.01
MOVING_ANGLE_RAD = math.radians(5.0)
DEFAULT_RADIUS_M = 0.1
FRACTION_WEIGHT = 2.0


@dataclass(frozen=True)
class SceneComplexity:
    """The counts above for one scene."""

    moving_bodies: int
    contact_events: int
    contact_fraction: float
    occluded_fraction: float

    @property
    def score(self) -> float:
        return (self.moving_bodies + self.contact_events
                + FRACTION_WEIGHT * (self.contact_fraction + self.occluded_fraction))


def _length(value) -> float:
    """A size field as one length: a number, or the largest of a list ([r] or per-part sizes)."""
    return float(np.max(np.asarray(value, dtype=np.float64)))


def bounding_radius(obj: dict) -> float:
    """Radius (m) of a sphere around the object, from its size fields (any shape)."""
    if "half_extents" in obj:
        return float(np.linalg.norm(np.asarray(obj["half_extents"], dtype=np.float64)))
    if "radius" in obj:
        extra = next((_length(obj[k]) for k in ("half_height", "half_length") if k in obj), 0.0)
        extra = extra or next((_length(obj[k]) / 2 for k in ("height", "length") if k in obj), 0.0)
        return _length(obj["radius"]) + extra
    return DEFAULT_RADIUS_M


def _moves(poses: np.ndarray) -> bool:
    if len(poses) < 2:
        return False
    shift = np.linalg.norm(poses[:, :3] - poses[0, :3], axis=1).max()
    dots = np.clip(np.abs(poses[:, 3:7] @ poses[0, 3:7]), 0.0, 1.0)
    return bool(shift > MOVING_DISTANCE_M or (2.0 * np.arccos(dots)).max() > MOVING_ANGLE_RAD)


def _contact_sets(meta: dict) -> list[set[tuple[int, int]]]:
    return [{tuple(sorted(int(b) for b in pair)) for pair in frame} for frame in meta.get("contacts", [])]


def _occluded_frames(objects: list[dict], movers: set[int], camera: dict) -> np.ndarray:
    """(T,) bool: some moving body's projected disc overlaps the disc of a nearer object."""
    view = np.asarray(camera["view_matrix"], dtype=np.float64)
    fx, fy, cx, cy = (float(camera[k]) for k in ("fx", "fy", "cx", "cy"))
    frames = min(len(o["poses"]) for o in objects)
    centres = np.stack([np.asarray(o["poses"], dtype=np.float64)[:frames, :3] for o in objects])  # (N, T, 3)
    cam = centres @ view[:3, :3].T + view[:3, 3]
    depth = -cam[..., 2]  # OpenGL camera looks along -z
    ahead = depth > 1e-6
    safe = np.where(ahead, depth, 1.0)
    u, v = cx + fx * cam[..., 0] / safe, cy - fy * cam[..., 1] / safe
    radius = np.array([bounding_radius(o) for o in objects])[:, None] * max(fx, fy) / safe
    hidden = np.zeros(frames, dtype=bool)
    ids = [int(o.get("body_id", i)) for i, o in enumerate(objects)]
    for m, body in enumerate(ids):
        if body not in movers:
            continue
        for o in range(len(objects)):
            if o == m:
                continue
            overlap = np.hypot(u[m] - u[o], v[m] - v[o]) < radius[m] + radius[o]
            hidden |= overlap & (depth[o] < depth[m]) & ahead[m] & ahead[o]
    return hidden


def scene_complexity(meta: dict | None) -> SceneComplexity | None:
    """The complexity of a scene from its scene.json (None when there is none to read)."""
    if not meta or not meta.get("objects"):
        return None
    objects = [o for o in meta["objects"] if o.get("poses")]
    movers = {int(o.get("body_id", i)) for i, o in enumerate(objects)
              if not o.get("static", False) and _moves(np.asarray(o["poses"], dtype=np.float64))}
    dynamic = {int(o.get("body_id", i)) for i, o in enumerate(objects) if not o.get("static", False)}
    contacts = _contact_sets(meta)
    onsets = sum(len({p for p in now - before if movers & set(p)}) for before, now in pairwise(contacts))
    touching = [any(bool(movers & set(p)) and set(p) <= dynamic for p in now) for now in contacts]
    camera = meta.get("camera", {})
    occluded = 0.0
    if objects and all(k in camera for k in ("view_matrix", "fx", "fy", "cx", "cy")):
        occluded = float(_occluded_frames(objects, movers, camera).mean())
    return SceneComplexity(len(movers), onsets, float(np.mean(touching)) if touching else 0.0, occluded)


def complexity_ranks(scores: Sequence[float | None]) -> np.ndarray:
    """Ranks in [0, 1] (0 = simplest); tied scores share their mean rank, and a missing score
    (None) sits in the middle, 0.5."""
    known = [i for i, s in enumerate(scores) if s is not None]
    ranks = np.full(len(scores), 0.5)
    if len(known) < 2:
        return ranks
    values = np.array([scores[i] for i in known], dtype=np.float64)
    order = values.argsort(kind="stable")
    position = np.empty(len(values))
    position[order] = np.arange(len(values), dtype=np.float64)
    for value in np.unique(values):  # ties: mean position
        tie = values == value
        position[tie] = position[tie].mean()
    ranks[known] = position / (len(values) - 1)
    return ranks
