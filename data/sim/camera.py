"""Pinhole camera shared by the renderer and the ground-truth computation.

The same :class:`Camera` produces the pybullet view/projection matrices used to render and the
intrinsics used to unproject depth and project moved points, so RGB, distance and motion vectors
cannot disagree about geometry.

Pixel convention: pixel (col, row) has its centre at image coordinates ``u = col + 0.5`` (right),
``v = row + 0.5`` (down).  pybullet's TinyRenderer samples each pixel half a pixel right of and
half a pixel below that centre's ideal position (measured by unprojecting a rendered plane), so the
principal point is ``cx = W/2 + 0.5``, ``cy = H/2 - 0.5`` rather than ``W/2, H/2``.  Everything in
this package (and the intrinsics written to ``scene.json``) uses that exact principal point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Measured offset of TinyRenderer's sample positions from ideal pixel centres (see module doc).
_CX_OFFSET = 0.5
_CY_OFFSET = -0.5


@dataclass(frozen=True)
class Camera:
    """A static perspective camera; ``fov_y_deg`` is the vertical field of view."""

    width: int
    height: int
    fov_y_deg: float
    near: float
    far: float
    position: tuple[float, float, float]
    target: tuple[float, float, float]
    up: tuple[float, float, float] = (0.0, 0.0, 1.0)

    @property
    def fy(self) -> float:
        return self.height / 2.0 / math.tan(math.radians(self.fov_y_deg) / 2.0)

    @property
    def fx(self) -> float:
        # The projection uses aspect = W/H with a vertical fov, which makes pixels square.
        return self.fy

    @property
    def cx(self) -> float:
        return self.width / 2.0 + _CX_OFFSET

    @property
    def cy(self) -> float:
        return self.height / 2.0 + _CY_OFFSET

    def view_matrix(self) -> np.ndarray:
        """World -> OpenGL camera frame (x right, y up, looking along -z), 4x4 row-major."""
        forward = np.subtract(self.target, self.position).astype(np.float64)
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, self.up)
        right /= np.linalg.norm(right)
        true_up = np.cross(right, forward)
        rot = np.stack([right, true_up, -forward])
        view = np.eye(4)
        view[:3, :3] = rot
        view[:3, 3] = -rot @ np.asarray(self.position, dtype=np.float64)
        return view

    def projection_matrix(self) -> np.ndarray:
        """OpenGL perspective projection matching ``computeProjectionMatrixFOV``, row-major."""
        f = 1.0 / math.tan(math.radians(self.fov_y_deg) / 2.0)
        aspect = self.width / self.height
        n, fa = self.near, self.far
        return np.array(
            [
                [f / aspect, 0.0, 0.0, 0.0],
                [0.0, f, 0.0, 0.0],
                [0.0, 0.0, (fa + n) / (n - fa), 2.0 * fa * n / (n - fa)],
                [0.0, 0.0, -1.0, 0.0],
            ]
        )

    def gl_matrices(self) -> tuple[list[float], list[float]]:
        """The two matrices as the flat column-major lists pybullet expects."""
        return (
            self.view_matrix().T.reshape(-1).tolist(),
            self.projection_matrix().T.reshape(-1).tolist(),
        )

    def pixel_grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Image coordinates (u, v) of every pixel centre, each (H, W) float64."""
        u = np.arange(self.width, dtype=np.float64) + 0.5
        v = np.arange(self.height, dtype=np.float64) + 0.5
        return np.meshgrid(u, v)

    def ray_factor(self) -> np.ndarray:
        """Per-pixel ratio of Euclidean ray distance to planar depth, (H, W) float64."""
        u, v = self.pixel_grid()
        return np.sqrt(1.0 + ((u - self.cx) / self.fx) ** 2 + ((v - self.cy) / self.fy) ** 2)

    def unproject(self, u: np.ndarray, v: np.ndarray, distance: np.ndarray) -> np.ndarray:
        """World points (..., 3) seen at pixels (u, v) at Euclidean ``distance`` along the ray."""
        ray = np.stack(
            [(u - self.cx) / self.fx, -(v - self.cy) / self.fy, -np.ones_like(u)], axis=-1
        )
        ray /= np.linalg.norm(ray, axis=-1, keepdims=True)
        cam_points = ray * distance[..., None]
        view = self.view_matrix()
        # Rows of the rotation are the camera axes, so cam -> world is R^T (p - t).
        return (cam_points - view[:3, 3]) @ view[:3, :3]

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pixel coordinates (u, v) and planar depth of world points (..., 3)."""
        view = self.view_matrix()
        cam = points @ view[:3, :3].T + view[:3, 3]
        depth = -cam[..., 2]
        u = self.cx + self.fx * cam[..., 0] / depth
        v = self.cy - self.fy * cam[..., 1] / depth
        return u, v, depth

    def to_json(self) -> dict:
        """Everything a reader needs to lift ``distance_to_camera`` to 3D."""
        return {
            "fov_y_deg": self.fov_y_deg,
            "near": self.near,
            "far": self.far,
            "fx": self.fx,
            "fy": self.fy,
            "cx": self.cx,
            "cy": self.cy,
            "pixel_centre": "pixel (col,row) is at u=col+0.5 (right), v=row+0.5 (down)",
            "position": list(self.position),
            "target": list(self.target),
            "up": list(self.up),
            "view_matrix": self.view_matrix().tolist(),
            "projection_matrix": self.projection_matrix().tolist(),
        }


def orbit_camera(
    width: int,
    height: int,
    position: tuple[float, float, float],
    target: tuple[float, float, float],
    fov_y_deg: float,
    distance: float,
    yaw_deg: float = 0.0,
    pitch_deg: float = 0.0,
    roll_deg: float = 0.0,
    near: float = 0.05,
    far: float = 30.0,
) -> Camera:
    """A camera looking at ``target`` from the direction of ``position``, moved on a sphere about
    the target: ``yaw`` about the vertical, ``pitch`` raises it (degrees), at ``distance`` metres,
    then rolled about its viewing axis (positive turns the image clockwise: its up tips right)."""
    tgt = np.asarray(target, dtype=np.float64)
    offset = np.asarray(position, dtype=np.float64) - tgt
    azimuth = math.atan2(offset[1], offset[0]) + math.radians(yaw_deg)
    elevation = math.atan2(offset[2], math.hypot(offset[0], offset[1])) + math.radians(pitch_deg)
    direction = np.array([math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth),
                          math.sin(elevation)])
    pos = tgt + distance * direction
    forward = -direction
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    level_up = np.cross(right, forward)
    roll = math.radians(roll_deg)
    up = math.cos(roll) * level_up + math.sin(roll) * right
    return Camera(width=width, height=height, fov_y_deg=float(fov_y_deg), near=near, far=far,
                  position=tuple(float(x) for x in pos), target=tuple(float(x) for x in tgt),
                  up=tuple(float(x) for x in up))
