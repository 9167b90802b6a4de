"""Bodies every scenario is built from: a textured floor, a back wall, balls and boxes.

Scenario builders only call these helpers, so each body is created one way and recorded with the
same metadata (shape, size, mass, colour, static) in ``scene.json``.  The floor and wall carry
procedural textures because flat colours give optical flow and photometric warping nothing to
lock on to.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image
from pybullet_utils.bullet_client import BulletClient

import pybullet as p

# Named colours so prompts can say "a red ball"; each spawn jitters the shade a little.
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.15, 0.12),
    "blue": (0.15, 0.3, 0.85),
    "green": (0.15, 0.7, 0.25),
    "yellow": (0.95, 0.8, 0.1),
    "orange": (0.95, 0.5, 0.1),
    "purple": (0.55, 0.2, 0.7),
    "white": (0.92, 0.92, 0.9),
    "cyan": (0.1, 0.75, 0.8),
    "pink": (0.95, 0.45, 0.65),
}

GRAVITY = 9.81
FLOOR_HALF_SIZE = 6.0
WALL_DISTANCE = 2.5
WALL_HEIGHT = 4.0


@dataclass
class SimObject:
    """One body in the scene and what ``scene.json`` records about it."""

    name: str
    body_id: int
    shape: str
    size: list[float]
    mass: float
    color: list[float]
    color_name: str
    static: bool
    poses: list[list[float]] = field(default_factory=list)

    def to_json(self) -> dict:
        size_key = "radius" if self.shape == "sphere" else "half_extents"
        return {
            "name": self.name,
            "body_id": self.body_id,
            "shape": self.shape,
            size_key: self.size,
            "mass": self.mass,
            "color": self.color,
            "color_name": self.color_name,
            "static": self.static,
            "poses": self.poses,
        }


class World:
    """A pybullet client plus the list of recorded objects and a scratch dir for textures."""

    def __init__(self, client: BulletClient, rng: np.random.Generator) -> None:
        self.client = client
        self.rng = rng
        self.objects: list[SimObject] = []
        self._tmp = tempfile.TemporaryDirectory(prefix="sim_textures_")
        # Rolling deceleration (m/s^2) of balls in this scene: with none, balls roll for metres
        # and leave the view long before the 131st frame.
        self.rolling_decel = float(rng.uniform(1.2, 1.8))

    def close(self) -> None:
        self._tmp.cleanup()

    def pick_colors(self, count: int, exclude: Sequence[str] = ()) -> list[str]:
        """Distinct named colours, so objects in one scene can be told apart in the prompt."""
        names = [n for n in PALETTE if n not in exclude]
        return [names[i] for i in self.rng.choice(len(names), size=count, replace=False)]

    def _rgba(self, color_name: str) -> list[float]:
        base = np.asarray(PALETTE[color_name])
        shade = np.clip(base + self.rng.uniform(-0.06, 0.06, 3), 0.0, 1.0)
        return [float(c) for c in shade] + [1.0]

    def add_floor(self) -> int:
        """A large static checkerboard whose surface is the plane z = 0."""
        tones = self.rng.uniform(0.45, 0.9, size=(2, 3))
        tones[1] = tones[0] * self.rng.uniform(0.35, 0.6)  # keep strong contrast
        image = checkerboard(squares=48, square_px=16, tones=tones)  # 0.25 m squares
        s = FLOOR_HALF_SIZE
        corners = [[-s, -s, 0], [s, -s, 0], [s, s, 0], [-s, s, 0]]
        return self._textured_quad("floor", corners, [0, 0, 1], image, [s, s, 0.05], [0, 0, -0.05])

    def add_wall(self) -> int:
        """A textured backdrop so the upper image has structure (and depth) instead of sky."""
        tone = self.rng.uniform(0.55, 0.85, size=3)
        image = stripes(width=768, height=256, period=48, tone=tone)  # 0.75 m stripes
        s, y, h = FLOOR_HALF_SIZE, WALL_DISTANCE, WALL_HEIGHT
        # Counter-clockwise as seen from the camera side (-y), facing the scene.
        corners = [[-s, y, 0], [s, y, 0], [s, y, h], [-s, y, h]]
        return self._textured_quad("wall", corners, [0, -1, 0], image, [s, 0.05, h / 2],
                                   [0, y + 0.05, h / 2])

    def _textured_quad(self, name: str, corners: list[list[float]], normal: list[float],
                       image: np.ndarray, half: list[float], box_centre: list[float]) -> int:
        """Static scenery (not listed in ``objects``): one textured quad plus a collision slab.

        An explicit mesh is used because pybullet's box primitive maps textures per face in a
        way that stretches them; a quad with UVs 0..1 shows the texture exactly once.
        """
        vis = self.client.createVisualShape(
            p.GEOM_MESH, vertices=corners, indices=[0, 1, 2, 0, 2, 3],
            uvs=[[0, 0], [1, 0], [1, 1], [0, 1]], normals=[normal] * 4, rgbaColor=[1, 1, 1, 1])
        col = self.client.createCollisionShape(p.GEOM_BOX, halfExtents=half,
                                               collisionFramePosition=box_centre)
        body = self.client.createMultiBody(0, col, vis, [0, 0, 0])
        path = Path(self._tmp.name) / f"{name}.png"
        Image.fromarray(image).save(path)
        self.client.changeVisualShape(body, -1, textureUniqueId=self.client.loadTexture(str(path)))
        return body

    def spawn_ball(
        self,
        name: str,
        radius: float,
        position: Sequence[float],
        color: str,
        mass: float = 1.0,
        velocity: Sequence[float] = (0.0, 0.0, 0.0),
        rolling: bool = False,
    ) -> SimObject:
        """A dynamic sphere (or static if ``mass`` is 0) with an initial linear velocity.

        ``rolling`` adds the spin of rolling without slipping on a horizontal surface
        (omega = z x v / r); otherwise friction first brakes the ball to 5/7 of its speed.
        """
        col = self.client.createCollisionShape(p.GEOM_SPHERE, radius=radius)
        rgba = self._rgba(color)
        vis = self.client.createVisualShape(p.GEOM_SPHERE, radius=radius, rgbaColor=rgba)
        spin = np.cross([0.0, 0.0, 1.0], velocity) / radius if rolling else np.zeros(3)
        obj = self._register(name, "sphere", [radius], mass, rgba, color, col, vis,
                             position, (0, 0, 0, 1), velocity, spin.tolist())
        # Bullet's rolling friction decelerates a rolling ball by about g * mu_r / r.
        self.client.changeDynamics(obj.body_id, -1,
                                   rollingFriction=self.rolling_decel * radius / GRAVITY)
        return obj

    def spawn_box(
        self,
        name: str,
        half_extents: Sequence[float],
        position: Sequence[float],
        color: str,
        mass: float = 1.0,
        orientation: Sequence[float] = (0.0, 0.0, 0.0, 1.0),
        velocity: Sequence[float] = (0.0, 0.0, 0.0),
        angular_velocity: Sequence[float] = (0.0, 0.0, 0.0),
    ) -> SimObject:
        """A box; ``mass`` 0 makes it static (tables, ramps, occluders, container walls)."""
        half = [float(h) for h in half_extents]
        col = self.client.createCollisionShape(p.GEOM_BOX, halfExtents=half)
        rgba = self._rgba(color)
        vis = self.client.createVisualShape(p.GEOM_BOX, halfExtents=half, rgbaColor=rgba)
        return self._register(name, "box", half, mass, rgba, color, col, vis,
                              position, orientation, velocity, angular_velocity)

    def _register(
        self,
        name: str,
        shape: str,
        size: list[float],
        mass: float,
        rgba: list[float],
        color: str,
        col: int,
        vis: int,
        position: Sequence[float],
        orientation: Sequence[float],
        velocity: Sequence[float],
        angular_velocity: Sequence[float] = (0.0, 0.0, 0.0),
    ) -> SimObject:
        body = self.client.createMultiBody(mass, col, vis, list(position), list(orientation))
        # Rolling friction stops balls rolling forever; modest restitution gives visible bounces.
        self.client.changeDynamics(body, -1, lateralFriction=0.6, rollingFriction=0.001,
                                   spinningFriction=0.001, restitution=0.4)
        if mass > 0:
            self.client.resetBaseVelocity(body, list(velocity), list(angular_velocity))
        obj = SimObject(name, body, shape, size, float(mass), rgba, color, static=mass == 0)
        self.objects.append(obj)
        return obj


def checkerboard(squares: int, square_px: int, tones: np.ndarray) -> np.ndarray:
    """(S, S, 3) uint8 checkerboard with a faint per-square brightness ripple.

    The ripple makes squares of the same colour distinguishable, so a flow estimate cannot
    alias by whole squares.
    """
    idx = np.arange(squares * square_px) // square_px
    parity = (idx[:, None] + idx[None, :]) % 2
    image = tones[parity]
    ripple = 0.9 + 0.1 * np.sin(idx[:, None] * 1.7 + idx[None, :] * 0.9)[..., None]
    return (np.clip(image * ripple, 0, 1) * 255).astype(np.uint8)


def stripes(width: int, height: int, period: int, tone: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 soft vertical stripes crossed by darker horizontal lines (back wall)."""
    x, y = np.arange(width), np.arange(height)
    wave = 0.75 + 0.25 * np.sin(2 * np.pi * x / period)
    grid = np.where((y % (2 * period)) < 3, 0.6, 1.0)
    image = tone[None, None, :] * wave[None, :, None] * grid[:, None, None]
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)
