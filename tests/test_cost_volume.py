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


def _small_body_scene(shift: float = 4.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A textured 8-px square moving ``shift`` px right over a faint, static texture (a small body
    before a plain wall): frames t-1, t and the square's mask in frame t."""
    background = 0.5 + 0.02 * (smooth_image(3, cell=8) - 0.5)
    body = smooth_image(4, cell=2)
    prev, cur = background.clone(), background.clone()
    prev[..., 28:36, 20:28] = body[..., 28:36, 20:28]
    x = 20 + int(shift)
    cur[..., 28:36, x:x + 8] = body[..., 28:36, 20:28]
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[28:36, x:x + 8] = True
    return prev, cur, mask


def test_a_sharper_matching_keeps_more_of_a_small_bodys_motion():
    """The pooled 3x3 patches of an 8-px body also hold the wall around it, whose best match is
    no motion; averaging the near-ties (temperature) and discounting weak gains (confidence)
    shrink the body's motion, and the physics fitted on it reads less than g."""
    prev, cur, mask = _small_body_scene()
    truth = -4.0  # backward flow: the body came from 4 px to the left
    default = local_cost(cur, prev, 4, 2)[0, -2][mask].mean()
    sharp = local_cost(cur, prev, 4, 2, temperature=0.005, confidence_scale=0.01)[0, -2][mask].mean()
    assert abs(float(sharp) - truth) < abs(float(default) - truth), (float(default), float(sharp))
    assert float(sharp) / truth > 0.6
    still = local_cost(prev, prev, 4, 2, temperature=0.005, confidence_scale=0.01)[0, -2:]
    assert still.abs().max() < 1e-3


@pytest.mark.parametrize("field, value", [("rgb_cost_temperature", 0.0), ("rgb_cost_confidence", -0.1)])
def test_matching_settings_out_of_range_are_refused(field, value):
    from heads.config import HeadConfig

    with pytest.raises(ValueError, match=field):
        HeadConfig(in_channels=16, num_taps=2, spatial_factor=16, temporal_factor=4, features=16, **{field: value})


def test_a_run_config_with_a_bad_matching_setting_fails_in_one_line_naming_it():
    from stages.stage1 import Stage1Config
    from stages.trainer.config import ConfigError, load_config
    from tests.helpers import REPO

    with pytest.raises(ConfigError, match=r"heads.*rgb_cost_temperature must be > 0") as caught:
        load_config(Stage1Config, REPO / "stages/configs/stage1_demo.toml", ["heads.rgb_cost_temperature=0"])
    assert "\n" not in str(caught.value)
