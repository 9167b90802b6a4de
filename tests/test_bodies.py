"""Bodies: exact mass properties of compounds and round shapes, and rendered geometry that matches
what scene.json records (pose + shape), which is what makes ground-truth flow exact for them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from data.sim.camera import Camera
from data.sim.generate import connect
from data.sim.ground_truth import distance_from_depth_buffer, quat_to_matrix
from data.sim.layout import spawn_any
from data.sim.render import render
from data.sim.shapes import (
    Part,
    compound_frame,
    dumbbell,
    hammer,
    inertia_diagonal,
    l_bracket,
)
from data.sim.world import World


def _tensor(parts: list[Part], masses: list[float]) -> np.ndarray:
    """Inertia tensor about the origin of the frame the parts are placed in."""
    total = np.zeros((3, 3))
    for part, m in zip(parts, masses):
        rot = quat_to_matrix(np.asarray(part.orientation))
        offset = np.asarray(part.position)
        total += rot @ np.diag(inertia_diagonal(part, m)) @ rot.T
        total += m * (offset @ offset * np.eye(3) - np.outer(offset, offset))
    return total


def test_dumbbell_mass_properties_known_answer() -> None:
    a, b, length, mass = 0.05, 0.01, 0.3, 2.0
    frame = compound_frame(dumbbell(a, b, length), mass)
    v_ball, v_bar = 4 / 3 * math.pi * a**3, math.pi * b * b * length
    m_ball = mass * v_ball / (2 * v_ball + v_bar)
    m_bar = mass - 2 * m_ball
    axial = 2 * 0.4 * m_ball * a * a + 0.5 * m_bar * b * b
    side = 2 * (0.4 * m_ball * a * a + m_ball * (length / 2) ** 2) + m_bar * (3 * b * b + length**2) / 12
    np.testing.assert_allclose(frame.inertia, [axial, side, side], rtol=1e-9)
    np.testing.assert_allclose(frame.centre, 0.0, atol=1e-12)


def test_capsule_inertia_matches_numerical_integration() -> None:
    r, length, mass = 0.05, 0.12, 1.5
    step = 0.0025
    axis = np.arange(-0.15, 0.15, step) + step / 2
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    inside = np.hypot(x, y) ** 2 + np.maximum(np.abs(z) - length / 2, 0) ** 2 <= r * r
    m = mass / inside.sum()
    numeric = m * np.array([((y**2 + z**2)[inside]).sum(), ((x**2 + z**2)[inside]).sum(),
                            ((x**2 + y**2)[inside]).sum()])
    np.testing.assert_allclose(inertia_diagonal(Part("capsule", radius=r, length=length), mass),
                               numeric, rtol=0.01)


def test_l_bracket_is_re_expressed_in_its_principal_frame() -> None:
    """The L's products of inertia are not zero in its design frame; in the body frame the parts
    balance about the origin, the tensor is diagonal, and mapping back restores the design."""
    parts = l_bracket((0.15, 0.04, 0.03), (0.03, 0.04, 0.1))
    design = _tensor(parts, compound_frame(parts, 1.0).part_masses)
    assert abs(design[0, 2]) > 1e-4
    frame = compound_frame(parts, 1.0)
    placed = np.array([p.position for p in frame.parts])
    np.testing.assert_allclose(np.asarray(frame.part_masses) @ placed, 0.0, atol=1e-12)
    body = _tensor(frame.parts, frame.part_masses)
    np.testing.assert_allclose(body, np.diag(frame.inertia), atol=1e-12)
    back = placed @ frame.design_rotation.T + frame.centre
    np.testing.assert_allclose(back, [p.position for p in parts], atol=1e-12)


def test_hammer_centre_of_mass_sits_towards_its_dense_head() -> None:
    frame = compound_frame(hammer(0.01, 0.3, (0.05, 0.02, 0.02), head_density=3.0), 1.0)
    assert 0.15 < frame.centre[2] < 0.32  # above the handle's middle, below the head's centre


@pytest.mark.parametrize("kind", ["sphere", "box", "cylinder", "capsule", "compound"])
def test_rendered_surface_lies_on_recorded_shape_at_recorded_pose(kind: str) -> None:
    """Tumbling bodies, rendered: every pixel of a body, unprojected from its distance and taken
    into the body frame with the pose the generator records, lies on the shape scene.json records.

    Motion vectors move those same body-frame points with the recorded poses, so this is what
    makes them exact for every shape.  TinyRenderer tessellates round surfaces (faces up to ~6 %
    of the radius inside the true surface), hence the tolerances.
    """
    client = connect()
    world = World(client, np.random.default_rng(7))
    try:
        client.setGravity(0, 0, -9.81)
        bodies = [spawn_any(world, f"body_{i}", "red", 0.1, [x, 0.0, 0.6], 1.0, kinds=(kind,),
                            spin=[4.0, -3.0, 5.0]) for i, x in enumerate((-0.35, 0.0, 0.35))]
        for _ in range(20):
            client.stepSimulation()
        camera = Camera(160, 96, 40.0, 0.05, 10.0, (0.0, -1.6, 0.7), (0.0, 0.0, 0.5))
        raw = render(client, camera, shadows=False)
        distance = distance_from_depth_buffer(raw.depth_buffer, raw.segmentation >= 0, camera, 0.0)
        u, v = camera.pixel_grid()
        for obj in bodies:
            mask = raw.segmentation == obj.body_id
            assert mask.sum() > 100, kind
            points = camera.unproject(u[mask], v[mask], distance[mask].astype(np.float64))
            pos, orn = client.getBasePositionAndOrientation(obj.body_id)
            local = (points - np.asarray(pos)) @ quat_to_matrix(np.asarray(orn))
            gap = np.abs(_signed_distance(obj.to_json(), local))
            assert np.median(gap) < 0.006 and np.quantile(gap, 0.95) < 0.008, (kind, gap.max())
    finally:
        world.close()
        client.disconnect()


def _signed_distance(shape: dict, q: np.ndarray) -> np.ndarray:
    """Signed distance (N,) of body-frame points to a scene.json shape (negative inside)."""
    kind = shape["shape"]
    if kind == "compound":
        parts = []
        for part in shape["parts"]:
            rot = quat_to_matrix(np.asarray(part["orientation"]))
            parts.append(_signed_distance(part, (q - np.asarray(part["position"])) @ rot))
        return np.min(parts, axis=0)
    if kind == "sphere":
        return np.linalg.norm(q, axis=1) - shape["radius"][0]
    if kind == "box":
        return _box_distance(q, np.asarray(shape["half_extents"]))
    r, half = shape["radius"][0], shape["length"][0] / 2
    if kind == "cylinder":
        flat = np.stack([np.hypot(q[:, 0], q[:, 1]), np.abs(q[:, 2])], axis=1)
        return _box_distance(flat, np.array([r, half]))
    axis_point = np.clip(q[:, 2], -half, half)
    return np.linalg.norm(q - np.stack([0 * axis_point, 0 * axis_point, axis_point], 1), axis=1) - r


def _box_distance(q: np.ndarray, half: np.ndarray) -> np.ndarray:
    d = np.abs(q) - half
    return np.linalg.norm(np.maximum(d, 0.0), axis=1) + np.minimum(d.max(axis=1), 0.0)
