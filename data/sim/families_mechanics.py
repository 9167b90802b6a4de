"""Textbook mechanics scenarios: each shows a law the Physics-IQ-like families do not.

``projectile``: a tumbling body's centre of mass follows a parabola, then bounces.
``bounce``: a ball's bounce heights shrink by restitution squared.
``incline_slide``: a box pushed down an incline slides, a = g (sin - mu cos): it speeds up or sticks.
``floor_slide``: a box or puck pushed along the floor slides and spins to rest, a = -mu g.
``pendulum``: a rigid pendulum swings about a pin (periodic motion).
``newton_cradle``: a row of touching pendulums passes momentum along.
``seesaw``: a dropped weight tips a hinged plank and throws the load on its other end (lever).
``ramp_race``: a ball (I = 2/5 m r^2) beats a cylinder (1/2 m r^2) down one ramp.
``topple``: an upright hammer or dumbbell tipped past its base falls over (centre of mass).
``wall_rebound``: a ball or puck bounces back from a barrier (reflection with restitution).

Layout conventions are those of ``layout``.  Every number is drawn from ``world.rng``.
"""

from __future__ import annotations

import math

import numpy as np

from data.sim.bodies import SimObject
from data.sim.layout import CameraAim, spawn_any, uniform, y_about_quat
from data.sim.shapes import ALONG_Y, Part, axis_quat, dumbbell, hammer, quat_multiply
from data.sim.world import GRAVITY, World

ROD_RADIUS = 0.008
"""Pendulum rods are thin and light so the bob dominates (nearly a simple pendulum)."""
ROD_DENSITY = 0.15


def projectile(world: World) -> CameraAim:
    """A body of any shape is thrown in an arc, tumbling, and lands."""
    (color,) = world.pick_colors(1)
    start = [uniform(world, -0.85, -0.6), uniform(world, -0.15, 0.15), uniform(world, 0.15, 0.35)]
    velocity = [uniform(world, 1.0, 1.6), uniform(world, -0.15, 0.15), uniform(world, 2.4, 3.2)]
    spin = world.rng.uniform(-6.0, 6.0, 3).tolist()
    spawn_any(world, "body", color, uniform(world, 0.07, 0.11), start, uniform(world, 0.2, 1.5),
              velocity=velocity, spin=spin)
    return CameraAim(target=(0.0, 0.0, 0.45), position=(0.0, -2.6, 1.0))


def bounce(world: World) -> CameraAim:
    """A lively ball is dropped and bounces a few times, each bounce lower."""
    (color,) = world.pick_colors(1)
    r = uniform(world, 0.07, 0.12)
    start = [uniform(world, -0.3, 0.3), uniform(world, -0.1, 0.2), uniform(world, 0.7, 1.05)]
    world.spawn_ball("ball", r, start, color, mass=uniform(world, 0.1, 1.0),
                     velocity=[uniform(world, -0.25, 0.25), 0.0, 0.0], restitution=(0.55, 0.85))
    return CameraAim(target=(0.0, 0.0, 0.5), position=(0.0, -2.6, 1.0))


def incline_slide(world: World) -> CameraAim:
    """A flat box pushed down a plank slides: faster if mu < tan(angle), else it slows and sticks."""
    box_c, ramp_c = world.pick_colors(2)
    angle = math.radians(uniform(world, 18.0, 30.0))
    ramp = _plank(world, "ramp", ramp_c, angle, half_length=uniform(world, 0.5, 0.6),
                  half_width=0.22, high_end_x=-0.9)
    half = [uniform(world, 0.05, 0.08), uniform(world, 0.05, 0.08), uniform(world, 0.025, 0.045)]
    mu = math.tan(angle) * uniform(world, 0.5, 1.4)
    start = ramp.surface_point(-0.6, half[2])
    push = uniform(world, 0.6, 1.0) * ramp.axis  # downhill
    world.spawn_box("box", half, start, box_c, mass=uniform(world, 0.2, 1.0),
                    orientation=y_about_quat(angle), velocity=push.tolist(), friction=mu,
                    restitution=(0.05, 0.2))
    return CameraAim(target=(-0.2, 0.0, 0.3))


def floor_slide(world: World) -> CameraAim:
    """A box or puck shoved along the floor slides and spins to rest by friction."""
    (color,) = world.pick_colors(1)
    # The speed follows from friction and a drawn stopping distance, so it stops in view.
    mu, distance = uniform(world, 0.1, 0.3), uniform(world, 0.6, 1.3)
    speed = math.sqrt(2 * mu * GRAVITY * distance)
    heading = math.radians(uniform(world, -15.0, 15.0))
    velocity = [speed * math.cos(heading), speed * math.sin(heading), 0.0]
    spin = [0.0, 0.0, uniform(world, -8.0, 8.0)]
    start_xy = [uniform(world, -0.8, -0.6), uniform(world, -0.2, 0.2)]
    common = {"mass": uniform(world, 0.2, 1.5), "velocity": velocity, "angular_velocity": spin,
              "friction": mu, "restitution": (0.05, 0.2)}
    if world.rng.random() < 0.5:
        half = [uniform(world, 0.08, 0.12), uniform(world, 0.08, 0.12), uniform(world, 0.03, 0.06)]
        world.spawn_box("slider", half, [*start_xy, half[2] + 0.001], color, **common)
    else:
        r, length = uniform(world, 0.08, 0.12), uniform(world, 0.04, 0.08)
        world.spawn_cylinder("slider", r, length, [*start_xy, length / 2 + 0.001], color, **common)
    return CameraAim(target=(0.0, 0.0, 0.2), position=(0.0, -2.3, 1.0))


def pendulum(world: World) -> CameraAim:
    """A ball on a light rod, released from an angle, swings about a pin under a beam."""
    bob_c, frame_c = world.pick_colors(2)
    pivot = np.array([uniform(world, -0.1, 0.1), 0.0, uniform(world, 1.15, 1.3)])
    beam = _gallows(world, frame_c, pivot[2], half_width=0.85)
    angle = math.radians(uniform(world, 25.0, 50.0)) * world.rng.choice([-1.0, 1.0])
    bob = _hang(world, "bob", bob_c, pivot, uniform(world, 0.45, 0.75), uniform(world, 0.06, 0.1),
                angle, mass=uniform(world, 0.3, 1.5))
    world.ignore_collisions(bob, beam)
    return CameraAim(target=(0.0, 0.0, 0.7), position=(0.0, -2.7, 1.1))


def newton_cradle(world: World) -> CameraAim:
    """Pendulums in a touching row: the swinging end ball stops and the far one swings out."""
    ball_c, frame_c = world.pick_colors(2)
    count = int(world.rng.integers(3, 6))
    r, length = uniform(world, 0.05, 0.075), uniform(world, 0.4, 0.6)
    pivot_z = length + r + uniform(world, 0.2, 0.35)
    beam = _gallows(world, frame_c, pivot_z, half_width=0.95)
    pulled = int(world.rng.integers(1, 3))
    angle = math.radians(uniform(world, 30.0, 45.0))
    spacing = 2 * r + 0.001
    mass = uniform(world, 0.2, 0.6)
    for i in range(count):
        pivot = np.array([(i - (count - 1) / 2) * spacing, 0.0, pivot_z])
        bob = _hang(world, f"ball_{i}", ball_c, pivot, length, r, angle if i < pulled else 0.0,
                    mass, friction=(0.05, 0.15), restitution=(0.93, 0.98))
        world.ignore_collisions(bob, beam)
    return CameraAim(target=(0.0, 0.0, 0.6), position=(0.0, -2.5, 1.0))


def seesaw(world: World) -> CameraAim:
    """A weight drops onto the raised end of a hinged plank, which flips and tosses its load."""
    plank_c, weight_c, load_c = world.pick_colors(3)
    height, half_len, half_w, half_thick = (uniform(world, 0.18, 0.26), uniform(world, 0.5, 0.65),
                                            uniform(world, 0.1, 0.14), 0.025)
    tilt = -math.asin((height - half_thick - 0.003) / half_len)  # -x end down, just off the floor
    centre = np.array([uniform(world, -0.15, 0.15), 0.0, height])
    plank = world.spawn_box("plank", [half_len, half_w, half_thick], centre, plank_c,
                            mass=uniform(world, 0.3, 0.8), orientation=y_about_quat(tilt),
                            restitution=(0.05, 0.2))
    post_half = (height - half_thick) / 2
    post = world.spawn_box("fulcrum", [0.04, half_w * 0.8, post_half], [centre[0], 0.0, post_half],
                           plank_c, mass=0.0)
    world.ignore_collisions(plank, post)
    for side in (-1.0, 1.0):
        world.pin(plank, centre + [0.0, side * half_w, 0.0])
    board = _Plank(centre, tilt, half_thick, half_len)
    cube = uniform(world, 0.04, 0.06)
    world.spawn_box("load", [cube] * 3, board.surface_point(-0.8, cube), load_c,
                    mass=uniform(world, 0.2, 0.5), orientation=y_about_quat(tilt))
    # A block rather than a ball, so the weight stays on the plank instead of rolling away.
    weight = uniform(world, 0.06, 0.08)
    drop = board.surface_point(0.7, weight) + [0.0, 0.0, uniform(world, 0.2, 0.4)]
    world.spawn_box("weight", [weight] * 3, drop, weight_c, mass=uniform(world, 0.8, 1.6),
                    orientation=y_about_quat(tilt), restitution=(0.05, 0.2))
    return CameraAim(target=(0.0, 0.0, 0.35), position=(0.0, -2.4, 1.0))


def ramp_race(world: World) -> CameraAim:
    """A ball and a cylinder start side by side down a ramp; the ball pulls ahead."""
    ball_c, cyl_c, ramp_c = world.pick_colors(3)
    angle = math.radians(uniform(world, 12.0, 17.0))
    ramp = _plank(world, "ramp", ramp_c, angle, half_length=uniform(world, 0.4, 0.5),
                  half_width=0.3, high_end_x=-1.0)
    side = float(world.rng.choice([-1.0, 1.0]))
    r = uniform(world, 0.06, 0.09)
    ball_at = ramp.surface_point(-0.75, r) + [0.0, side * 0.14, 0.0]
    world.spawn_ball("ball", r, ball_at, ball_c, mass=uniform(world, 0.2, 1.5))
    r = uniform(world, 0.06, 0.09)
    cyl_at = ramp.surface_point(-0.75, r) + [0.0, -side * 0.14, 0.0]
    world.spawn_cylinder("cylinder", r, uniform(world, 0.1, 0.16), cyl_at, cyl_c,
                         mass=uniform(world, 0.2, 1.5), orientation=ALONG_Y)
    return CameraAim(target=(-0.1, 0.0, 0.3))


def topple(world: World) -> CameraAim:
    """An upright hammer (head up) or dumbbell, tipped off balance, falls over."""
    (color,) = world.pick_colors(1)
    size = uniform(world, 0.08, 0.11)
    lean = math.radians(uniform(world, 8.0, 16.0))
    heading = uniform(world, -math.pi, math.pi)
    if world.rng.random() < 0.5:
        form, length = "hammer", size * uniform(world, 3.5, 5.0)
        parts = hammer(size * 0.2, length, (size * 0.9, size * 0.35, size * 0.35), head_density=3.0)
        upright, lift = (0.0, 0.0, 0.0, 1.0), size * 0.2 * math.sin(lean)
    else:
        form, bar = "dumbbell", size * uniform(world, 3.0, 4.0)
        end = size * uniform(world, 0.6, 0.8)
        parts = dumbbell(end, size * 0.2, bar)
        upright, lift = axis_quat("y", math.pi / 2), bar / 2 + end
    # Lean about a horizontal axis at ``heading`` and start turning that way about the foot.
    axis = np.array([math.cos(heading), math.sin(heading), 0.0])
    lean_quat = tuple(np.append(axis * math.sin(lean / 2), math.cos(lean / 2)))
    foot = np.array([uniform(world, -0.2, 0.2), uniform(world, -0.1, 0.2), 0.0])
    body = world.spawn_compound("body", form, parts, foot + [0.0, 0.0, lift + 0.002], color,
                                mass=uniform(world, 0.3, 1.5),
                                orientation=quat_multiply(lean_quat, upright))
    world.spin_about(body, foot, axis * uniform(world, 1.5, 2.5))
    return CameraAim(target=(0.0, 0.0, 0.3), position=(0.0, -2.3, 0.95))


def wall_rebound(world: World) -> CameraAim:
    """A rolling ball or sliding puck hits a barrier at an angle and bounces back."""
    mover_c, wall_c = world.pick_colors(2)
    turn = math.radians(uniform(world, -20.0, 20.0))
    wall_x = uniform(world, 0.45, 0.6)
    half = [0.04, uniform(world, 0.35, 0.5), uniform(world, 0.12, 0.2)]
    world.spawn_box("barrier", half, [wall_x, 0.0, half[2]], wall_c, mass=0.0,
                    orientation=axis_quat("z", turn), friction=1.0, restitution=1.0)
    heading = math.radians(uniform(world, -15.0, 15.0))
    speed = uniform(world, 1.3, 1.9)
    velocity = [speed * math.cos(heading), speed * math.sin(heading), 0.0]
    start = [uniform(world, -0.45, -0.2), uniform(world, -0.2, 0.2)]
    if world.rng.random() < 0.5:
        r = uniform(world, 0.07, 0.11)
        world.spawn_ball("mover", r, [*start, r], mover_c, mass=uniform(world, 0.2, 1.5),
                         velocity=velocity, rolling=True, restitution=(0.4, 0.8))
    else:
        r, length = uniform(world, 0.06, 0.09), uniform(world, 0.04, 0.07)
        world.spawn_cylinder("mover", r, length, [*start, length / 2 + 0.001], mover_c,
                             mass=uniform(world, 0.2, 1.5), velocity=velocity,
                             friction=(0.05, 0.1), restitution=(0.4, 0.8))
    return CameraAim(target=(0.1, 0.0, 0.25))


class _Plank:
    """A plank tilted about y (positive angles tip its +x end down): where its top face is.

    ``axis`` is the unit vector along the plank towards its +x end.
    """

    def __init__(self, centre: np.ndarray, angle: float, half_thick: float, half_length: float):
        self.centre = np.asarray(centre, dtype=np.float64)
        self.half_thick, self.half_length = half_thick, half_length
        self.axis = np.array([math.cos(angle), 0.0, -math.sin(angle)])
        self.normal = np.array([math.sin(angle), 0.0, math.cos(angle)])

    def surface_point(self, along: float, clearance: float) -> np.ndarray:
        """World point ``along`` half lengths from the centre, ``clearance`` (+2 mm) above the
        top face: where to put a body of that half height so it settles at once."""
        return (self.centre + along * self.half_length * self.axis
                + (self.half_thick + clearance + 0.002) * self.normal)


def _plank(world: World, name: str, color: str, angle: float, half_length: float,
           half_width: float, high_end_x: float, half_thick: float = 0.03) -> _Plank:
    """A static ramp, high end at ``high_end_x``, low end on the floor; friction 1, so a body on
    it slides with its own coefficient."""
    centre = np.array([high_end_x + half_length * math.cos(angle), 0.0,
                       half_length * math.sin(angle) + half_thick])
    world.spawn_box(name, [half_length, half_width, half_thick], centre, color, mass=0.0,
                    orientation=y_about_quat(angle), friction=1.0)
    return _Plank(centre, angle, half_thick, half_length)


def _gallows(world: World, color: str, pivot_z: float, half_width: float) -> SimObject:
    """A static beam along x just above ``pivot_z`` on two posts; returns the beam."""
    beam_half = 0.025
    beam = world.spawn_box("beam", [half_width, beam_half, beam_half],
                           [0.0, 0.0, pivot_z + beam_half], color, mass=0.0)
    post_half = (pivot_z + 2 * beam_half) / 2
    for side in (-1.0, 1.0):
        world.spawn_box(f"post_{'lr'[side > 0]}", [beam_half, beam_half, post_half],
                        [side * half_width, 0.0, post_half], color, mass=0.0)
    return beam


def _hang(world: World, name: str, color: str, pivot: np.ndarray, length: float, radius: float,
          angle: float, mass: float, **contact) -> SimObject:
    """A ball of ``radius`` on a rod, its centre ``length`` below ``pivot``, turned by ``angle``
    about y (the swing plane is x-z), and pinned at the pivot."""
    rod = length - radius
    parts = [Part("sphere", radius=radius, position=(0.0, 0.0, -length)),
             Part("cylinder", radius=ROD_RADIUS, length=rod, position=(0.0, 0.0, -rod / 2),
                  density=ROD_DENSITY)]
    bob = world.spawn_compound(name, "pendulum", parts, pivot, color, mass=mass,
                               orientation=axis_quat("y", angle), **contact)
    world.pin(bob, pivot)
    return bob
