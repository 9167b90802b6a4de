"""Training augmentation keeps targets physically consistent (data.augment, data.colour,
data.transforms): on an analytic scene whose motion, distances and camera are known, a random
resized crop, a flip and a stride change move the image, the flow, the depth and the camera
together; colour jitter touches only colours, the same way in every frame; time never runs
backwards."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from data.augment import (
    AugmentConfig,
    View,
    ViewOptions,
    check_forward_in_time,
    draw_view,
)
from data.colour import LUMA, ColourJitter, apply_colour
from data.dataset import DataConfig, SimPhysicsDataset
from data.flow import backward_warp
from data.sampling import WindowSpec
from tests.conftest import BACKGROUND_DISTANCE_M, SQUARE_DISTANCE_M

FOCAL_PX, ROLL_DEG = 50.0, 20.0


def _write_camera(scene, roll_deg: float = ROLL_DEG) -> None:
    """scene.json with known intrinsics and a camera rolled about its axis, so 'down' has an x part."""
    c, s = math.cos(math.radians(roll_deg)), math.sin(math.radians(roll_deg))
    view = [[c, -s, 0.0, 0.0], [s, c, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
    camera = {"fx": FOCAL_PX, "fy": FOCAL_PX, "cx": 31.5, "cy": 30.0, "view_matrix": view}
    meta = {"fps": 30.0, "gravity": [0.0, -9.81, 0.0], "camera": camera}
    (scene.directory / "scene.json").write_text(json.dumps(meta))


def _dataset(scene, csv, size: int = 64, frames: int = 2, hflip_prob: float = 0.0, **augment) -> SimPhysicsDataset:
    config = DataConfig(root=str(scene.root), metadata=str(csv), height=size, width=size, hflip_prob=hflip_prob,
                        window=WindowSpec(num_frames=frames, stride=2))
    return SimPhysicsDataset(config, train=True, seed=0, augment=AugmentConfig(**augment))


def _square_centroid(sample: dict, t: int) -> torch.Tensor:
    """(x, y) of the square's centre in output pixels, weighted by how much of each pixel it covers
    (read off the resized distances, a linear mix of the square's and the background's)."""
    depth, valid = sample["depth"][t], sample["depth_valid"][t]
    cover = ((BACKGROUND_DISTANCE_M - depth) / (BACKGROUND_DISTANCE_M - SQUARE_DISTANCE_M)).clamp(0, 1) * valid
    ys, xs = torch.meshgrid(torch.arange(depth.shape[0]), torch.arange(depth.shape[1]), indexing="ij")
    return torch.stack([(cover * xs).sum(), (cover * ys).sum()]) / cover.sum()


def _ray(intrinsics: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
    fx, fy, cx, cy = intrinsics.tolist()
    return torch.stack([(point[0] - cx) / fx, (point[1] - cy) / fy])


def _interior(sample: dict, t: int) -> torch.Tensor:
    """Pixels wholly on the square, one pixel in from its resized edge."""
    inside = sample["depth_valid"][t] & ((sample["depth"][t] - SQUARE_DISTANCE_M).abs() < 1e-4)
    eroded = -torch.nn.functional.max_pool2d(-inside[None, None].float(), 3, stride=1, padding=1)[0, 0]
    return eroded > 0.5


VIEWS = {
    "zoom": (View(stride=2, crop_xy_fraction=(0.3, 0.6), crop_area=0.5), 64),
    "zoom-stretch-flip-stride3": (View(stride=3, crop_xy_fraction=(0.5, 0.2), flip=True, crop_area=0.6,
                                       crop_aspect=1.3), 64),
    "shrink-flip": (View(stride=1, crop_xy_fraction=(0.9, 0.1), flip=True, crop_area=0.8, crop_aspect=0.8), 32),
}


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_a_resized_crop_flip_and_stride_keep_pixels_flow_depth_and_camera_consistent(analytic_scene, analytic_csv,
                                                                                      name):
    """The square's centre seen through the augmented intrinsics is the same 3-D ray (mirrored by a
    flip) as without augmentation; the flow carries it to where it was in the previous frame; its
    distance is unchanged; gravity mirrors with the image."""
    _write_camera(analytic_scene)
    view, size = VIEWS[name]
    frames = np.array([4, 4 + view.stride])
    plain = _dataset(analytic_scene, analytic_csv).load_window(0, frames)
    cut = _dataset(analytic_scene, analytic_csv, size=size).load_window(0, frames, view)
    mirror = torch.tensor([-1.0 if view.flip else 1.0, 1.0])
    for t in (0, 1):
        ray_plain = _ray(plain["intrinsics"], _square_centroid(plain, t))
        ray_cut = _ray(cut["intrinsics"], _square_centroid(cut, t))
        torch.testing.assert_close(ray_cut, ray_plain * mirror, atol=2e-3, rtol=0)
    interior = _interior(cut, 1)
    assert interior.sum() > 20 and cut["flow_valid"][1][interior].all()
    flow = cut["flow"][1][:, interior]
    moved = _square_centroid(cut, 0) - _square_centroid(cut, 1)  # backward flow: to where it was
    torch.testing.assert_close(flow, moved[:, None].expand_as(flow), atol=0.05, rtol=0)
    assert abs(float(moved[1])) > 0.5 * view.stride * size / 64, "the square must really move"
    torch.testing.assert_close(cut["depth"][1][interior], torch.full_like(cut["depth"][1][interior], 2.0))
    torch.testing.assert_close(cut["down_cam"], plain["down_cam"] * torch.tensor([*mirror.tolist(), 1.0]))
    assert abs(float(plain["down_cam"][0])) > 0.3, "the rolled camera sees gravity off image-down"
    assert float(cut["dt"]) == pytest.approx(view.stride / 30.0)


def test_augmented_flow_still_warps_the_previous_frame_onto_the_current(analytic_scene, analytic_csv):
    view = View(stride=2, crop_xy_fraction=(0.4, 0.5), flip=True, crop_area=0.7,
                colour=ColourJitter(1.2, 0.7, 1.4, 0.15))
    sample = _dataset(analytic_scene, analytic_csv).load_window(0, np.array([4, 6]), view)
    moving = _interior(sample, 1) & sample["flow_valid"][1]  # resampled edges mix object and background
    errors = {}
    for sign in (1.0, -1.0):
        warped, _ = backward_warp(sample["rgb"][0:1], sign * sample["flow"][1:2])
        errors[sign] = float((warped - sample["rgb"][1:2]).abs().mean(dim=1)[0][moving].mean())
    assert moving.sum() > 100 and errors[1.0] < 0.02 and errors[1.0] < 0.2 * errors[-1.0], errors


def test_colour_jitter_changes_only_colours_and_the_same_way_in_every_frame(analytic_scene, analytic_csv):
    jitter = ColourJitter(brightness=1.3, contrast=0.6, saturation=1.5, hue=0.2)
    frames = np.arange(0, 12, 2)
    dataset = _dataset(analytic_scene, analytic_csv)
    plain = dataset.load_window(0, frames, View(stride=2))
    coloured = dataset.load_window(0, frames, View(stride=2, colour=jitter))
    for key in ("flow", "flow_valid", "depth", "depth_valid", "intrinsics", "down_cam", "dt", "steps"):
        assert torch.equal(plain[key], coloured[key]), key
    assert not torch.allclose(plain["rgb"], coloured["rgb"], atol=0.05)
    torch.testing.assert_close(coloured["rgb"], apply_colour(plain["rgb"], jitter))
    # A background pixel never covered by the square has one colour in every frame, before and after.
    static = plain["rgb"][:, :, 60, 2]
    assert torch.equal(static, static[:1].expand_as(static))
    assert torch.equal(coloured["rgb"][:, :, 60, 2], coloured["rgb"][:1, :, 60, 2].expand_as(static))
    # Frames loaded separately (the supervised-frame path) get the same map as the whole window.
    subset = dataset.load_window(0, frames, View(stride=2, colour=jitter), select=np.array([2, 5]), video=False)
    assert torch.equal(subset["frame_rgb"], coloured["rgb"][[2, 5]])
    assert torch.equal(subset["prev_rgb"], coloured["rgb"][[1, 4]])


def test_colour_map_known_answers():
    rgb = torch.rand(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(apply_colour(rgb, ColourJitter()), rgb)
    torch.testing.assert_close(apply_colour(rgb, ColourJitter(brightness=0.5)), rgb * 0.5)
    torch.testing.assert_close(apply_colour(rgb, ColourJitter(contrast=0.5)), (rgb - 0.5) * 0.5 + 0.5)
    grey = apply_colour(rgb, ColourJitter(saturation=0.0))
    luma = torch.einsum("c,tchw->thw", torch.tensor(LUMA), rgb)
    torch.testing.assert_close(grey, luma[:, None].expand_as(grey))
    torch.testing.assert_close(apply_colour(rgb, ColourJitter(hue=0.5)), apply_colour(rgb, ColourJitter(hue=-0.5)))
    rotated = apply_colour(rgb * 0.5 + 0.25, ColourJitter(hue=0.3))  # inside [0, 1]: no clamping
    torch.testing.assert_close(torch.einsum("c,tchw->thw", torch.tensor(LUMA), rotated),
                               torch.einsum("c,tchw->thw", torch.tensor(LUMA), rgb * 0.5 + 0.25), atol=1e-5, rtol=0)
    assert apply_colour(torch.ones(1, 3, 2, 2), ColourJitter(brightness=1.8)).max() == 1.0


def test_stride_jitter_composes_flow_over_the_drawn_stride_and_sets_dt(analytic_scene, analytic_csv):
    dataset = _dataset(analytic_scene, analytic_csv, strides=(1, 2, 3))
    seen = set()
    for epoch in range(12):
        dataset.set_epoch(epoch)
        sample = dataset[0]
        stride = int(sample["steps"][1] - sample["steps"][0])
        seen.add(stride)
        assert float(sample["dt"]) == pytest.approx(stride / 30.0)
        x0, y0 = analytic_scene.square_origin(int(sample["steps"][1]))
        flow = sample["flow"][1][:, y0 + 2:y0 + 18, x0 + 2:x0 + 18]
        expected = torch.tensor([-2.0 * stride, -1.0 * stride]).view(2, 1, 1).expand_as(flow)
        torch.testing.assert_close(flow, expected)
    assert seen == {1, 2, 3}


def test_a_scene_too_short_for_the_largest_stride_is_named(analytic_scene, analytic_csv):
    from data.errors import DataFormatError

    _dataset(analytic_scene, analytic_csv, frames=5, strides=(1, 2))  # 12 frames hold 5 at stride 2
    with pytest.raises(DataFormatError, match=r"slide_square.*stride 3 \(the largest of augment.strides\) needs 13"):
        _dataset(analytic_scene, analytic_csv, frames=5, strides=(1, 3))


def test_time_never_runs_backwards(analytic_scene, analytic_csv):
    dataset = _dataset(analytic_scene, analytic_csv)
    with pytest.raises(ValueError, match="do not increase"):
        dataset.load_window(0, np.array([6, 4]))
    with pytest.raises(ValueError, match="do not increase"):
        check_forward_in_time(np.array([3, 3]), "here")
    with pytest.raises(ValueError, match="strides"):
        AugmentConfig(strides=(2, -2))
    everything = _dataset(analytic_scene, analytic_csv, hflip_prob=0.5, strides=(1, 2, 3), crop_scale=(0.5, 1.0),
                          crop_ratio=(0.8, 1.25), brightness=0.3, hue=0.1)
    for epoch in range(10):
        everything.set_epoch(epoch)
        sample = everything[0]
        assert (sample["steps"].diff() > 0).all() and float(sample["dt"]) > 0
        assert float(sample["down_cam"][1]) == 1.0, "gravity keeps pointing down the image"


def test_view_draws_are_keyed_and_independent_of_each_other():
    """Switching one augmentation off leaves the others' draws as they were (for on/off comparisons)."""
    def draw(key, **augment) -> View:
        options = ViewOptions(AugmentConfig(**{"brightness": 0.4, "crop_scale": (0.5, 1.0), **augment}), 2, True, 0.5)
        return draw_view(np.random.default_rng(key), options)

    first = draw([3, 1, 7], strides=(1, 2))
    assert draw([3, 1, 7], strides=(1, 2)) == first and draw([3, 2, 7], strides=(1, 2)) != first
    no_colour = draw([3, 1, 7], strides=(1, 2), brightness=0.0)
    assert no_colour.colour is None
    assert (no_colour.stride, no_colour.crop_area, no_colour.flip) == (first.stride, first.crop_area, first.flip)
    no_crop, no_strides = draw([3, 1, 7], strides=(1, 2), crop_scale=(1.0, 1.0)), draw([3, 1, 7])
    assert no_crop.crop_area == 1.0 and (no_crop.colour, no_crop.flip) == (first.colour, first.flip)
    assert no_strides.stride == 2 and (no_strides.colour, no_strides.crop_area) == (first.colour, first.crop_area)


def _reference(x: torch.Tensor, geometry) -> torch.Tensor:
    """The definition: resize the whole frame (antialiased bilinear), then crop."""
    (x0, y0), (h, w) = geometry.crop_xy, geometry.out_hw
    full = torch.nn.functional.interpolate(x, size=geometry.resized_hw, mode="bilinear", align_corners=False,
                                           antialias=True)
    return full[..., y0:y0 + h, x0:x0 + w]


@pytest.mark.parametrize("in_hw, out_hw, area, aspect, crop", [
    ((64, 64), (64, 64), 0.5, 1.0, (0.0, 0.0)), ((64, 64), (64, 64), 0.6, 1.3, (1.0, 1.0)),
    ((48, 80), (32, 32), 0.3, 0.8, (0.4, 0.7)), ((64, 64), (32, 32), 0.9, 1.0, (0.5, 0.5)),  # the last shrinks
])
def test_a_zoomed_crop_samples_only_its_pixels_with_the_values_of_resizing_the_whole_frame(in_hw, out_hw, area,
                                                                                          aspect, crop):
    from data import transforms

    generator = torch.Generator().manual_seed(1)
    geometry = transforms.plan_geometry(in_hw, out_hw, crop, True, area, aspect)
    frames = torch.randint(0, 256, (2, *in_hw, 3), dtype=torch.uint8, generator=generator)
    expected = torch.flip(_reference(frames.permute(0, 3, 1, 2).float() / 255.0, geometry).clamp(0, 1), dims=[-1])
    torch.testing.assert_close(transforms.apply_rgb_uint8(frames, geometry), expected, atol=1e-5, rtol=0)
    depth = torch.rand(2, *in_hw, generator=generator) * 5 + 1
    valid = torch.rand(2, *in_hw, generator=generator) > 0.3
    got, got_valid = transforms.apply_depth(depth, valid, geometry)
    weight = valid[:, None].float()
    support = _reference(weight, geometry)[:, 0]
    mean = _reference((depth * valid)[:, None], geometry)[:, 0] / support.clamp_min(1e-6)
    want_valid = torch.flip(support >= 0.5, dims=[-1])
    undecided = torch.flip((support - 0.5).abs() < 1e-5, dims=[-1])
    assert torch.equal(got_valid | undecided, want_valid | undecided)
    both = got_valid & want_valid
    torch.testing.assert_close(got[both], torch.flip(mean, dims=[-1])[both], atol=1e-4, rtol=0)
