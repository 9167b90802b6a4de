"""Scenario families modelled on Physics-IQ, each randomised from the scene's RNG.

A builder populates a :class:`World` (floor and wall already exist) and returns where the
camera should look.  Builders draw every size, colour, mass, position and initial velocity from
``world.rng``, so the seed alone fixes the scene and any number of distinct scenes can be made.
The layouts keep the action inside a ~2.6 m wide region around the origin that the default
camera sees; the y axis points away from the camera, z up, the floor is z = 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from data.sim.world import GRAVITY, World


@dataclass(frozen=True)
class CameraAim:
    """Nominal camera placement for a family (jittered per scene later)."""

    position: tuple[float, float, float] = (0.0, -2.4, 0.95)
    target: tuple[float, float, float] = (0.0, 0.0, 0.35)
    fov_y_deg: float = 45.0


Builder = Callable[[World], CameraAim]


def _u(world: World, low: float, high: float) -> float:
    return float(world.rng.uniform(low, high))


def _y_about_quat(angle: float) -> tuple[float, float, float, float]:
    """Quaternion for a rotation about +y; positive angles tip +x ends downwards."""
    return (0.0, math.sin(angle / 2), 0.0, math.cos(angle / 2))


def ballistic_velocity(start: np.ndarray, goal: np.ndarray, speed_x: float) -> list[float]:
    """Launch velocity that carries a projectile from ``start`` through ``goal`` under gravity."""
    flight = abs(goal[0] - start[0]) / speed_x
    vx = (goal[0] - start[0]) / flight
    vy = (goal[1] - start[1]) / flight
    vz = (goal[2] - start[2]) / flight + 0.5 * GRAVITY * flight
    return [float(vx), float(vy), float(vz)]


def ball_on_block(world: World) -> CameraAim:
    """A ball dropped from above lands on (and usually bounces off) a heavy block."""
    ball_c, block_c = world.pick_colors(2)
    half = [_u(world, 0.15, 0.3), _u(world, 0.15, 0.3), _u(world, 0.08, 0.22)]
    bx = _u(world, -0.3, 0.3)
    world.spawn_box("block", half, [bx, 0, half[2]], block_c, mass=_u(world, 2.0, 6.0))
    r = _u(world, 0.07, 0.14)
    x = bx + _u(world, -0.7, 0.7) * half[0]
    z = 2 * half[2] + _u(world, 0.6, 0.9)
    world.spawn_ball("ball", r, [x, _u(world, -0.1, 0.1), z], ball_c,
                     mass=_u(world, 0.2, 1.5), velocity=[_u(world, -0.3, 0.3), 0, 0])
    return CameraAim(target=(0.0, 0.0, 0.45), position=(0.0, -2.6, 1.0))


def ball_collide(world: World) -> CameraAim:
    """Two balls roll towards each other and collide (head-on or glancing)."""
    colors = world.pick_colors(2)
    for i, (side, color) in enumerate(zip((-1.0, 1.0), colors)):
        r = _u(world, 0.09, 0.17)
        pos = [side * _u(world, 0.35, 0.55), _u(world, -0.08, 0.08), r]
        vel = [-side * _u(world, 1.1, 1.6), 0.0, 0.0]
        world.spawn_ball(f"ball_{'ab'[i]}", r, pos, color, mass=_u(world, 0.3, 2.0), velocity=vel,
                         rolling=True)
    return CameraAim(target=(0.0, 0.0, 0.25))


def ramp_roll(world: World) -> CameraAim:
    """A ball starts at the top of a static tilted plank and rolls down onto the floor."""
    ball_c, ramp_c = world.pick_colors(2)
    angle = math.radians(_u(world, 12.0, 20.0))
    length, thick = _u(world, 0.3, 0.4), 0.03
    cx = _u(world, -0.8, -0.65)
    centre = np.array([cx, 0.0, length * math.sin(angle) + thick])
    quat = _y_about_quat(angle)
    world.spawn_box("ramp", [length, 0.25, thick], centre, ramp_c, mass=0.0, orientation=quat)
    r = _u(world, 0.07, 0.12)
    # Point on the ramp's top face near its high (-x) end, in the ramp frame, then to world.
    along, up = -0.7 * length, thick + r + 0.005
    start = centre + np.array([along * math.cos(angle) + up * math.sin(angle), 0.0,
                               -along * math.sin(angle) + up * math.cos(angle)])
    world.spawn_ball("ball", r, start, ball_c, mass=_u(world, 0.2, 1.5))
    return CameraAim(target=(0.0, 0.0, 0.3))


def table_edge(world: World) -> CameraAim:
    """A ball rolls along a table top, off its edge, and falls to the floor."""
    ball_c, table_c = world.pick_colors(2)
    height = _u(world, 0.45, 0.7)
    edge = _u(world, -0.35, -0.1)
    half = [0.6, _u(world, 0.3, 0.45), height / 2]
    world.spawn_box("table", half, [edge - half[0], 0, half[2]], table_c, mass=0.0)
    r = _u(world, 0.07, 0.12)
    start = [edge - _u(world, 0.15, 0.3), _u(world, -0.1, 0.1), height + r]
    world.spawn_ball("ball", r, start, ball_c, mass=_u(world, 0.2, 1.5),
                     velocity=[_u(world, 1.0, 1.4), 0, 0], rolling=True)
    return CameraAim(target=(0.0, 0.0, 0.35))


def domino(world: World) -> CameraAim:
    """A row of dominoes; the first is pushed over and knocks down the rest."""
    (color,) = world.pick_colors(1)
    count = int(world.rng.integers(5, 8))
    half = [0.02, _u(world, 0.07, 0.12), _u(world, 0.1, 0.15)]
    spacing = 2 * half[2] * _u(world, 0.5, 0.7)
    x0 = -0.5 * spacing * (count - 1)
    mass = _u(world, 0.1, 0.3)
    for i in range(count):
        # Only the first domino moves initially: tipping it towards +x about its base.
        spin = [0.0, _u(world, 3.0, 5.0), 0.0] if i == 0 else [0.0, 0.0, 0.0]
        push = [spin[1] * half[2], 0.0, 0.0]
        world.spawn_box(f"domino_{i}", half, [x0 + i * spacing, 0, half[2]], color, mass=mass,
                        velocity=push, angular_velocity=spin)
    return CameraAim(target=(0.0, 0.0, 0.2), position=(0.0, -2.3, 0.9))


def fall_into_box(world: World) -> CameraAim:
    """A ball or cube drops into an open static container (a floor-standing box)."""
    item_c, box_c = world.pick_colors(2)
    inner = _u(world, 0.22, 0.32)
    wall_h, thick = _u(world, 0.1, 0.17), 0.02
    cx = _u(world, -0.25, 0.25)
    for name, dx, dy, hx, hy in (
        ("container_left", -inner, 0.0, thick, inner),
        ("container_right", inner, 0.0, thick, inner),
        ("container_back", 0.0, inner, inner, thick),
        ("container_front", 0.0, -inner, inner, thick),
    ):
        world.spawn_box(name, [hx, hy, wall_h], [cx + dx, dy, wall_h], box_c, mass=0.0)
    size = _u(world, 0.06, 0.11)
    pos = [cx + _u(world, -0.4, 0.4) * inner, _u(world, -0.3, 0.3) * inner, _u(world, 0.8, 1.1)]
    vel = [_u(world, -0.3, 0.3), 0.0, 0.0]
    if world.rng.random() < 0.5:
        world.spawn_ball("item", size, pos, item_c, mass=_u(world, 0.2, 1.0), velocity=vel)
    else:
        spin = world.rng.uniform(-3.0, 3.0, 3).tolist()
        world.spawn_box("item", [size] * 3, pos, item_c, mass=_u(world, 0.2, 1.0),
                        velocity=vel, angular_velocity=spin)
    return CameraAim(position=(0.0, -2.2, 1.4), target=(0.0, 0.0, 0.3))


def roll_behind_occluder(world: World) -> CameraAim:
    """A ball rolls across the scene and passes behind a static block nearer the camera."""
    ball_c, occ_c = world.pick_colors(2)
    half = [_u(world, 0.18, 0.3), 0.05, _u(world, 0.25, 0.4)]
    world.spawn_box("occluder", half, [_u(world, -0.25, 0.0), -0.5, half[2]], occ_c, mass=0.0)
    r = _u(world, 0.07, 0.12)
    start = [_u(world, -0.95, -0.75), _u(world, 0.1, 0.3), r]
    world.spawn_ball("ball", r, start, ball_c, mass=_u(world, 0.2, 1.5),
                     velocity=[_u(world, 1.4, 1.8), 0, 0], rolling=True)
    return CameraAim(target=(0.0, 0.0, 0.25))


def stack_topple(world: World) -> CameraAim:
    """A thrown ball hits a stack of blocks, which topples."""
    ball_c, block_c = world.pick_colors(2)
    count = int(world.rng.integers(3, 5))
    half = [_u(world, 0.07, 0.1), _u(world, 0.07, 0.1), _u(world, 0.06, 0.09)]
    sx = _u(world, 0.0, 0.25)
    for i in range(count):
        # Small staggering makes each topple different without making the stack unstable.
        pos = [sx + _u(world, -0.2, 0.2) * half[0], 0.0, half[2] * (2 * i + 1) + 0.001]
        world.spawn_box(f"block_{i}", half, pos, block_c, mass=_u(world, 0.2, 0.5))
    r = _u(world, 0.07, 0.1)
    start = np.array([_u(world, -0.85, -0.7), 0.0, _u(world, 0.3, 0.5)])
    goal = np.array([sx - half[0] - r, 0.0, 2 * half[2] * count * _u(world, 0.5, 0.8)])
    vel = ballistic_velocity(start, goal, speed_x=_u(world, 1.6, 2.2))
    world.spawn_ball("ball", r, start, ball_c, mass=_u(world, 0.3, 0.6), velocity=vel)
    return CameraAim(target=(0.0, 0.0, 0.3))


FAMILIES: dict[str, Builder] = {
    "ball_on_block": ball_on_block,
    "ball_collide": ball_collide,
    "ramp_roll": ramp_roll,
    "table_edge": table_edge,
    "domino": domino,
    "fall_into_box": fall_into_box,
    "roll_behind_occluder": roll_behind_occluder,
    "stack_topple": stack_topple,
}
