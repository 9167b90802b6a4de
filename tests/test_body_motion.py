"""Whole-body displacements (heads/body_motion.py): a small body moving beyond the block matching's
reach gets its whole motion with the backward-flow sign, what does not move keeps its flow, and the
flow head that uses the step still trains where it takes nothing."""

from __future__ import annotations

import pytest
import torch

from heads.body_motion import body_displacements, shifted_costs
from heads.cost_volume import local_cost
from tests.test_cost_volume import smooth_image

SIDE = 8


def _scene(dx: int, dy: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A textured 8-px square moved by (dx, dy) px between frames t-1 and t over a faint static
    texture: frames (1, 3, 64, 64) t-1 and t, and the square's mask in frame t."""
    background = 0.5 + 0.02 * (smooth_image(3, cell=8) - 0.5)
    body = smooth_image(4, cell=2)[..., :SIDE, :SIDE]
    prev, cur = background.clone(), background.clone()
    y, x = 28, 16
    prev[..., y:y + SIDE, x:x + SIDE] = body
    cur[..., y + dy:y + dy + SIDE, x + dx:x + dx + SIDE] = body
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[y + dy:y + dy + SIDE, x + dx:x + dx + SIDE] = True
    return prev, cur, mask


def _with_bodies(cur: torch.Tensor, prev: torch.Tensor, reach: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """The demo's matching (radius 4, pool 2), then the body step: (matched, with bodies)."""
    matched = local_cost(cur, prev, 4, 2)[:, -2:]
    found, taken = body_displacements(cur, prev, matched, reach)
    return matched, torch.where(taken, found, matched)


@pytest.mark.parametrize("dx, dy", [(10, -2), (-10, 3), (-6, 9), (3, 2)])
def test_a_small_body_gets_its_whole_motion_with_the_backward_sign(dx, dy):
    prev, cur, mask = _scene(dx, dy)
    truth = torch.tensor([-float(dx), -float(dy)])  # I_t(p) = I_{t-1}(p + f): it came from -d
    matched, refined = _with_bodies(cur, prev)
    inside = refined[0][:, mask].mean(dim=1)
    assert torch.allclose(inside, truth, atol=0.3), inside
    # Pixels that neither the body nor its old place covers keep the matching's (near-zero) flow.
    far = torch.ones(64, 64, dtype=torch.bool)
    far[12:52, 0:44] = False
    assert refined[0][:, far].abs().max() < 1e-3
    if max(abs(dx), abs(dy)) > 8:  # beyond the matching's reach: it alone is far off
        assert (matched[0][:, mask].mean(dim=1) - truth).norm() > 3.0


def test_still_frames_take_nothing():
    image = smooth_image(5)
    found, taken = body_displacements(image, image, torch.zeros(1, 2, 64, 64), 12)
    assert not taken.any() and not found.any()


def test_shifted_costs_are_zero_at_the_true_displacement():
    prev, cur, _ = _scene(5, -2)
    reach = 6
    costs = shifted_costs(cur[0], prev[0], (28 - 2, 28 - 2 + SIDE, 16 + 5, 16 + 5 + SIDE), reach)
    side = 2 * reach + 1
    at_truth = costs[(reach + 2) * side + (reach - 5)]  # d = (-5, +2): dy outer
    assert costs.shape == (side * side, SIDE, SIDE)
    assert at_truth[1:-1, 1:-1].abs().max() < 1e-6  # inner pixels: their 3x3 patch is all body
    assert costs[(reach * side) + reach][1:-1, 1:-1].mean() > 0.05  # no motion does not explain them


def test_the_flow_head_with_the_body_step_still_trains_its_own_flow():
    """Where the step takes a body the output is its displacement; everywhere else the head's flow
    and its gradient stay, so a loss still reaches the neck."""
    from heads.config import HeadConfig
    from heads.flow import MotionVectorHead

    torch.manual_seed(0)
    cfg = HeadConfig(in_channels=16, num_taps=2, spatial_factor=16, temporal_factor=4, features=16,
                     temporal_levels=0, rgb_cost_radius=4, rgb_cost_pool=2, rgb_body_reach=12)
    head = MotionVectorHead(cfg)
    prev, cur, mask = _scene(10, -2)
    frames = torch.stack([prev[0], cur[0]])[None].repeat(1, 3, 1, 1, 1)[:, :5]
    taps = [torch.randn(1, 16, 2, 4, 4) for _ in range(2)]
    predicted = head(taps, frames)
    assert torch.allclose(predicted[0, 1][:, mask].mean(dim=1), torch.tensor([-10.0, 2.0]), atol=0.5)
    predicted.square().mean().backward()
    grads = [p.grad for p in head.branch.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("reach, refine", [(-1, True), (12, False)])
def test_a_negative_reach_or_one_without_the_rgb_path_is_refused(reach, refine):
    """Without the RGB path the head sees no frames, so the step could not run: refused, not skipped."""
    from heads.config import HeadConfig

    with pytest.raises(ValueError, match="rgb_body_reach"):
        HeadConfig(in_channels=16, num_taps=2, spatial_factor=16, temporal_factor=4, features=16,
                   rgb_body_reach=reach, rgb_refine=refine)
