"""Bodies from motion: segments split where the distance jumps, and contact is a near point of the
ring (a body in the air against a far wall touches nothing; on the floor it does)."""

from __future__ import annotations

import torch

from heads.motion_segments import label_segments, touches
from heads.physics_kinematics import unproject

FX = 100.0


def test_touching_patches_at_different_distances_are_two_bodies_and_a_snake_is_one():
    mask = torch.zeros(12, 12, dtype=torch.bool)
    mask[2:6, 2:6] = True  # a block at 2 m ...
    mask[2:6, 6:9] = True  # ... beside one at 3 m, touching it in the image
    mask[8, :] = True  # a snake that winds back: one body
    mask[9:11, 11] = True
    mask[10, 3:11] = True
    distance = torch.full((12, 12), 2.0)
    distance[:, 6:9] = 3.0
    distance[8:, :] = 2.5
    labels = label_segments(mask, distance)
    assert (labels[~mask] == 0).all()
    assert labels[2:6, 2:6].unique().numel() == 1 and labels[2:6, 6:9].unique().numel() == 1
    assert labels[3, 3] != labels[3, 7]
    snake = labels[8:][mask[8:]]
    assert snake.unique().numel() == 1
    assert labels[3, 3] == 2 * 12 + 2 + 1  # the smallest 1-based index of the component
    same = label_segments(mask[:7], torch.full((7, 12), 2.0))
    assert same[mask[:7]].unique().numel() == 1


def test_a_body_touches_the_floor_beneath_it_but_not_the_far_wall_behind_it():
    h = w = 24
    intrinsics = torch.tensor([[FX, FX, w / 2, h / 2]], dtype=torch.float64)
    body = torch.zeros(h, w, dtype=torch.bool)
    body[8:12, 10:14] = True
    wall = torch.full((h, w), 6.0, dtype=torch.float64)
    wall[body] = 2.0
    points = unproject(wall[None, None], intrinsics)[0, 0]
    assert not touches(body, ~body, points, wall, FX)  # in the air in front of a wall 4 m behind
    resting = wall.clone()
    resting[12:, :] = 2.0  # a floor patch right below it at the same distance
    points = unproject(resting[None, None], intrinsics)[0, 0]
    assert touches(body, ~body, points, resting, FX)
