"""What every scenario builder shares: the camera aim it returns and small placement helpers.

Builders live in ``families`` (Physics-IQ-like scenarios) and ``families_mechanics`` (textbook
mechanics: pendulums, bounces, slides, levers); the registry of both is ``families.FAMILIES``.
The layouts keep the action inside a ~2.6 m wide region around the origin that the default
camera sees; the y axis points away from the camera, z up, the floor is z = 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from data.sim.bodies import SimObject
from data.sim.shapes import Part, dumbbell, hammer, l_bracket, shifted
from data.sim.world import GRAVITY, World

BODY_KINDS = ("sphere", "box", "cylinder", "capsule", "compound")
"""Shapes :func:`spawn_any` draws from."""
COMPOUND_FORMS = ("dumbbell", "hammer", "l_bracket")


@dataclass(frozen=True)
class CameraAim:
    """Nominal camera placement for a family (jittered per scene later)."""

    position: tuple[float, float, float] = (0.0, -2.4, 0.95)
    target: tuple[float, float, float] = (0.0, 0.0, 0.35)
    fov_y_deg: float = 45.0


Builder = Callable[[World], CameraAim]


def uniform(world: World, low: float, high: float) -> float:
    """One draw from the scene's RNG (every builder draws through it, so the seed fixes all)."""
    return float(world.rng.uniform(low, high))


def y_about_quat(angle: float) -> tuple[float, float, float, float]:
    """Quaternion for a rotation about +y; positive angles tip +x ends downwards."""
    return (0.0, math.sin(angle / 2), 0.0, math.cos(angle / 2))


def ballistic_velocity(start: np.ndarray, goal: np.ndarray, speed_x: float) -> list[float]:
    """Launch velocity that carries a projectile from ``start`` through ``goal`` under gravity."""
    flight = abs(goal[0] - start[0]) / speed_x
    vx = (goal[0] - start[0]) / flight
    vy = (goal[1] - start[1]) / flight
    vz = (goal[2] - start[2]) / flight + 0.5 * GRAVITY * flight
    return [float(vx), float(vy), float(vz)]


def random_orientation(world: World) -> tuple[float, float, float, float]:
    """A uniformly random rotation (a normalised 4D Gaussian is uniform on the quaternion sphere)."""
    q = world.rng.normal(size=4)
    return tuple(float(v) for v in q / np.linalg.norm(q))


def spawn_any(world: World, name: str, color: str, size: float, position, mass: float,
              kinds: tuple[str, ...] = BODY_KINDS, velocity=(0.0, 0.0, 0.0),
              spin=(0.0, 0.0, 0.0), **contact) -> SimObject:
    """A body of a shape drawn from ``kinds``, about ``size`` (m) in radius, randomly turned.

    Families whose physics does not depend on the shape (something thrown, dropped or tumbling)
    use it, so the heads see every shape in every such role.  ``contact`` passes friction and
    restitution through.
    """
    kind = kinds[int(world.rng.integers(len(kinds)))]
    turn = random_orientation(world)
    common = {"mass": mass, "velocity": velocity, **contact}
    if kind == "sphere":
        return world.spawn_ball(name, size, position, color, angular_velocity=spin, **common)
    if kind == "box":
        half = [size * uniform(world, 0.6, 1.0) for _ in range(3)]
        return world.spawn_box(name, half, position, color, orientation=turn,
                               angular_velocity=spin, **common)
    if kind in ("cylinder", "capsule"):
        spawn = world.spawn_cylinder if kind == "cylinder" else world.spawn_capsule
        return spawn(name, size * uniform(world, 0.55, 0.8), size * uniform(world, 1.0, 1.8),
                     position, color, orientation=turn, angular_velocity=spin, **common)
    form, parts = random_compound(world, size)
    return world.spawn_compound(name, form, parts, position, color, orientation=turn,
                                angular_velocity=spin, **common)


def random_compound(world: World, size: float) -> tuple[str, list[Part]]:
    """A dumbbell, hammer or L-bracket about ``2 size`` long, its design origin at its middle."""
    form = COMPOUND_FORMS[int(world.rng.integers(len(COMPOUND_FORMS)))]
    if form == "dumbbell":
        bar = size * uniform(world, 1.4, 2.0)
        return form, dumbbell(size * uniform(world, 0.4, 0.55), size * 0.15, bar)
    if form == "hammer":
        length = size * uniform(world, 1.6, 2.2)
        head = (size * 0.55, size * 0.25, size * 0.25)
        parts = hammer(size * 0.15, length, head, head_density=3.0)
        return form, [shifted(q, (0.0, 0.0, -length / 2)) for q in parts]
    parts = l_bracket((size, size * 0.35, size * 0.25), (size * 0.25, size * 0.35, size * 0.5))
    return form, [shifted(q, (0.0, 0.0, -size * 0.5)) for q in parts]
