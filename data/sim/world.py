"""The world scenarios are built in: a textured floor, a back wall, and the bodies on them.

Scenario builders only call these helpers (bodies come from :class:`BodyBuilder`), so each body is
created one way and recorded with the same metadata in ``scene.json``.  The floor and wall carry
procedural textures because flat colours give optical flow and photometric warping nothing to
lock on to.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pybullet as p
from PIL import Image
from pybullet_utils.bullet_client import BulletClient

from data.sim.bodies import GRAVITY, BodyBuilder, SimObject

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

__all__ = ["GRAVITY", "PALETTE", "World"]

FLOOR_HALF_SIZE = 6.0
WALL_DISTANCE = 2.5
WALL_HEIGHT = 4.0


class World(BodyBuilder):
    """A pybullet client, the recorded objects and pins, and a scratch dir for textures."""

    def __init__(self, client: BulletClient, rng: np.random.Generator) -> None:
        self.client = client
        self.rng = rng
        self.objects: list[SimObject] = []
        self.constraints: list[dict] = []
        self._tmp = tempfile.TemporaryDirectory(prefix="sim_textures_")
        # Rolling deceleration (m/s^2) of round bodies in this scene: with none, balls roll for
        # metres and leave the view long before the 131st frame.
        self.rolling_decel = float(rng.uniform(0.6, 0.9))

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
