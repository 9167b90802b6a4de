"""The curriculum: scene complexity read from scene.json (known answers), and a sampler whose
order is a pure function of (seed, epoch, position), so a resumed run sees what it would have."""

from __future__ import annotations

import math

import numpy as np
import pytest

from data.complexity import complexity_ranks, scene_complexity
from stages.trainer.curriculum import (
    CurriculumConfig,
    CurriculumSampler,
    curriculum_weights,
)

FOCAL = 100.0
FRAMES = 9


def _look_along_y(camera_y: float) -> list[list[float]]:
    """OpenGL view matrix of a camera at (0, camera_y, 0) looking along world +y, z up."""
    rotation = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])  # rows: right, up, back
    view = np.eye(4)
    view[:3, :3] = rotation
    view[:3, 3] = -rotation @ np.array([0.0, camera_y, 0.0])
    return view.tolist()


def _poses(xs, y: float, z: float = 0.0) -> list[list[float]]:
    return [[float(x), y, z, 0.0, 0.0, 0.0, 1.0] for x in xs]


def _scene() -> dict:
    """A ball (id 2) rolls behind a static box (id 3) from x = -1 to 1 and in front of another
    (id 5); it lands on the floor (id 0) at frame 3; a capsule (id 4) is not static but never moves."""
    xs = np.linspace(-1.0, 1.0, FRAMES)
    objects = [
        {"body_id": 2, "shape": "sphere", "radius": [0.1], "static": False, "poses": _poses(xs, 1.0)},
        {"body_id": 3, "shape": "box", "half_extents": [0.1, 0.1, 0.1], "static": True,
         "poses": _poses([0.0] * FRAMES, 0.0)},
        {"body_id": 4, "shape": "capsule", "radius": 0.05, "half_height": 0.1, "static": False,
         "poses": _poses([3.0] * FRAMES, 0.0)},
        {"body_id": 5, "shape": "box", "half_extents": [0.1, 0.1, 0.1], "static": True,  # behind the ball at frame 0
         "poses": _poses([-1.5] * FRAMES, 3.0)},
    ]
    contacts = [[] for _ in range(3)] + [[[0, 2]] for _ in range(FRAMES - 3)]
    camera = {"fx": FOCAL, "fy": FOCAL, "cx": 64.0, "cy": 64.0, "view_matrix": _look_along_y(-3.0)}
    return {"objects": objects, "contacts": contacts, "camera": camera}


def test_complexity_counts_moving_bodies_contact_onsets_and_occlusion():
    got = scene_complexity(_scene())
    assert got.moving_bodies == 1 and got.contact_events == 1 and got.contact_fraction == 0.0
    # Box at depth 3 (disc 0.173 m), ball at depth 4 (0.1 m): discs overlap while |x| < 0.331 m,
    # i.e. at x = -0.25, 0, 0.25: 3 of 9 frames.
    assert got.occluded_fraction == pytest.approx(3 / FRAMES)
    assert got.score == pytest.approx(1 + 1 + 2 * 3 / FRAMES)


def test_complexity_sees_touching_objects_and_tolerates_missing_fields():
    meta = _scene()
    # On the static box in frames 0-1 (no onset, no body contact), against the capsule in frames 2-4.
    meta["contacts"] = [[[2, 3]]] * 2 + [[[2, 4]]] * 3 + [[]] * (FRAMES - 5)
    meta["objects"].append({"body_id": 9, "shape": "compound", "static": False, "poses": _poses([0.5] * FRAMES, 5.0)})
    del meta["camera"]["view_matrix"]
    got = scene_complexity(meta)
    assert (got.contact_events, got.contact_fraction, got.occluded_fraction) == (1, pytest.approx(3 / FRAMES), 0.0)
    assert scene_complexity(None) is None and scene_complexity({"objects": []}) is None


def test_complexity_ranks_share_ties_and_put_unknown_scenes_in_the_middle():
    ranks = complexity_ranks([3.0, 1.0, None, 1.0, 7.0])
    assert ranks.tolist() == [pytest.approx(2 / 3), pytest.approx(1 / 6), 0.5, pytest.approx(1 / 6), 1.0]
    assert complexity_ranks([None, 2.0]).tolist() == [0.5, 0.5]


def test_weights_fade_from_exp_minus_beta_to_uniform():
    ranks = np.array([0.0, 0.5, 1.0])
    start = curriculum_weights(ranks, 0.0, beta=3.0, ramp=0.5)
    assert start[2] / start[0] == pytest.approx(math.exp(-3.0)) and start.sum() == pytest.approx(1.0)
    halfway = curriculum_weights(ranks, 0.25, beta=3.0, ramp=0.5)
    assert halfway[2] / halfway[0] == pytest.approx(math.exp(-1.5))
    assert curriculum_weights(ranks, 0.5, 3.0, 0.5) == pytest.approx(np.full(3, 1 / 3))


def _sampler(ranks, replicas: int = 1, rank: int = 0, seed: int = 4, samples: int = 2000) -> CurriculumSampler:
    sampler = CurriculumSampler(ranks, CurriculumConfig(enabled=True, beta=4.0, ramp=0.5), replicas, rank, seed=seed)
    sampler.plan_run(samples)
    return sampler


RANKS = np.linspace(0.0, 1.0, 50)


def test_the_order_is_a_pure_function_of_seed_and_position():
    first, again = _sampler(RANKS), _sampler(RANKS)
    for epoch in range(3):
        first.set_epoch(epoch), again.set_epoch(epoch)
        assert list(first) == list(again)
    assert first.global_order(0) != _sampler(RANKS, seed=5).global_order(0)
    with pytest.raises(RuntimeError, match="plan_run"):
        CurriculumSampler(RANKS, CurriculumConfig(enabled=True)).global_order(0)


def test_simple_items_come_first_and_later_all_items_equally():
    sampler = _sampler(RANKS, samples=4 * len(RANKS) * 10)
    early = np.array(sampler.global_order(0)[:50])
    late = np.concatenate([sampler.global_order(e) for e in range(24, 40)])
    assert RANKS[early].mean() < 0.3 and abs(RANKS[late].mean() - 0.5) < 0.03


def test_a_resumed_sampler_continues_with_the_same_items_on_every_rank():
    straight = [_sampler(RANKS, 2, r) for r in range(2)]
    for s in straight:
        s.set_epoch(1)
    full = [list(s) for s in straight]
    for r in range(2):
        interrupted = _sampler(RANKS, 2, r)
        interrupted.set_epoch(1)
        interrupted.advance(7)  # 7 batches of 1 per rank, then a checkpoint
        resumed = _sampler(RANKS, 2, r)
        resumed.load_state_dict(interrupted.state_dict())
        resumed.set_epoch(1)
        assert list(resumed) == full[r][7:]
    merged = [i for pair in zip(*full) for i in pair]
    assert merged == straight[0].global_order(1)
