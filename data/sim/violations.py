"""Implausible variants of a scene: one small spec, simulated through hooks in ``generate.simulate``.

A :class:`Violation` names a kind and its parameters; :func:`make_hooks` turns it into the few
points where a run departs from the plausible take (before the loop, the substeps of a frame,
after stepping, the order frames are written).  Everything else (world, look, camera, start,
ground truth from poses) is the plausible code path, so a variant differs from its plausible take
only by the violation.  ``violation_pairs`` chooses the parameters from the plausible take.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pybullet_utils.bullet_client import BulletClient

from data.sim.bodies import GRAVITY
from data.sim.camera import Camera
from data.sim.ground_truth import motion_vectors
from data.sim.render import RawFrame
from data.sim.world import World
from data.sim.writer import SceneWriter

GRAVITY_FACTORS = {"gravity_half": 0.5, "gravity_double": 2.0, "gravity_up": -1.0}
"""Gravity kinds: factor on the normal downward gravity (-1: pointing up)."""
KINDS = (*GRAVITY_FACTORS, "teleport", "vanish", "pass_through", "speed_change", "time_reversed")
"""Every violation kind, in the order variants are made."""
HIDDEN_Z = -100.0
"""Height a vanished body is parked at: under the floor and far beyond the camera's far plane."""


@dataclass(frozen=True)
class Violation:
    """What an implausible variant breaks: ``kind`` (one of ``KINDS``) and its parameters, recorded
    as ``scene.json["violation"]``."""

    kind: str
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown violation {self.kind!r}; known: {', '.join(KINDS)}")

    def to_json(self) -> dict:
        return {"kind": self.kind, **self.params}


class Hooks:
    """The plausible take: every hook leaves the run as it is."""

    def __init__(self, violation: Violation | None, client: BulletClient, world: World,
                 camera: Camera) -> None:
        self.violation = violation
        self.params = violation.params if violation else {}
        self.client = client
        self.world = world
        self.camera = camera
        self.gravity = [0.0, 0.0, -GRAVITY]

    def before_loop(self) -> None:
        """Once the world is built, before frame 0 is recorded."""

    def substeps(self, t: int, default: int) -> int:
        """Physics steps from frame t-1 to frame t."""
        return default

    def after_step(self, t: int) -> None:
        """After the physics reached frame t, before it is recorded."""

    def record(self, writer: SceneWriter, t: int, raw: RawFrame, distance: np.ndarray,
               motion: np.ndarray, now: dict[int, np.ndarray]) -> None:
        """Hand frame t to the writer (``now``: poses of the bodies that can move)."""
        writer.write_frame(t, raw.rgb, motion, distance)

    def finish(self, writer: SceneWriter, meta: dict) -> None:
        """Complete ``meta`` once every frame is recorded: the violation and the gravity simulated."""
        meta["gravity"] = list(self.gravity)
        meta["violation"] = self.violation.to_json() if self.violation else None


class GravityHooks(Hooks):
    """Gravity scaled or flipped after the world is built (families place bodies under normal g)."""

    def before_loop(self) -> None:
        self.gravity = [0.0, 0.0, -GRAVITY * GRAVITY_FACTORS[self.violation.kind]]
        self.client.setGravity(*self.gravity)


class TeleportHooks(Hooks):
    """At ``frame`` the body ``body_id`` jumps by ``offset`` and flies on with its velocity."""

    def after_step(self, t: int) -> None:
        if t != self.params["frame"]:
            return
        body = self.params["body_id"]
        position, orientation = self.client.getBasePositionAndOrientation(body)
        linear, angular = self.client.getBaseVelocity(body)
        moved = np.add(position, self.params["offset"]).tolist()
        self.client.resetBasePositionAndOrientation(body, moved, orientation)
        self.client.resetBaseVelocity(body, linear, angular)


class VanishHooks(Hooks):
    """From ``frame`` on, the body ``body_id`` is parked still far below the floor (its pins
    released so they cannot drag anything after it)."""

    def after_step(self, t: int) -> None:
        frame, body = self.params["frame"], self.params["body_id"]
        if t < frame:
            return
        if t == frame:
            self._release_pins(body)
        _, orientation = self.client.getBasePositionAndOrientation(body)
        self.client.resetBasePositionAndOrientation(body, self.params["hidden_position"], orientation)
        self.client.resetBaseVelocity(body, [0.0, 0.0, 0.0], [0.0, 0.0, 0.0])

    def _release_pins(self, body: int) -> None:
        ids = [self.client.getConstraintUniqueId(i) for i in range(self.client.getNumConstraints())]
        for constraint in ids:
            if self.client.getConstraintInfo(constraint)[0] == body:
                self.client.removeConstraint(constraint)


class PassThroughHooks(Hooks):
    """No collisions between any moving body and anything else (floor, scenery, other bodies)."""

    def before_loop(self) -> None:
        every = [self.client.getBodyUniqueId(i) for i in range(self.client.getNumBodies())]
        for body in self.params["bodies"]:
            for other in every:
                if other != body:
                    self.client.setCollisionFilterPair(body, other, -1, -1, enableCollision=0)


class SpeedChangeHooks(Hooks):
    """Frames from ``switch_frame`` on are each reached with the second count of
    ``substeps_per_frame`` (frames dropped, the clip speeds up); ground truth stays exact because it
    comes from the poses."""

    def substeps(self, t: int, default: int) -> int:
        before, after = self.params["substeps_per_frame"]
        if before != default:
            raise ValueError(f"schedule starts at {before} substeps per frame, the run at {default}")
        return after if t >= self.params["switch_frame"] else before


class ReversedHooks(Hooks):
    """Frames written last first.  Frame t' = T-1-t of the written clip shows original frame t, and
    its motion is from original t+1 (now its previous frame) to t, computed from the poses."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.frames: list[tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, np.ndarray]]] = []

    def record(self, writer: SceneWriter, t: int, raw: RawFrame, distance: np.ndarray,
               motion: np.ndarray, now: dict[int, np.ndarray]) -> None:
        self.frames.append((raw.rgb, distance, raw.segmentation, now))

    def finish(self, writer: SceneWriter, meta: dict) -> None:
        last = len(self.frames) - 1
        for written in range(last + 1):
            t = last - written
            rgb, distance, segmentation, now = self.frames[t]
            if written == 0:
                motion = np.zeros((*distance.shape, 4), np.float32)
            else:
                motion = motion_vectors(self.camera, distance, segmentation, now, self.frames[t + 1][3])
            writer.write_frame(written, rgb, motion, distance)
        for obj in meta["objects"]:
            obj["poses"] = obj["poses"][::-1]
        meta["contacts"] = meta["contacts"][::-1]
        super().finish(writer, meta)


HOOKS: dict[str, type[Hooks]] = {
    **dict.fromkeys(GRAVITY_FACTORS, GravityHooks),
    "teleport": TeleportHooks,
    "vanish": VanishHooks,
    "pass_through": PassThroughHooks,
    "speed_change": SpeedChangeHooks,
    "time_reversed": ReversedHooks,
}


def make_hooks(violation: Violation | None, client: BulletClient, world: World,
               camera: Camera) -> Hooks:
    """The hooks that run ``violation`` (plain :class:`Hooks` for the plausible take)."""
    kind = Hooks if violation is None else HOOKS[violation.kind]
    return kind(violation, client, world, camera)
