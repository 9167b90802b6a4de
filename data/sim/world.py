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
from data.sim.camera import Camera
from data.sim.textures import body_pattern, body_pattern_cells, make_texture

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
WALL_HEIGHT = 4.0


class World(BodyBuilder):
    """A pybullet client, the recorded objects and pins, and a scratch dir for textures."""

    def __init__(self, client: BulletClient, rng: np.random.Generator, texture_seed: int = 0) -> None:
        self.client = client
        self.rng = rng
        self.texture_seed = texture_seed
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

    def add_floor(self, look: dict) -> int:
        """A large static floor, the plane z = 0, textured as the look says (~4 m per texture tile)."""
        image = self._look_texture(look["floor"], 1024)
        s = FLOOR_HALF_SIZE
        corners = [[-s, -s, 0], [s, -s, 0], [s, s, 0], [-s, s, 0]]
        return self._textured_quad("floor", corners, [0, 0, 1], image, [s, s, 0.05], [0, 0, -0.05], uv_repeat=3.0)

    def add_background(self, look: dict, target: np.ndarray, forward: np.ndarray) -> int | None:
        """The look's backdrop behind the action, facing the camera: a wall from the floor up or a
        plane, ``distance`` metres past the target along the horizontal view direction; nothing
        for a sky (those pixels keep invalid depth).  Visual only: the backdrop never touches a
        body, so the physics is the same under every look."""
        background = look["background"]
        if background["kind"] == "sky":
            return None
        ahead = np.array([forward[0], forward[1], 0.0])
        ahead /= np.linalg.norm(ahead)
        side = np.array([ahead[1], -ahead[0], 0.0])  # to the camera's right
        centre = np.array([target[0], target[1], 0.0]) + ahead * background["distance"]
        half_w, h = FLOOR_HALF_SIZE, WALL_HEIGHT
        low = 0.0 if background["kind"] == "wall" else -0.01
        corners = [(centre - side * half_w + [0, 0, low]).tolist(), (centre + side * half_w + [0, 0, low]).tolist(),
                   (centre + side * half_w + [0, 0, h]).tolist(), (centre - side * half_w + [0, 0, h]).tolist()]
        image = self._look_texture(background, 1024)
        return self._textured_quad("background", corners, (-ahead).tolist(), image, None, None, uv_repeat=2.0)

    def texture_bodies(self, kind: str | None, camera: Camera) -> dict[str, int]:
        """Paint every moving body with the look's pattern ``kind`` in its own colour, so rolling
        and spinning show in the pixels; returns name -> cells around (0: left plain).

        The cell count follows the body's apparent size from ``camera`` (``body_pattern_cells``):
        bodies too small in the image to carry a pattern without flicker stay plain, as do
        static bodies and every body when ``kind`` is None."""
        cells_of: dict[str, int] = {}
        textures: dict[int, int] = {}
        for obj in self.objects:
            if kind is None or obj.static:
                continue
            cells = body_pattern_cells(_apparent_radius_px(self.client, obj.body_id, camera))
            cells_of[obj.name] = cells
            if cells == 0:
                continue
            if cells not in textures:
                textures[cells] = self._load_texture(f"body_{kind}_{cells}", body_pattern(kind, cells))
            self.client.changeVisualShape(obj.body_id, -1, textureUniqueId=textures[cells],
                                          rgbaColor=obj.color)
        return cells_of

    def _look_texture(self, spec: dict, size: int) -> np.ndarray:
        rng = np.random.default_rng([self.texture_seed, size, len(spec["texture"])])
        return make_texture(spec["texture"], rng, size, np.asarray(spec["tones"]))

    def _textured_quad(self, name: str, corners: list[list[float]], normal: list[float], image: np.ndarray,
                       half: list[float] | None, box_centre: list[float] | None, uv_repeat: float = 1.0) -> int:
        """Static scenery (not listed in ``objects``): one textured quad, with a collision slab
        when ``half`` is given.

        An explicit mesh is used because pybullet's box primitive maps textures per face in a
        way that stretches them; a quad with UVs 0..``uv_repeat`` shows the texture that many
        times along each side.
        """
        r = uv_repeat
        vis = self.client.createVisualShape(
            p.GEOM_MESH, vertices=corners, indices=[0, 1, 2, 0, 2, 3],
            uvs=[[0, 0], [r, 0], [r, r], [0, r]], normals=[normal] * 4, rgbaColor=[1, 1, 1, 1])
        col = -1 if half is None else self.client.createCollisionShape(
            p.GEOM_BOX, halfExtents=half, collisionFramePosition=box_centre)
        body = self.client.createMultiBody(0, col, vis, [0, 0, 0])
        self.client.changeVisualShape(body, -1, textureUniqueId=self._load_texture(name, image))
        return body

    def _load_texture(self, name: str, image: np.ndarray) -> int:
        """A pybullet texture id for ``image`` (H, W, 3) uint8, via a PNG in the scratch dir
        (uncompressed: zlib on a 1024² texture took over half of a demo scene's time)."""
        path = Path(self._tmp.name) / f"{name}.png"
        Image.fromarray(image).save(path, compress_level=0)
        return self.client.loadTexture(str(path))


def _apparent_radius_px(client: BulletClient, body: int, camera: Camera) -> float:
    """Radius in pixels of the sphere around the body's bounding box, seen from ``camera``."""
    low, high = (np.asarray(corner) for corner in client.getAABB(body))
    radius = float(np.linalg.norm(high - low)) / 2
    distance = float(np.linalg.norm((low + high) / 2 - np.asarray(camera.position)))
    return radius * camera.fy / max(distance, radius + camera.near)
