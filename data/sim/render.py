"""One headless TinyRenderer pass per frame: RGB, planar depth buffer and object ids.

TinyRenderer runs on the CPU inside ``p.DIRECT`` clients, so generation needs no display or GPU
and is bit-for-bit deterministic for a given scene.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pybullet_utils.bullet_client import BulletClient

import pybullet as p

from data.sim.camera import Camera

# Light from above, slightly left and in front of the scene: shaded spheres read as 3D.
LIGHT_DIRECTION = (-0.4, -0.6, 1.0)


@dataclass
class RawFrame:
    """Renderer output for one frame, (H, W[, 3]) arrays."""

    rgb: np.ndarray  # uint8 (H, W, 3)
    depth_buffer: np.ndarray  # float32 (H, W), OpenGL non-linear depth in [0, 1]
    segmentation: np.ndarray  # int32 (H, W), body id per pixel, -1 where nothing was hit


def render(client: BulletClient, camera: Camera, shadows: bool = True) -> RawFrame:
    """Render the current simulator state from ``camera``."""
    view, proj = camera.gl_matrices()
    _, _, rgba, depth, seg = client.getCameraImage(
        camera.width,
        camera.height,
        viewMatrix=view,
        projectionMatrix=proj,
        renderer=p.ER_TINY_RENDERER,
        shadow=int(shadows),
        lightDirection=list(LIGHT_DIRECTION),
    )
    shape = (camera.height, camera.width)
    rgba = np.asarray(rgba, dtype=np.uint8).reshape(*shape, 4)
    return RawFrame(
        rgb=np.ascontiguousarray(rgba[..., :3]),
        depth_buffer=np.asarray(depth, dtype=np.float32).reshape(shape),
        segmentation=np.asarray(seg, dtype=np.int32).reshape(shape),
    )
