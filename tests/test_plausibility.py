"""The gravity term of the plausibility rule: what it counts as evidence, for and against."""

from __future__ import annotations

import math

import pytest

from heads.motion_segments import FreeFlight
from heads.physics import STANDARD_GRAVITY
from heads.plausibility import G_KEPT_CREDIT, gravity_term

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
