"""Scenario families: every one moves at once, stays on the floor and in view, and the textbook
families obey the law they show (free fall at g, bounce heights by e^2, sliding friction, a
pendulum's fixed length, rolling with the right moment of inertia).

Physics only (no rendering) at the simulator's 240 Hz, a few seconds in all; the rendered output
of every family is covered by test_generator.py.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pytest

from data.sim.families import FAMILIES
from data.sim.generate import GenConfig, SceneJob, _build, connect
from data.sim.ground_truth import quat_to_matrix
from data.sim.prompts import TEMPLATES, prompt_from_scene
from data.sim.world import GRAVITY

STEPS_PER_FRAME = 8  # 240 Hz physics, 30 fps recording
MECHANICS = ["projectile", "bounce", "incline_slide", "floor_slide", "pendulum", "newton_cradle",
             "seesaw", "ramp_race", "topple", "wall_rebound"]


@dataclass
class Trace:
    """One scene simulated without rendering: what scene.json would hold, per physics step."""

    objects: list[dict]
    """scene.json objects without poses (static ones too)."""
    constraints: list[dict]
    camera: object
    poses: np.ndarray
    """(S, N, 7) [x, y, z, qx, qy, qz, qw] of every object after each physics step (row 0: start)."""
    touching: np.ndarray
    """(S, N) bool: the object is in contact with something after that step."""

    def named(self, name: str) -> int:
        return next(i for i, o in enumerate(self.objects) if o["name"] == name)

    @property
    def movers(self) -> np.ndarray:
        return np.array([not o["static"] for o in self.objects])


def trace(family: str, seed: int, seconds: float) -> Trace:
    """Build a scene exactly as the generator does and step it, recording every step."""
    client = connect()
    world = None
    try:
        world, camera, *_ = _build(client, SceneJob(family, seed), GenConfig(width=64, height=64), 0)
        bodies = [o.body_id for o in world.objects]
        poses, touching = [], []
        for step in range(int(seconds * 240) + 1):
            if step:
                client.stepSimulation()
            poses.append([sum(client.getBasePositionAndOrientation(b), ()) for b in bodies])
            touching.append([bool(client.getContactPoints(bodyA=b)) for b in bodies])
        objects = [{k: v for k, v in o.to_json().items() if k != "poses"} for o in world.objects]
        return Trace(objects, list(world.constraints), camera, np.asarray(poses), np.asarray(touching))
    finally:
        if world is not None:
            world.close()
        client.disconnect()


def test_registry_holds_the_new_families_and_a_prompt_for_each() -> None:
    assert len(FAMILIES) >= 14
    assert set(MECHANICS) <= set(FAMILIES)
    assert set(FAMILIES) <= set(TEMPLATES)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_moves_at_once_and_stays_on_the_floor_in_view(family: str) -> None:
    """Over the demo's 33 frames (1.1 s), for two seeds: something moves within the first
    8 frames, no body sinks through the floor, every body's centre stays in the image, and every
    object the family's prompt names exists."""
    for seed in (0, 1):
        run = trace(family, seed, seconds=32 / 30)
        frames = run.poses[::STEPS_PER_FRAME][:, run.movers]
        moved = np.linalg.norm(frames[8, :, :3] - frames[0, :, :3], axis=1).max()
        turned = max(_angle_between(a, b) for a, b in zip(frames[8, :, 3:], frames[0, :, 3:]))
        assert moved > 0.02 or turned > math.radians(5), (family, seed, moved, turned)
        assert frames[:, :, 2].min() > 0.0, (family, seed, "a body sank through the floor")
        u, v, depth = run.camera.project(frames[:, :, :3].reshape(-1, 3))
        inside = (u >= 0) & (u < run.camera.width) & (v >= 0) & (v < run.camera.height) & (depth > 0)
        assert inside.all(), (family, seed, "a body left the view")
        names = [o["name"] for o in run.objects]
        for kind, key in re.findall(r"\{(?:(n|shape):)?(\w+)\}", TEMPLATES[family].replace("{floor}", "")):
            assert any(n.startswith(key) for n in names) if kind == "n" else key in names, key
        assert "{" not in prompt_from_scene({"family": family, "objects": run.objects})


def _angle_between(q1: np.ndarray, q2: np.ndarray) -> float:
    return 2 * math.acos(min(1.0, abs(float(np.dot(q1, q2)))))


def test_bodies_vary_between_seeds() -> None:
    """Shape, mass, friction and restitution are drawn per scene, and scene.json records them
    with the shape's size keys."""
    bodies = [trace("projectile", seed, seconds=0.0).objects[0] for seed in range(12)]
    size_keys = {"sphere": {"radius"}, "box": {"half_extents"}, "cylinder": {"radius", "length"},
                 "capsule": {"radius", "length"}, "compound": {"form", "parts"}}
    for body in bodies:
        assert size_keys[body["shape"]] <= set(body), body
        assert set(body["friction"]) == {"lateral", "rolling", "spinning"}
    assert len({b["shape"] for b in bodies}) >= 4
    for values in ([b["mass"] for b in bodies], [b["restitution"] for b in bodies],
                   [b["friction"]["lateral"] for b in bodies],
                   [b["friction"]["spinning"] for b in bodies]):
        assert len(set(values)) == len(bodies) and np.std(values) > 0.05 * np.mean(values)


def test_projectile_falls_freely_at_g() -> None:
    """Before its first contact the thrown body's centre of mass has vertical acceleration -g
    (whatever its shape and spin) and none sideways."""
    for seed in range(3):
        run = trace("projectile", seed, seconds=1.0)
        assert run.objects[0]["name"] == "body"
        free = int(np.argmax(run.touching[:, 0]))
        assert free > 0.3 * 240, "the throw must stay in the air for a while"
        t = np.arange(free) / 240.0
        coeffs = np.polyfit(t, run.poses[:free, 0, :3], 2)  # (3 coefficients, xyz)
        np.testing.assert_allclose(2 * coeffs[0], [0.0, 0.0, -GRAVITY], atol=0.01 * GRAVITY)


def test_bounce_heights_shrink_by_restitution_squared() -> None:
    for seed in range(3):
        run = trace("bounce", seed, seconds=2.5)
        i = run.named("ball")
        ball = run.objects[i]
        bottom = run.poses[:, i, 2] - ball["radius"][0]
        apexes = [bottom[0]] + _apexes(bottom, run.touching[:, i])
        assert len(apexes) >= 3, "the ball must bounce at least twice"
        ratios = np.asarray(apexes[1:3]) / np.asarray(apexes[:2])
        np.testing.assert_allclose(ratios, ball["restitution"] ** 2, rtol=0.1)


def _apexes(height: np.ndarray, touching: np.ndarray) -> list[float]:
    """Highest point of each flight between two contacts."""
    landings = np.flatnonzero(touching[1:] & ~touching[:-1]) + 1
    takeoffs = np.flatnonzero(~touching[1:] & touching[:-1]) + 1
    return [float(height[off:land].max()) for off in takeoffs
            for land in landings[landings > off][:1] if land - off > 12]


def test_incline_slide_accelerates_by_friction_law() -> None:
    """On the plank the box slides with a = g (sin a - mu cos a): faster or slowing, as drawn."""
    signs = set()
    for seed in range(6):
        run = trace("incline_slide", seed, seconds=0.4)
        box = run.named("box")
        mu = run.objects[box]["friction"]["lateral"]  # the ramp's friction is 1
        angle = _tilt(run.poses[0, box, 3:])
        expected = GRAVITY * (math.sin(angle) - mu * math.cos(angle))
        along = run.poses[:, box, :3] @ np.array([math.cos(angle), 0.0, -math.sin(angle)])
        speed = np.diff(along) * 240
        sliding = np.flatnonzero(speed > 0.05)
        window = sliding[(sliding > 10) & (sliding < 80)]  # settled contact, still on the plank
        fitted = np.polyfit(window / 240.0, speed[window], 1)[0]
        assert fitted == pytest.approx(expected, abs=0.05 * GRAVITY * math.sin(angle)), seed
        signs.add(expected > 0)
    assert signs == {True, False}, "seeds should give both sliding faster and slowing to a stop"


def _tilt(quat: np.ndarray) -> float:
    """Angle by which a body's x axis is tipped down (rotation about +y)."""
    x_axis = quat_to_matrix(quat)[:, 0]
    return math.atan2(-x_axis[2], x_axis[0])


def test_pendulum_keeps_its_length_and_swings_back() -> None:
    for seed in range(3):
        run = trace("pendulum", seed, seconds=2.0)
        (pin,) = run.constraints
        bob = run.named(pin["object"])
        rot = np.stack([quat_to_matrix(q) for q in run.poses[:, bob, 3:]])
        sphere = next(p for p in run.objects[bob]["parts"] if p["shape"] == "sphere")
        centre = run.poses[:, bob, :3] + rot @ np.asarray(sphere["position"])
        length = np.linalg.norm(centre - pin["world_point"], axis=1)
        assert np.abs(length / length[0] - 1).max() < 0.01
        side = np.sign(centre[:, 0] - pin["world_point"][0])
        assert len(np.flatnonzero(np.diff(side))) >= 2, "a swing out and back within 2 s"


def test_ramp_race_rolls_with_each_moment_of_inertia() -> None:
    """Rolling from rest, a = g (sin a - mu_r cos a / r) / (1 + k) with k = I / (m r^2): 2/5 for
    the ball, 1/2 for the cylinder, so the ball wins.  mu_r is the contact's rolling friction
    (Bullet: the body's rolling friction times the ramp's friction plus the other way round)."""
    for seed in range(3):
        run = trace("ramp_race", seed, seconds=0.5)
        ramp = run.objects[run.named("ramp")]
        angle = _tilt(run.poses[0, run.named("ramp"), 3:])
        t = np.arange(run.poses.shape[0]) / 240.0
        fitted = {}
        for name, k in (("ball", 2 / 5), ("cylinder", 1 / 2)):
            body = run.objects[run.named(name)]
            mu_r = (body["friction"]["rolling"] * ramp["friction"]["lateral"]
                    + body["friction"]["lateral"] * ramp["friction"]["rolling"])
            r = body["radius"][0]
            expected = GRAVITY * (math.sin(angle) - mu_r * math.cos(angle) / r) / (1 + k)
            along = run.poses[:, run.named(name), :3] @ [math.cos(angle), 0.0, -math.sin(angle)]
            fitted[name] = 2 * np.polyfit(t, along, 2)[0]
            assert fitted[name] == pytest.approx(expected, rel=0.03), (seed, name)
        assert fitted["ball"] > fitted["cylinder"]
