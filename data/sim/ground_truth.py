"""Exact per-pixel ground truth from the simulator state (no image-based estimation).

``distance_to_camera``: Euclidean metres from the camera centre along each pixel's ray.
``motion_vectors``: the file convention of the real Omniverse Replicator data.  At pixel p of
frame t, channels 0,1 hold ``(u_{t-1} - u_t, v_{t-1} - v_t)`` in pixels, where (u_t, v_t) = p and
(u_{t-1}, v_{t-1}) is where the same surface point was in frame t-1 (u right, v down).  That is the
motion "x left-positive, y up-positive"; numerically it equals the backward flow with +x right,
+y down, so ``I_t(p) ≈ I_{t-1}(p + mv[p])``.  Channels 2,3 are zero; frame 0 is all zeros.
"""

from __future__ import annotations

import numpy as np

from data.sim.camera import Camera


def quat_to_matrix(quat: np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) of a pybullet quaternion ``[qx, qy, qz, qw]``."""
    x, y, z, w = quat
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def distance_from_depth_buffer(
    depth_buffer: np.ndarray, hit: np.ndarray, camera: Camera, background: float
) -> np.ndarray:
    """(H, W) float32 Euclidean ray distance; ``background`` where ``hit`` is False.

    The buffer is OpenGL depth; linearising gives planar z, and the ray factor
    sqrt(1 + x_n^2 + y_n^2) turns planar z into distance along the ray.
    """
    d = depth_buffer.astype(np.float64)
    near, far = camera.near, camera.far
    planar = far * near / (far - (far - near) * d)
    distance = planar * camera.ray_factor()
    return np.where(hit, distance, background).astype(np.float32)


def motion_vectors(
    camera: Camera,
    distance: np.ndarray,
    segmentation: np.ndarray,
    poses_now: dict[int, np.ndarray],
    poses_prev: dict[int, np.ndarray],
) -> np.ndarray:
    """(H, W, 4) float32 motion vectors of frame t in the file convention (module doc).

    Args:
        distance: (H, W) Euclidean distance of frame t (finite on every body pixel).
        segmentation: (H, W) body id per pixel of frame t.
        poses_now / poses_prev: body id -> [x, y, z, qx, qy, qz, qw] at t and t-1, only for
            bodies that can move; pixels of other bodies and background stay 0.
    """
    out = np.zeros((camera.height, camera.width, 4), dtype=np.float32)
    u, v = camera.pixel_grid()
    for body, now in poses_now.items():
        prev = poses_prev[body]
        if np.array_equal(now, prev):
            continue
        mask = segmentation == body
        if not mask.any():
            continue
        world = camera.unproject(u[mask], v[mask], distance[mask].astype(np.float64))
        # Surface point in the body frame at t, then back to the world with the pose at t-1.
        rot_now, rot_prev = quat_to_matrix(now[3:]), quat_to_matrix(prev[3:])
        local = (world - now[:3]) @ rot_now
        world_prev = local @ rot_prev.T + prev[:3]
        u_prev, v_prev, _ = camera.project(world_prev)
        out[mask, 0] = u_prev - u[mask]
        out[mask, 1] = v_prev - v[mask]
    return out
