"""The gravity term of the plausibility rule: what it counts as evidence, for and against."""

from __future__ import annotations

import math

import pytest
import torch

from heads.motion_segments import FreeFlight
from heads.physics import STANDARD_GRAVITY
from heads.plausibility import (
    CHANGE_REACH,
    G_KEPT_CREDIT,
    gravity_term,
    image_changed,
    plausibility,
)

G = STANDARD_GRAVITY


def _bodies(*accelerations_and_pixels: tuple[float, int]) -> list[FreeFlight]:
    return [FreeFlight(frame, pixels, vertical) for frame, (vertical, pixels) in enumerate(accelerations_and_pixels)]


def test_a_kept_law_ranks_above_nothing_seen_which_ranks_above_a_broken_one():
    """A clip whose body falls at g must beat one whose body left the view at once (no free
    flight), or the twin with gravity pointing up wins whenever its body flies out of frame."""
    kept, _, _ = gravity_term(_bodies((G, 40), (1.02 * G, 40)), G)
    nothing, fitted, pixels = gravity_term([], G)
    half, _, _ = gravity_term(_bodies((0.5 * G, 40), (0.51 * G, 40)), G)
    assert math.isnan(fitted) and pixels == 0 and nothing == 0.0
    assert kept < nothing < half
    assert kept == pytest.approx(-G_KEPT_CREDIT, abs=0.15)
    assert half == pytest.approx(0.4, abs=0.02)
    # The credit fades to nothing at the tolerance: no evidence either way there.
    assert gravity_term(_bodies((1.1 * G, 40)), G)[0] == pytest.approx(0.0, abs=1e-9)


def test_one_body_wrongly_taken_for_free_flight_cannot_outvote_the_rest():
    """A plank leaving its hinge at 2.5 g, as large as the falling cube beside it in two frames,
    was counted pixel for pixel before and gave a plausible seesaw 0.6 of gravity evidence."""
    term, fitted, pixels = gravity_term(_bodies((G, 40), (0.98 * G, 40), (1.01 * G, 40), (2.5 * G, 50)), G)
    assert fitted == pytest.approx(G, rel=0.02) and pixels == 170
    assert term < 0.0
    # A clip whose every body shows 2 g still breaks the law.
    assert gravity_term(_bodies((2 * G, 40), (1.9 * G, 40), (2.1 * G, 40)), G)[0] == pytest.approx(0.9, abs=0.01)
    # Gravity pointing up: the cap.
    assert gravity_term(_bodies((-G, 60)), G)[0] == pytest.approx(1.9)


def _still_clip(frames: int = 8, size: int = 48):
    """A wall 3 m in front of the camera, nothing moving: distance (T, H, W), zero flow,
    intrinsics, dt."""
    distance = torch.full((frames, size, size), 3.0)
    return distance, torch.zeros(frames, 2, size, size), torch.tensor([48.0, 48.0, size / 2, size / 2]), 1.0 / 15


def test_depth_jitter_where_the_frames_do_not_change_is_no_motion():
    """Predicted distance that wobbles on a still patch (as the heads' does at the horizon) made
    the rule see fast, speeding-up motion there; given the frames, which do not change, it sees
    none, so the clip scores as if the distance were steady.  A wobble along the ray alone (zero
    flow) no longer shows as acceleration at all (``off_ray_acceleration``): blind, the score is the
    same; it still shows as speed, which the frames' gate removes from the moving pixels."""
    distance, flow, intrinsics, dt = _still_clip()
    jittered = distance.clone()
    sign = torch.tensor([(-1.0) ** t for t in range(distance.shape[0])]).view(-1, 1, 1)
    jittered[:, 30:40, 4:16] *= 1.0 + 0.04 * sign
    frames = torch.rand(1, 3, *distance.shape[1:], generator=torch.Generator().manual_seed(0)).expand(distance.shape[0], -1, -1, -1)
    steady = plausibility(distance, None, flow, None, intrinsics, dt, rgb=frames)
    blind = plausibility(jittered, None, flow, None, intrinsics, dt)
    seen = plausibility(jittered, None, flow, None, intrinsics, dt, rgb=frames)
    assert blind["score"] == pytest.approx(steady["score"], abs=1e-9), blind
    assert seen["score"] == pytest.approx(steady["score"], abs=1e-9)


def test_image_change_marks_a_moving_square_and_its_reach_only():
    rgb = torch.zeros(4, 3, 40, 40)
    for t in range(4):
        rgb[t, :, 10:16, 5 + 4 * t:11 + 4 * t] = 1.0  # a white square moving 4 px a frame
    changed = image_changed(rgb)
    assert changed[1, 12, 12] and changed[2, 13, 16]  # on the square
    assert changed[1, 10 - CHANGE_REACH, 12] and not changed[1, 9 - CHANGE_REACH, 12]  # its reach, no more
    assert not changed[:, 30:, :].any()  # the still rest of the image


def _sliding_square(frames: int = 8, size: int = 48):
    """A bright square sliding right on a dark wall 3 m away, faster every frame (a horizontal
    speed-up that friction forbids): distance, backward flow, intrinsics, dt, frames."""
    distance, flow, intrinsics, dt = _still_clip(frames, size)
    rgb = torch.zeros(frames, 3, size, size)
    x = 4
    for t in range(frames):
        step = 1 + t // 2
        if t:
            x += step
            flow[t, 0, 20:28, x:x + 8] = -step
        rgb[t, :, 20:28, x:x + 8] = 1.0
    return distance, flow, intrinsics, dt, rgb


def test_the_differentiable_terms_are_the_score_and_their_gradient_lowers_the_penalty():
    """``plausibility_terms`` (stage 2's reward) gives the verifier's score exactly, and a step
    against its gradient makes the clip more plausible by the verifier's own measure."""
    from heads.plausibility import plausibility_terms

    distance, flow, intrinsics, dt, rgb = _sliding_square()
    scored = plausibility(distance, None, flow, None, intrinsics, dt, rgb=rgb)
    assert scored["friction"] > 0.1, scored
    flow.requires_grad_(True)
    out = plausibility_terms(distance, None, flow, None, intrinsics, dt, rgb=rgb)
    penalty = sum(out["terms"].values())
    assert float(penalty.detach()) == pytest.approx(-scored["score"], abs=1e-12)
    penalty.backward()
    assert flow.grad[:, :, :20].abs().sum() == 0 and flow.grad.abs().sum() > 0  # only the square's pixels
    stepped = plausibility(distance, None, (flow - 0.1 * flow.grad / flow.grad.abs().max()).detach(), None,
                           intrinsics, dt, rgb=rgb)
    assert stepped["score"] > scored["score"] + 0.005, (stepped, scored)


def test_the_gravity_term_differentiates_through_the_median_body_only():
    """Stage 2's reward moves the body whose acceleration is the fitted g, towards g; the bodies
    the median outvotes get no gradient."""
    from heads.plausibility import _gravity

    values = torch.tensor([0.5 * G, 0.55 * G, 2.5 * G], dtype=torch.float64, requires_grad=True)
    term, fitted, pixels = _gravity([FreeFlight(t, 40, values[t]) for t in range(3)], G)
    assert float(fitted.detach()) == pytest.approx(0.55 * G) and pixels == 120
    term.backward()
    assert values.grad[0] == 0 and values.grad[2] == 0 and values.grad[1] < 0  # raising it towards g lowers the term


def _falling_ball(jitter: float, frames: int = 9, size: int = 64):
    """A 12 px square body thrown in front of a wall 8 m away, above a floor 1.5 m below the camera
    (camera frame, y down, looking level), falling at g; its distance multiplied by 1 + jitter and
    1 - jitter on alternate frames (a head's frame-to-frame wobble).  -> distance, flow, intrinsics, dt."""
    f, c, dt = 64.0, size / 2, 1.0 / 15
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                            indexing="ij")
    ray = torch.stack([(xs - c) / f, (ys - c) / f, torch.ones_like(xs)])
    unit = ray.norm(dim=0)
    floor = torch.where(ray[1] > 1e-6, 1.5 / ray[1].clamp_min(1e-6), torch.full_like(xs, math.inf))
    background = torch.minimum(floor, torch.full_like(xs, 8.0)) * unit
    centre = [torch.tensor([-0.6 + 1.5 * t * dt, -0.5 - 2.0 * t * dt + 0.5 * G * (t * dt) ** 2, 3.0],
                           dtype=torch.float64) for t in range(frames)]
    pixel = [f * p[:2] / p[2] + c for p in centre]
    distance = background.expand(frames, size, size).clone()
    flow = torch.zeros(frames, 2, size, size, dtype=torch.float64)
    for t in range(frames):
        body = ((xs - pixel[t][0]).abs() <= 6) & ((ys - pixel[t][1]).abs() <= 6)
        distance[t][body] = (3.0 * unit[body]) * (1.0 + jitter * (-1.0) ** t)
        if t:
            for axis in range(2):
                flow[t, axis][body] = float(pixel[t - 1][axis] - pixel[t][axis])
    return distance, flow, torch.tensor([f, f, c, c], dtype=torch.float64), dt


@pytest.mark.parametrize("jitter", [0.0, 0.005, 0.01])
def test_a_falling_body_shows_g_although_its_distance_wobbles(jitter):
    """The rule measures g from accelerations less the second difference of the distance along the
    ray (``off_ray_acceleration``).  With the plain acceleration a wobble of 0.5 % a frame (1.5 cm
    at 3 m) hid the free fall and read as a horizontal speed-up (friction term 0.39; 1.39 at 1 %);
    now the fall shows g, earns the kept-law credit, and the friction term stays near 0."""
    distance, flow, intrinsics, dt = _falling_ball(jitter)
    result = plausibility(distance, None, flow, None, intrinsics, dt)
    assert result["free_pixels"] > 0
    assert result["g_fit"] == pytest.approx(G, rel=0.05)
    assert result["gravity"] < 0 and result["friction"] < 0.1
