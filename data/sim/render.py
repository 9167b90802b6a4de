"""One headless TinyRenderer pass per frame: RGB, planar depth buffer and object ids.

TinyRenderer runs on the CPU inside ``p.DIRECT`` clients, so generation needs no display or GPU
and is bit-for-bit deterministic for a given scene.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pybullet as p
from pybullet_utils.bullet_client import BulletClient

from data.sim.camera import Camera
from data.sim.textures import sky_gradient

# Light from above, slightly left and in front of the scene, when a look names none.
LIGHT_DIRECTION = (-0.4, -0.6, 1.0)


@dataclass
class RawFrame:
    """Renderer output for one frame, (H, W[, 3]) arrays."""

    rgb: np.ndarray  # uint8 (H, W, 3)
    depth_buffer: np.ndarray  # float32 (H, W), OpenGL non-linear depth in [0, 1]
    segmentation: np.ndarray  # int32 (H, W), body id per pixel, -1 where nothing was hit


def render(client: BulletClient, camera: Camera, look: dict | None = None, shadows: bool = True) -> RawFrame:
    """Render the current simulator state from ``camera`` under the look's light; where nothing
    is hit, a sky look paints its gradient (those pixels keep segmentation -1: no depth)."""
    light = (look or {}).get("light", {})
    view, proj = camera.gl_matrices()
    options = {"lightDirection": list(light.get("direction", LIGHT_DIRECTION))}
    if light:
        options.update(lightColor=list(light["color"]), lightAmbientCoeff=light["ambient"],
                       lightDiffuseCoeff=light["diffuse"], lightSpecularCoeff=light["specular"])
    _, _, rgba, depth, seg = client.getCameraImage(
        camera.width,
        camera.height,
        viewMatrix=view,
        projectionMatrix=proj,
        renderer=p.ER_TINY_RENDERER,
        shadow=int(shadows and light.get("shadows", True)),
        **options,
    )
    shape = (camera.height, camera.width)
    rgb = np.ascontiguousarray(np.asarray(rgba, dtype=np.uint8).reshape(*shape, 4)[..., :3])
    segmentation = np.asarray(seg, dtype=np.int32).reshape(shape)
    background = (look or {}).get("background", {})
    if background.get("kind") == "sky":
        sky = sky_gradient(*shape, np.asarray(background["horizon"]), np.asarray(background["zenith"]))
        empty = segmentation < 0
        rgb[empty] = sky[empty]
    return RawFrame(rgb=rgb, depth_buffer=np.asarray(depth, dtype=np.float32).reshape(shape),
                    segmentation=segmentation)
