"""Scenario families modelled on Physics-IQ, and the registry of every family.

A builder populates a :class:`World` (floor and wall already exist) and returns where the
camera should look (see ``layout``).  Builders draw every size, shape, colour, mass, friction,
position and initial velocity from ``world.rng``, so the seed alone fixes the scene and any
number of distinct scenes can be made.
"""

from __future__ import annotations

import math

import numpy as np

from data.sim import families_mechanics as mech
from data.sim.layout import (
    Builder,
    CameraAim,
    ballistic_velocity,
    spawn_any,
    uniform,
    y_about_quat,
)
from data.sim.shapes import ALONG_Y
from data.sim.world import GRAVITY, World

__all__ = ["FAMILIES", "GRAVITY", "Builder", "CameraAim"]


def ball_on_block(world: World) -> CameraAim:
    """A ball dropped from above lands on (and usually bounces off) a heavy block or drum."""
    ball_c, block_c = world.pick_colors(2)
    half = [uniform(world, 0.15, 0.3), uniform(world, 0.15, 0.3), uniform(world, 0.08, 0.22)]
    bx = uniform(world, -0.3, 0.3)
    mass = uniform(world, 2.0, 6.0)
    if world.rng.random() < 0.5:
        world.spawn_box("block", half, [bx, 0, half[2]], block_c, mass=mass)
    else:
        world.spawn_cylinder("block", half[0], 2 * half[2], [bx, 0, half[2]], block_c, mass=mass)
    r = uniform(world, 0.07, 0.14)
    x = bx + uniform(world, -0.7, 0.7) * half[0]
    z = 2 * half[2] + uniform(world, 0.6, 0.9)
    world.spawn_ball("ball", r, [x, uniform(world, -0.1, 0.1), z], ball_c,
                     mass=uniform(world, 0.2, 1.5), velocity=[uniform(world, -0.3, 0.3), 0, 0])
    return CameraAim(target=(0.0, 0.0, 0.45), position=(0.0, -2.6, 1.0))


def ball_collide(world: World) -> CameraAim:
    """Two balls roll towards each other and collide (head-on or glancing)."""
    colors = world.pick_colors(2)
    for i, (side, color) in enumerate(zip((-1.0, 1.0), colors)):
        r = uniform(world, 0.09, 0.17)
        pos = [side * uniform(world, 0.35, 0.55), uniform(world, -0.08, 0.08), r]
        vel = [-side * uniform(world, 1.1, 1.6), 0.0, 0.0]
        world.spawn_ball(f"ball_{'ab'[i]}", r, pos, color, mass=uniform(world, 0.3, 2.0),
                         velocity=vel, rolling=True)
    return CameraAim(target=(0.0, 0.0, 0.25))


def ramp_roll(world: World) -> CameraAim:
    """A ball starts at the top of a static tilted plank and rolls down onto the floor."""
    ball_c, ramp_c = world.pick_colors(2)
    angle = math.radians(uniform(world, 12.0, 20.0))
    length, thick = uniform(world, 0.3, 0.4), 0.03
    cx = uniform(world, -0.8, -0.65)
    centre = np.array([cx, 0.0, length * math.sin(angle) + thick])
    quat = y_about_quat(angle)
    world.spawn_box("ramp", [length, 0.25, thick], centre, ramp_c, mass=0.0, orientation=quat)
    r = uniform(world, 0.07, 0.12)
    # Point on the ramp's top face near its high (-x) end, in the ramp frame, then to world.
    along, up = -0.7 * length, thick + r + 0.005
    start = centre + np.array([along * math.cos(angle) + up * math.sin(angle), 0.0,
                               -along * math.sin(angle) + up * math.cos(angle)])
    world.spawn_ball("ball", r, start, ball_c, mass=uniform(world, 0.2, 1.5))
    return CameraAim(target=(0.0, 0.0, 0.3))


def table_edge(world: World) -> CameraAim:
    """A ball or cylinder rolls along a table top, off its edge, and falls to the floor."""
    roller_c, table_c = world.pick_colors(2)
    height = uniform(world, 0.45, 0.7)
    edge = uniform(world, -0.35, -0.1)
    half = [0.6, uniform(world, 0.3, 0.45), height / 2]
    world.spawn_box("table", half, [edge - half[0], 0, half[2]], table_c, mass=0.0)
    start = [edge - uniform(world, 0.15, 0.3), uniform(world, -0.1, 0.1), height]
    _spawn_roller(world, roller_c, start, speed=uniform(world, 1.0, 1.4))
    return CameraAim(target=(0.0, 0.0, 0.35))


def domino(world: World) -> CameraAim:
    """A row of dominoes; the first is pushed over and knocks down the rest."""
    (color,) = world.pick_colors(1)
    count = int(world.rng.integers(5, 8))
    half = [0.02, uniform(world, 0.07, 0.12), uniform(world, 0.1, 0.15)]
    spacing = 2 * half[2] * uniform(world, 0.5, 0.7)
    x0 = -0.5 * spacing * (count - 1)
    mass = uniform(world, 0.1, 0.3)
    for i in range(count):
        # Only the first domino moves initially: tipping it towards +x about its base.
        spin = [0.0, uniform(world, 3.0, 5.0), 0.0] if i == 0 else [0.0, 0.0, 0.0]
        push = [spin[1] * half[2], 0.0, 0.0]
        world.spawn_box(f"domino_{i}", half, [x0 + i * spacing, 0, half[2]], color, mass=mass,
                        velocity=push, angular_velocity=spin, restitution=(0.05, 0.2))
    return CameraAim(target=(0.0, 0.0, 0.2), position=(0.0, -2.3, 0.9))


def fall_into_box(world: World) -> CameraAim:
    """An object of any shape drops into an open static container (a floor-standing box)."""
    item_c, box_c = world.pick_colors(2)
    inner = uniform(world, 0.22, 0.32)
    wall_h, thick = uniform(world, 0.1, 0.17), 0.02
    cx = uniform(world, -0.25, 0.25)
    for name, dx, dy, hx, hy in (
        ("container_left", -inner, 0.0, thick, inner),
        ("container_right", inner, 0.0, thick, inner),
        ("container_back", 0.0, inner, inner, thick),
        ("container_front", 0.0, -inner, inner, thick),
    ):
        world.spawn_box(name, [hx, hy, wall_h], [cx + dx, dy, wall_h], box_c, mass=0.0)
    size = uniform(world, 0.06, 0.1)
    pos = [cx + uniform(world, -0.4, 0.4) * inner, uniform(world, -0.3, 0.3) * inner,
           uniform(world, 0.8, 1.1)]
    vel = [uniform(world, -0.3, 0.3), 0.0, 0.0]
    spin = world.rng.uniform(-3.0, 3.0, 3).tolist()
    spawn_any(world, "item", item_c, size, pos, uniform(world, 0.2, 1.0), velocity=vel, spin=spin,
              restitution=(0.1, 0.35))
    return CameraAim(position=(0.0, -2.2, 1.4), target=(0.0, 0.0, 0.3))


def roll_behind_occluder(world: World) -> CameraAim:
    """A ball or cylinder rolls across the scene and passes behind a static block nearer the camera."""
    roller_c, occ_c = world.pick_colors(2)
    half = [uniform(world, 0.18, 0.3), 0.05, uniform(world, 0.25, 0.4)]
    world.spawn_box("occluder", half, [uniform(world, -0.25, 0.0), -0.5, half[2]], occ_c, mass=0.0)
    start = [uniform(world, -0.95, -0.75), uniform(world, 0.1, 0.3), 0.0]
    _spawn_roller(world, roller_c, start, speed=uniform(world, 1.4, 1.8))
    return CameraAim(target=(0.0, 0.0, 0.25))


def stack_topple(world: World) -> CameraAim:
    """A thrown ball hits a stack of blocks (or drums), which topples."""
    ball_c, block_c = world.pick_colors(2)
    count = int(world.rng.integers(3, 5))
    half = [uniform(world, 0.07, 0.1), uniform(world, 0.07, 0.1), uniform(world, 0.06, 0.09)]
    sx = uniform(world, 0.0, 0.25)
    drums = world.rng.random() < 0.4  # a stack of upright cylinders instead of boxes
    for i in range(count):
        # Small staggering makes each topple different without making the stack unstable.
        pos = [sx + uniform(world, -0.2, 0.2) * half[0], 0.0, half[2] * (2 * i + 1) + 0.001]
        contact = {"mass": uniform(world, 0.2, 0.5), "restitution": (0.05, 0.25)}
        if drums:
            world.spawn_cylinder(f"block_{i}", half[0], 2 * half[2], pos, block_c, **contact)
        else:
            world.spawn_box(f"block_{i}", half, pos, block_c, **contact)
    r = uniform(world, 0.07, 0.1)
    start = np.array([uniform(world, -0.85, -0.7), 0.0, uniform(world, 0.3, 0.5)])
    goal = np.array([sx - half[0] - r, 0.0, 2 * half[2] * count * uniform(world, 0.5, 0.8)])
    vel = ballistic_velocity(start, goal, speed_x=uniform(world, 1.6, 2.2))
    world.spawn_ball("ball", r, start, ball_c, mass=uniform(world, 0.3, 0.6), velocity=vel)
    return CameraAim(target=(0.0, 0.0, 0.3))


def _spawn_roller(world: World, color: str, start: list[float], speed: float) -> None:
    """A ball, or a cylinder lying across its path, rolling along +x from ``start`` (on a surface
    at height ``start[2]``): both roll without slipping, with different moments of inertia."""
    velocity = [speed, 0.0, 0.0]
    mass = uniform(world, 0.2, 1.5)
    r = uniform(world, 0.07, 0.12)
    position = [start[0], start[1], start[2] + r]
    if world.rng.random() < 0.6:
        world.spawn_ball("roller", r, position, color, mass=mass, velocity=velocity, rolling=True)
    else:
        world.spawn_cylinder("roller", r, uniform(world, 0.1, 0.2), position, color, mass=mass,
                             orientation=ALONG_Y, velocity=velocity, rolling=True)


FAMILIES: dict[str, Builder] = {
    "ball_on_block": ball_on_block,
    "ball_collide": ball_collide,
    "ramp_roll": ramp_roll,
    "table_edge": table_edge,
    "domino": domino,
    "fall_into_box": fall_into_box,
    "roll_behind_occluder": roll_behind_occluder,
    "stack_topple": stack_topple,
    "projectile": mech.projectile,
    "bounce": mech.bounce,
    "incline_slide": mech.incline_slide,
    "floor_slide": mech.floor_slide,
    "pendulum": mech.pendulum,
    "newton_cradle": mech.newton_cradle,
    "seesaw": mech.seesaw,
    "ramp_race": mech.ramp_race,
    "topple": mech.topple,
    "wall_rebound": mech.wall_rebound,
}
"""Every scenario family by name: the Physics-IQ-like ones above, then textbook mechanics."""
