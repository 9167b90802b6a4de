"""The bodies scenes are made of: spheres, boxes, cylinders, capsules and compounds, plus pins.

Every body is created through :meth:`BodyBuilder._register`, so each one gets contact coefficients
drawn from the scene seed (unless its family fixes a value or range) and is recorded the same way
in ``scene.json``: shape with its size keys, mass, friction, restitution, colour, poses.  Pins
(point-to-point constraints) make pendulums and levers; they are recorded too, because unlike
contacts they leave no trace in the contact list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pybullet as p
from pybullet_utils.bullet_client import BulletClient

from data.sim.ground_truth import quat_to_matrix
from data.sim.shapes import (
    IDENTITY,
    Part,
    compound_frame,
    inertia_diagonal,
    matrix_to_quat,
)

GRAVITY = 9.81
ZERO = (0.0, 0.0, 0.0)

LATERAL_FRICTION = (0.35, 0.8)
"""Default range of a body's sliding friction coefficient against the floor."""
RESTITUTION = (0.15, 0.55)
"""Default range of restitution against the floor: bounces are visible but die out quickly."""
SPINNING_FRICTION = (0.0005, 0.003)
"""Default range (m) of the torsional friction that stops bodies spinning on a point contact."""
FLAT_ROLLING_FRICTION = 0.001
"""Rolling friction (m) of bodies without a round side; round bodies use the scene's deceleration."""

_GEOMS = {"sphere": p.GEOM_SPHERE, "box": p.GEOM_BOX, "cylinder": p.GEOM_CYLINDER,
          "capsule": p.GEOM_CAPSULE}

Coefficient = float | tuple[float, float] | None
"""A fixed value, a (low, high) range to draw from, or None for the default range."""


@dataclass(frozen=True)
class Surface:
    """Contact coefficients of one body.

    Bullet multiplies the coefficients of the two bodies in a contact.  The scenery (floor, walls)
    is given friction 1 and restitution 1, so these are the body's values against the floor;
    between two objects the products apply.  ``rolling`` and ``spinning`` are lengths (m): the
    resisting torque is that length times the normal force.
    """

    lateral: float
    rolling: float
    spinning: float
    restitution: float

    def friction_json(self) -> dict[str, float]:
        return {"lateral": self.lateral, "rolling": self.rolling, "spinning": self.spinning}


@dataclass
class SimObject:
    """One body in the scene and what ``scene.json`` records about it.

    ``geometry`` holds the shape's size keys: ``radius`` [r] (sphere), ``half_extents`` (box),
    ``radius`` and ``length`` along the local z axis (cylinder, capsule: length between the cap
    centres), or ``form`` and ``parts`` placed in the body frame (compound).
    """

    name: str
    body_id: int
    shape: str
    geometry: dict
    mass: float
    color: list[float]
    color_name: str
    static: bool
    surface: Surface
    poses: list[list[float]] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "body_id": self.body_id,
            "shape": self.shape,
            **self.geometry,
            "mass": self.mass,
            "friction": self.surface.friction_json(),
            "restitution": self.surface.restitution,
            "color": self.color,
            "color_name": self.color_name,
            "static": self.static,
            "poses": self.poses,
        }


@dataclass(frozen=True)
class _Shape:
    """What :meth:`BodyBuilder._register` needs to know about a body's shape."""

    kind: str
    geometry: dict
    collision: int
    visual: int
    inertia: np.ndarray | None = None
    rolling_radius: float | None = None


class BodyBuilder:
    """Body-making half of :class:`data.sim.world.World`.

    Relies on the world's ``client``, ``rng``, ``objects``, ``constraints``, ``rolling_decel`` and
    ``_rgba``.  ``mass`` 0 makes any body static (tables, ramps, occluders, supports).
    """

    client: BulletClient
    rng: np.random.Generator
    objects: list[SimObject]
    constraints: list[dict]
    rolling_decel: float

    def spawn_ball(self, name: str, radius: float, position: Sequence[float], color: str,
                   mass: float = 1.0, velocity: Sequence[float] = ZERO,
                   angular_velocity: Sequence[float] = ZERO, rolling: bool = False,
                   friction: Coefficient = None, restitution: Coefficient = None) -> SimObject:
        """A sphere; ``rolling`` adds the spin of rolling without slipping on the floor.

        Without it, friction first brakes a launched ball to 5/7 of its speed.
        """
        shape = _Shape("sphere", {"radius": [radius]},
                       self.client.createCollisionShape(p.GEOM_SPHERE, radius=radius),
                       self._visual([Part("sphere", radius=radius)]), rolling_radius=radius)
        spin = np.add(angular_velocity, rolling_spin(velocity, radius) if rolling else ZERO)
        return self._register(name, shape, color, mass, position, IDENTITY, velocity,
                              spin.tolist(), friction, restitution)

    def spawn_box(self, name: str, half_extents: Sequence[float], position: Sequence[float],
                  color: str, mass: float = 1.0, orientation: Sequence[float] = IDENTITY,
                  velocity: Sequence[float] = ZERO, angular_velocity: Sequence[float] = ZERO,
                  friction: Coefficient = None, restitution: Coefficient = None) -> SimObject:
        """A box (Bullet's own box inertia is exact)."""
        half = tuple(float(h) for h in half_extents)
        shape = _Shape("box", {"half_extents": list(half)},
                       self.client.createCollisionShape(p.GEOM_BOX, halfExtents=half),
                       self._visual([Part("box", half_extents=half)]))
        return self._register(name, shape, color, mass, position, orientation, velocity,
                              angular_velocity, friction, restitution)

    def spawn_cylinder(self, name: str, radius: float, length: float, position: Sequence[float],
                       color: str, mass: float = 1.0, orientation: Sequence[float] = IDENTITY,
                       velocity: Sequence[float] = ZERO, angular_velocity: Sequence[float] = ZERO,
                       rolling: bool = False, friction: Coefficient = None,
                       restitution: Coefficient = None) -> SimObject:
        """A solid cylinder along its local z; ``rolling`` as for balls (axis horizontal, across v)."""
        return self._round_body("cylinder", p.GEOM_CYLINDER, name, radius, length, position, color,
                                mass, orientation, velocity, angular_velocity, rolling, friction,
                                restitution)

    def spawn_capsule(self, name: str, radius: float, length: float, position: Sequence[float],
                      color: str, mass: float = 1.0, orientation: Sequence[float] = IDENTITY,
                      velocity: Sequence[float] = ZERO, angular_velocity: Sequence[float] = ZERO,
                      rolling: bool = False, friction: Coefficient = None,
                      restitution: Coefficient = None) -> SimObject:
        """A capsule along its local z; ``length`` is the distance between its cap centres."""
        return self._round_body("capsule", p.GEOM_CAPSULE, name, radius, length, position, color,
                                mass, orientation, velocity, angular_velocity, rolling, friction,
                                restitution)

    def spawn_compound(self, name: str, form: str, parts: list[Part], position: Sequence[float],
                       color: str, mass: float = 1.0, orientation: Sequence[float] = IDENTITY,
                       velocity: Sequence[float] = ZERO, angular_velocity: Sequence[float] = ZERO,
                       friction: Coefficient = None, restitution: Coefficient = None
                       ) -> SimObject:
        """One rigid body made of ``parts`` placed in a design frame (dumbbell, hammer, L...).

        ``position`` and ``orientation`` place the design frame.  The body itself lives in the
        compound's centre-of-mass, principal-axes frame, so its recorded pose is the centre of
        mass like every other body's and ``parts`` in ``scene.json`` are given in that frame.
        """
        frame = compound_frame(parts, mass if mass > 0 else 1.0)
        design = quat_to_matrix(np.asarray(orientation, dtype=np.float64))
        centre = np.asarray(position, dtype=np.float64) + design @ frame.centre
        body_orientation = matrix_to_quat(design @ frame.design_rotation)
        radii = [part.radius for part in frame.parts]
        shape = _Shape("compound", {"form": form, "parts": [q.to_json() for q in frame.parts]},
                       self._collision(frame.parts), self._visual(frame.parts), frame.inertia,
                       rolling_radius=max(radii) or None)
        return self._register(name, shape, color, mass, centre, body_orientation, velocity,
                              angular_velocity, friction, restitution)

    def pin(self, obj: SimObject, world_point: Sequence[float]) -> None:
        """Hold the point of ``obj`` now at ``world_point`` there: a frictionless ball joint.

        Two pins on one axis make a hinge (a seesaw); one pin makes a pendulum.
        """
        pos, orn = self.client.getBasePositionAndOrientation(obj.body_id)
        world = np.asarray(world_point, dtype=np.float64)
        local = quat_to_matrix(np.asarray(orn)).T @ (world - np.asarray(pos))
        self.client.createConstraint(obj.body_id, -1, -1, -1, p.JOINT_POINT2POINT, [0, 0, 0],
                                     local.tolist(), world.tolist())
        self.constraints.append({"kind": "point", "object": obj.name, "body_id": obj.body_id,
                                 "body_point": local.tolist(), "world_point": world.tolist()})

    def spin_about(self, obj: SimObject, world_point: Sequence[float],
                   angular_velocity: Sequence[float]) -> None:
        """Set ``obj`` turning about a world point (tipping over an edge): v = w x (c - point)."""
        pos, _ = self.client.getBasePositionAndOrientation(obj.body_id)
        omega = np.asarray(angular_velocity, dtype=np.float64)
        velocity = np.cross(omega, np.asarray(pos) - np.asarray(world_point, dtype=np.float64))
        self.client.resetBaseVelocity(obj.body_id, velocity.tolist(), omega.tolist())

    def ignore_collisions(self, a: SimObject, b: SimObject) -> None:
        """Let two bodies overlap (a pinned pendulum rod and the beam it hangs from)."""
        self.client.setCollisionFilterPair(a.body_id, b.body_id, -1, -1, 0)

    def neutral_scenery(self, body: int) -> None:
        """Friction 1 and restitution 1 on floor and walls: contacts then use the object's values."""
        self.client.changeDynamics(body, -1, lateralFriction=1.0, restitution=1.0,
                                   rollingFriction=0.0, spinningFriction=0.0)

    def draw_surface(self, friction: Coefficient = None, restitution: Coefficient = None,
                     rolling_radius: float | None = None) -> Surface:
        """Contact coefficients: drawn from the scene's RNG unless fixed by the caller.

        Round bodies get the rolling friction that slows them by the scene's ``rolling_decel``
        (Bullet's rolling friction decelerates a rolling body by about g * mu_r / r).
        """
        lateral = self._coefficient(friction, LATERAL_FRICTION)
        bounce = self._coefficient(restitution, RESTITUTION)
        spinning = self._coefficient(None, SPINNING_FRICTION)
        rolling = (self.rolling_decel * rolling_radius / GRAVITY if rolling_radius
                   else FLAT_ROLLING_FRICTION)
        return Surface(lateral, float(rolling), spinning, bounce)

    def _coefficient(self, value: Coefficient, default: tuple[float, float]) -> float:
        if value is None:
            value = default
        if isinstance(value, tuple):
            return float(self.rng.uniform(*value))
        return float(value)

    def _round_body(self, kind: str, geom: int, name: str, radius: float, length: float,
                    position, color, mass, orientation, velocity, angular_velocity, rolling,
                    friction, restitution) -> SimObject:
        part = Part(kind, radius=radius, length=length)
        shape = _Shape(kind, {"radius": [radius], "length": [length]},
                       self.client.createCollisionShape(geom, radius=radius, height=length),
                       self._visual([part]), inertia_diagonal(part, mass), rolling_radius=radius)
        spin = np.add(angular_velocity, rolling_spin(velocity, radius) if rolling else ZERO)
        return self._register(name, shape, color, mass, position, orientation, velocity,
                              spin.tolist(), friction, restitution)

    def _collision(self, parts: list[Part]) -> int:
        return self.client.createCollisionShapeArray(
            shapeTypes=[_GEOMS[q.shape] for q in parts], radii=[q.radius for q in parts],
            halfExtents=[list(q.half_extents) for q in parts], lengths=[q.length for q in parts],
            collisionFramePositions=[list(q.position) for q in parts],
            collisionFrameOrientations=[list(q.orientation) for q in parts])

    def _visual(self, parts: list[Part]) -> int:
        """Visual shapes of ``parts``; capsules are drawn as a cylinder and two spheres.

        TinyRenderer draws pybullet's own capsule as a coarse pointed prism, while its spheres and
        cylinders are smooth.
        """
        drawn = [piece for part in parts for piece in _drawable(part)]
        if len(drawn) == 1 and drawn[0].position == ZERO:
            q = drawn[0]
            return self.client.createVisualShape(_GEOMS[q.shape], radius=q.radius,
                                                 halfExtents=list(q.half_extents), length=q.length)
        return self.client.createVisualShapeArray(
            shapeTypes=[_GEOMS[q.shape] for q in drawn], radii=[q.radius for q in drawn],
            halfExtents=[list(q.half_extents) for q in drawn], lengths=[q.length for q in drawn],
            visualFramePositions=[list(q.position) for q in drawn],
            visualFrameOrientations=[list(q.orientation) for q in drawn])

    def _register(self, name: str, shape: _Shape, color: str, mass: float,
                  position: Sequence[float], orientation: Sequence[float],
                  velocity: Sequence[float], angular_velocity: Sequence[float],
                  friction: Coefficient, restitution: Coefficient) -> SimObject:
        body = self.client.createMultiBody(mass, shape.collision, shape.visual, list(position),
                                           list(orientation))
        rgba = self._rgba(color)
        self.client.changeVisualShape(body, -1, rgbaColor=rgba)
        surface = self.draw_surface(friction, restitution, shape.rolling_radius)
        # No air drag (pybullet's default damping is 0.04/s): free fall is then exactly g.
        self.client.changeDynamics(body, -1, lateralFriction=surface.lateral,
                                   rollingFriction=surface.rolling,
                                   spinningFriction=surface.spinning,
                                   restitution=surface.restitution, linearDamping=0.0,
                                   angularDamping=0.0)
        if mass > 0:
            if shape.inertia is not None:
                self.client.changeDynamics(body, -1,
                                           localInertiaDiagonal=[float(v) for v in shape.inertia])
            self.client.resetBaseVelocity(body, list(velocity), list(angular_velocity))
        obj = SimObject(name, body, shape.kind, shape.geometry, float(mass), rgba, color,
                        static=mass == 0, surface=surface)
        self.objects.append(obj)
        return obj


def rolling_spin(velocity: Sequence[float], radius: float) -> tuple[float, float, float]:
    """Angular velocity of rolling without slipping on a horizontal surface: z x v / r."""
    spin = np.cross([0.0, 0.0, 1.0], velocity) / radius
    return tuple(float(w) for w in spin)


def _drawable(part: Part) -> list[Part]:
    if part.shape != "capsule":
        return [part]
    rot = quat_to_matrix(np.asarray(part.orientation))
    cap = rot @ np.array([0.0, 0.0, part.length / 2])
    centre = np.asarray(part.position)
    ends = [Part("sphere", radius=part.radius, position=tuple(centre + s * cap)) for s in (-1, 1)]
    body = Part("cylinder", radius=part.radius, length=part.length, position=part.position,
                orientation=part.orientation)
    return [body, *ends]
