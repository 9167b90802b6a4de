"""Geometry and mass properties of bodies, without pybullet: primitives, compounds, quaternions.

Bullet estimates the inertia of cylinders, capsules and compound shapes from their bounding box,
which is wrong enough to change physics the scenes are about (a solid cylinder rolls down a ramp
with a = 2/3 g sin(theta) only if I = m r^2 / 2).  The exact values computed here are handed to
Bullet instead.  A compound is shifted and rotated so that its body frame is its centre of mass
and principal axes: then the recorded pose is the centre of mass, as for every other body.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from data.sim.ground_truth import quat_to_matrix

IDENTITY = (0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class Part:
    """One primitive of a compound body, placed in the compound's frame.

    ``shape`` is "sphere", "box", "cylinder" or "capsule"; cylinders and capsules lie along their
    local z axis.  ``density`` is relative: a hammer's head can be denser than its handle.
    """

    shape: str
    radius: float = 0.0
    length: float = 0.0
    half_extents: tuple[float, float, float] = (0.0, 0.0, 0.0)
    position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    orientation: tuple[float, float, float, float] = IDENTITY
    density: float = 1.0

    def volume(self) -> float:
        r, length = self.radius, self.length
        if self.shape == "sphere":
            return 4.0 / 3.0 * math.pi * r**3
        if self.shape == "box":
            return 8.0 * float(np.prod(self.half_extents))
        if self.shape == "cylinder":
            return math.pi * r * r * length
        if self.shape == "capsule":
            return math.pi * r * r * length + 4.0 / 3.0 * math.pi * r**3
        raise ValueError(f"unknown part shape {self.shape!r}")

    def to_json(self) -> dict:
        out: dict = {"shape": self.shape}
        if self.shape == "box":
            out["half_extents"] = list(self.half_extents)
        else:
            out["radius"] = [self.radius]
        if self.shape in ("cylinder", "capsule"):
            out["length"] = [self.length]
        out["position"] = list(self.position)
        out["orientation"] = list(self.orientation)
        return out


def inertia_diagonal(part: Part, mass: float) -> np.ndarray:
    """Principal moments (3,) of a solid primitive about its centre, in its own frame."""
    r, length = part.radius, part.length
    if part.shape == "sphere":
        return np.full(3, 0.4 * mass * r * r)
    if part.shape == "box":
        hx, hy, hz = part.half_extents
        return mass / 3.0 * np.array([hy * hy + hz * hz, hx * hx + hz * hz, hx * hx + hy * hy])
    if part.shape == "cylinder":
        side = mass * (3 * r * r + length * length) / 12.0
        return np.array([side, side, 0.5 * mass * r * r])
    if part.shape == "capsule":
        return _capsule_inertia(r, length, mass)
    raise ValueError(f"unknown part shape {part.shape!r}")


def _capsule_inertia(r: float, length: float, mass: float) -> np.ndarray:
    """A cylinder of ``length`` capped by two hemispheres, uniform density."""
    cyl_vol, sphere_vol = math.pi * r * r * length, 4.0 / 3.0 * math.pi * r**3
    m_cyl = mass * cyl_vol / (cyl_vol + sphere_vol)
    m_hemi = (mass - m_cyl) / 2.0
    axial = 0.5 * m_cyl * r * r + 2 * 0.4 * m_hemi * r * r
    # A hemisphere's centroid sits 3r/8 from its flat face; parallel axis to the capsule centre.
    hemi_side = 0.4 * m_hemi * r * r + m_hemi * (length / 2 + 3 * r / 8) ** 2 - m_hemi * (3 * r / 8) ** 2
    side = m_cyl * (3 * r * r + length * length) / 12.0 + 2 * hemi_side
    return np.array([side, side, axial])


@dataclass
class CompoundFrame:
    """A compound re-expressed in its centre-of-mass, principal-axes frame.

    ``parts`` are placed in that frame; ``design_rotation`` (3, 3) and ``centre`` map it back to
    the frame the parts were designed in: x_design = design_rotation @ x_body + centre.
    ``inertia`` holds the principal moments (3,), ``part_masses`` each part's share of the mass.
    """

    parts: list[Part]
    inertia: np.ndarray
    centre: np.ndarray
    design_rotation: np.ndarray
    part_masses: list[float]


def compound_frame(parts: list[Part], mass: float) -> CompoundFrame:
    """Centre of mass, principal moments and re-placed parts of a compound of total ``mass``."""
    weights = np.array([p.volume() * p.density for p in parts])
    masses = mass * weights / weights.sum()
    positions = np.array([p.position for p in parts], dtype=np.float64)
    centre = masses @ positions / mass
    tensor = np.zeros((3, 3))
    for part, m, pos in zip(parts, masses, positions):
        rot = quat_to_matrix(np.asarray(part.orientation))
        offset = pos - centre
        tensor += rot @ np.diag(inertia_diagonal(part, m)) @ rot.T
        tensor += m * (offset @ offset * np.eye(3) - np.outer(offset, offset))
    rotation = _principal_axes(tensor)
    placed = [_re_place(part, centre, rotation) for part in parts]
    moments = np.diag(rotation.T @ tensor @ rotation).copy()
    return CompoundFrame(placed, moments, centre, rotation, [float(m) for m in masses])


def _principal_axes(tensor: np.ndarray) -> np.ndarray:
    """Rotation whose columns are principal axes; identity when the tensor is already diagonal.

    Keeping the identity for symmetric compounds (dumbbell, hammer) keeps their recorded parts in
    the frame they were designed in, which is easier to read.
    """
    off_diagonal = tensor - np.diag(np.diag(tensor))
    if np.abs(off_diagonal).max() <= 1e-9 * np.abs(tensor).max():
        return np.eye(3)
    _, vectors = np.linalg.eigh(tensor)
    if np.linalg.det(vectors) < 0:
        vectors[:, 2] *= -1.0
    return vectors


def shifted(part: Part, offset: tuple[float, float, float]) -> Part:
    """``part`` moved by ``offset`` (to put a compound's design origin where a builder wants it)."""
    return replace(part, position=tuple(float(a + b) for a, b in zip(part.position, offset)))


def _re_place(part: Part, centre: np.ndarray, rotation: np.ndarray) -> Part:
    position = rotation.T @ (np.asarray(part.position) - centre)
    orientation = matrix_to_quat(rotation.T @ quat_to_matrix(np.asarray(part.orientation)))
    return replace(part, position=tuple(float(x) for x in position), orientation=orientation)


def matrix_to_quat(rot: np.ndarray) -> tuple[float, float, float, float]:
    """Quaternion ``[qx, qy, qz, qw]`` of a rotation matrix (Shepperd's method, stable)."""
    m = np.asarray(rot, dtype=np.float64)
    trace = np.trace(m)
    if trace > 0:
        s = 2.0 * math.sqrt(1.0 + trace)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * math.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
        q = [0.0] * 4
        q[i], q[j], q[k] = s / 4, (m[j, i] + m[i, j]) / s, (m[k, i] + m[i, k]) / s
        q[3] = (m[k, j] - m[j, k]) / s
    q = np.asarray(q) / np.linalg.norm(q)
    return tuple(float(v) for v in q)


def axis_quat(axis: str, angle: float) -> tuple[float, float, float, float]:
    """Quaternion of a rotation by ``angle`` (rad) about the world ``axis`` "x", "y" or "z"."""
    half = angle / 2.0
    vec = {"x": (1.0, 0.0, 0.0), "y": (0.0, 1.0, 0.0), "z": (0.0, 0.0, 1.0)}[axis]
    s = math.sin(half)
    return (vec[0] * s, vec[1] * s, vec[2] * s, math.cos(half))


def quat_multiply(a, b) -> tuple[float, float, float, float]:
    """Hamilton product ``a * b``: rotate by ``b`` first, then by ``a``."""
    return matrix_to_quat(quat_to_matrix(np.asarray(a)) @ quat_to_matrix(np.asarray(b)))


# Cylinders lie along z; these turn them to lie along x or y.
ALONG_X = axis_quat("y", math.pi / 2)
ALONG_Y = axis_quat("x", math.pi / 2)


def dumbbell(end_radius: float, bar_radius: float, bar_length: float) -> list[Part]:
    """Two spheres joined by a bar along x."""
    half = bar_length / 2.0
    return [Part("sphere", radius=end_radius, position=(-half, 0.0, 0.0)),
            Part("sphere", radius=end_radius, position=(half, 0.0, 0.0)),
            Part("cylinder", radius=bar_radius, length=bar_length, orientation=ALONG_X)]


def hammer(handle_radius: float, handle_length: float, head: tuple[float, float, float],
           head_density: float) -> list[Part]:
    """A handle along z (its foot at z = 0) with a box head across its top end."""
    return [Part("cylinder", radius=handle_radius, length=handle_length,
                 position=(0.0, 0.0, handle_length / 2)),
            Part("box", half_extents=head, position=(0.0, 0.0, handle_length + head[2]),
                 density=head_density)]


def l_bracket(long_half: tuple[float, float, float], short_half: tuple[float, float, float]
              ) -> list[Part]:
    """Two boxes joined in an L: a long leg along x and a short leg standing up at its +x end.

    Its products of inertia are not zero, so it exercises the principal-axes rotation.
    """
    lx, ly, lz = long_half
    sx, _, sz = short_half
    return [Part("box", half_extents=long_half, position=(0.0, 0.0, lz)),
            Part("box", half_extents=(sx, ly, sz), position=(lx - sx, 0.0, 2 * lz + sz))]
