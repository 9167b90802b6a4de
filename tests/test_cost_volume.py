"""The flow head's matching cost: it finds a known shift with the backward-flow sign, stays at zero
where nothing moves or nothing can be matched, and the head that uses it starts from its answer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from heads.blocks import backward_warp
from heads.cost_volume import cost_channels, local_cost


def smooth_image(seed: int = 0, size: int = 64, cell: int = 4) -> torch.Tensor:
    """Random colours on a grid of ``cell``-pixel cells, blended bilinearly (a matchable texture)."""
    generator = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(1, 3, size // cell, size // cell, generator=generator), size=(size, size),
                         mode="bilinear", align_corners=False)


@pytest.mark.parametrize("radius, pool, shift", [(4, 1, (3.0, -2.0)), (4, 2, (6.0, 4.0)), (2, 4, (-5.0, 3.0))])
def test_a_known_shift_is_found_with_the_backward_flow_sign(radius, pool, shift):
    prev = smooth_image(cell=2 * pool)
    flow = torch.zeros(1, 2, 64, 64)
    flow[:, 0], flow[:, 1] = shift
    cur = backward_warp(prev, flow)  # I_t(p) = I_{t-1}(p + f): f is the backward flow
    out = local_cost(cur, prev, radius, pool)
    assert out.shape == (1, cost_channels(radius) + 2, 64, 64)
    found = out[0, -2:, 16:48, 16:48].mean(dim=(1, 2))
    assert torch.allclose(found, torch.tensor(shift), atol=0.35 * pool), found


def test_still_and_featureless_pixels_get_no_displacement():
    image = smooth_image(1)
    still = local_cost(image, image, 3, 1)[0, -2:]
    assert still.abs().max() < 1e-3
    plain = torch.full((1, 3, 32, 32), 0.4)
    moved = local_cost(plain, plain.roll(2, dims=-1), 3, 1)[0, -2:]
    assert moved.abs().max() < 1e-3


def test_the_flow_head_with_matching_starts_from_the_matched_flow():
    from heads.config import HeadConfig
    from heads.flow import MotionVectorHead

    torch.manual_seed(0)
    cfg = HeadConfig(in_channels=16, num_taps=2, spatial_factor=16, temporal_factor=4, features=16,
                     temporal_levels=0, rgb_cost_radius=4, rgb_cost_pool=2)
    head = MotionVectorHead(cfg)
    for p in head.branch.parameters():  # the neck predicts no motion: what remains is the matching
        torch.nn.init.zeros_(p)
    prev = smooth_image(2)
    flow = torch.zeros(1, 2, 64, 64)
    flow[:, 0], flow[:, 1] = 4.0, 2.0
    frames = torch.stack([prev[0], backward_warp(prev, flow)[0]])[None].repeat(1, 3, 1, 1, 1)[:, :5]
    taps = [torch.randn(1, 16, 2, 4, 4) for _ in range(2)]
    predicted = head(taps, frames)
    centre = predicted[0, 1, :, 16:48, 16:48].mean(dim=(1, 2))
    assert torch.allclose(centre, torch.tensor([4.0, 2.0]), atol=0.7), centre
