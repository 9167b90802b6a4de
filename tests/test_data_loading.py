"""Known-answer tests of the data layer on analytic scenes: flow sign, stride composition,
resize scaling, flips, depth masking, sampling."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data import transforms
from data.dataset import DataConfig, SimPhysicsDataset
from data.flow import backward_warp
from data.sampling import WindowSpec, window_indices
from tests.conftest import SQUARE_DISTANCE_M, BACKGROUND_DISTANCE_M, AnalyticScene


def _dataset(scene: AnalyticScene, csv: Path, frames: int, stride: int, size: int = 64, **kwargs) -> SimPhysicsDataset:
    config = DataConfig(
        root=str(scene.root), metadata=str(csv), height=size, width=size,
        window=WindowSpec(num_frames=frames, stride=stride), **kwargs,
    )
    return SimPhysicsDataset(config, train=kwargs.get("hflip_prob", 0) > 0)


def _interior(scene: AnalyticScene, step: int, margin: int = 1) -> tuple[slice, slice]:
    x0, y0 = scene.square_origin(step)
    return slice(y0 + margin, y0 + scene.square - margin), slice(x0 + margin, x0 + scene.square - margin)


def test_window_tensors_have_documented_shapes(analytic_scene, analytic_csv):
    sample = _dataset(analytic_scene, analytic_csv, frames=5, stride=2)[0]
    assert sample["rgb"].shape == (5, 3, 64, 64) and sample["rgb"].dtype == torch.float32
    assert sample["flow"].shape == (5, 2, 64, 64) and sample["flow_valid"].shape == (5, 64, 64)
    assert sample["depth"].shape == (5, 64, 64) and sample["depth_valid"].dtype == torch.bool
    assert sample["steps"].tolist() == [0, 2, 4, 6, 8]
    assert not sample["flow_valid"][0].any(), "frame 0 has no previous window frame"


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_flow_is_composed_over_the_stride(analytic_scene, analytic_csv, stride):
    sample = _dataset(analytic_scene, analytic_csv, frames=3, stride=stride)[0]
    step = int(sample["steps"][2])
    rows, cols = _interior(analytic_scene, step)
    vx, vy = analytic_scene.velocity
    flow = sample["flow"][2][:, rows, cols]
    assert sample["flow_valid"][2][rows, cols].all()
    torch.testing.assert_close(flow[0], torch.full_like(flow[0], -vx * stride))
    torch.testing.assert_close(flow[1], torch.full_like(flow[1], -vy * stride))


def test_backward_flow_warps_previous_frame_onto_current(analytic_scene, analytic_csv):
    """The sign test the issue asks for: loaded flow beats its negation by a wide margin."""
    sample = _dataset(analytic_scene, analytic_csv, frames=4, stride=2)[0]
    previous, current = sample["rgb"][2:3], sample["rgb"][3:4]
    flow = sample["flow"][3:4]
    moving = (sample["flow"][3].norm(dim=0) > 0.5) & sample["flow_valid"][3]
    right, _ = backward_warp(previous, flow)
    wrong, _ = backward_warp(previous, -flow)
    error_right = (right - current).abs().mean(dim=1)[0][moving].mean()
    error_wrong = (wrong - current).abs().mean(dim=1)[0][moving].mean()
    assert error_right < 0.2 * error_wrong, (error_right, error_wrong)
    assert error_right < 1e-3


def test_resize_scales_flow_vectors(analytic_scene, analytic_csv):
    full = _dataset(analytic_scene, analytic_csv, frames=2, stride=2, size=64)[0]
    half = _dataset(analytic_scene, analytic_csv, frames=2, stride=2, size=32)[0]
    rows, cols = _interior(analytic_scene, int(full["steps"][1]), margin=3)
    half_rows = slice(rows.start // 2 + 1, rows.stop // 2 - 1)
    half_cols = slice(cols.start // 2 + 1, cols.stop // 2 - 1)
    expected = full["flow"][1][:, rows, cols].mean(dim=(1, 2)) * 0.5
    got = half["flow"][1][:, half_rows, half_cols]
    torch.testing.assert_close(got, expected.view(2, 1, 1).expand_as(got))
    assert half["intrinsics"][0] == pytest.approx(full["intrinsics"][0] * 0.5)


def test_horizontal_flip_negates_x_flow(analytic_scene, analytic_csv):
    # The whole scene is one window, so the random training start cannot differ.
    plain = _dataset(analytic_scene, analytic_csv, frames=12, stride=1)[0]
    flipped = _dataset(analytic_scene, analytic_csv, frames=12, stride=1, hflip_prob=1.0)[0]
    torch.testing.assert_close(flipped["flow"][:, 0], -torch.flip(plain["flow"][:, 0], dims=[-1]))
    torch.testing.assert_close(flipped["flow"][:, 1], torch.flip(plain["flow"][:, 1], dims=[-1]))
    torch.testing.assert_close(flipped["rgb"], torch.flip(plain["rgb"], dims=[-1]))
    width = 64
    assert flipped["intrinsics"][2] == pytest.approx(width - 1 - plain["intrinsics"][2])


@pytest.mark.parametrize("in_hw, out_hw, crop, flip", [
    ((64, 64), (64, 64), (0.5, 0.5), False), ((64, 96), (64, 64), (0.25, 0.5), True),  # crop only: uint8 path
    ((96, 64), (64, 64), (0.5, 1.0), False), ((64, 80), (32, 32), (0.5, 0.5), True),  # resize: float path
])
def test_rgb_from_decoded_pixels_equals_converting_first(in_hw, out_hw, crop, flip):
    """The loader crops and flips uint8 pixels before converting; the values must be exactly
    those of converting the whole frame first (the reference path, ``apply_rgb``)."""
    frames = torch.randint(0, 256, (3, *in_hw, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    geometry = transforms.plan_geometry(in_hw, out_hw, crop, flip)
    expected = transforms.apply_rgb(frames.permute(0, 3, 1, 2).float() / 255.0, geometry)
    got = transforms.apply_rgb_uint8(frames, geometry)
    assert got.shape == (3, 3, *out_hw) and got.is_contiguous()
    assert torch.equal(got, expected)


def test_window_rgb_is_the_centre_crop_of_the_pngs(analytic_scene, analytic_csv):
    sample = _dataset(analytic_scene, analytic_csv, frames=3, stride=2, size=64)
    sample = SimPhysicsDataset(replace(sample.config, height=32))[0]  # 64x64 frames -> rows 16..47
    for t, step in enumerate(sample["steps"].tolist()):
        png = np.asarray(Image.open(analytic_scene.directory / "rgb" / f"step_{step:04d}.png").convert("RGB"))
        expected = torch.from_numpy(png[16:48].copy()).permute(2, 0, 1).float() / 255.0
        assert torch.equal(sample["rgb"][t], expected), t


def test_invalid_depth_becomes_a_mask_and_never_mixes_into_values(analytic_scene, analytic_csv):
    for size in (64, 32):
        sample = _dataset(analytic_scene, analytic_csv, frames=2, stride=1, size=size)[0]
        depth, valid = sample["depth"], sample["depth_valid"]
        assert not valid[:, : size // 8 - 1].any(), "the inf sky strip must be invalid"
        assert torch.isfinite(depth).all()
        values = depth[valid]
        assert values.min() >= SQUARE_DISTANCE_M - 1e-5 and values.max() <= BACKGROUND_DISTANCE_M + 1e-5


def test_sampling_is_random_in_training_and_fixed_in_evaluation():
    spec = WindowSpec(num_frames=49, stride=2)
    assert window_indices(131, spec, None).tolist() == list(range(0, 97, 2))
    centre = window_indices(131, WindowSpec(49, 2, eval_anchor="center"), None)
    assert centre[0] == (131 - 97) // 2
    starts = {int(window_indices(131, spec, np.random.default_rng(s))[0]) for s in range(40)}
    assert len(starts) > 10 and max(starts) <= 131 - 97
    with pytest.raises(ValueError, match="needs 97"):
        window_indices(96, spec, None)


def test_training_windows_are_a_function_of_seed_epoch_and_index(analytic_scene, analytic_csv):
    config = DataConfig(root=str(analytic_scene.root), metadata=str(analytic_csv), height=64, width=64,
                        window=WindowSpec(num_frames=3, stride=2))
    first = SimPhysicsDataset(config, train=True, seed=3)
    again = SimPhysicsDataset(config, train=True, seed=3)
    starts = []
    for epoch in range(6):
        first.set_epoch(epoch), again.set_epoch(epoch)
        assert torch.equal(first[0]["steps"], again[0]["steps"])
        starts.append(int(first[0]["steps"][0]))
    assert len(set(starts)) > 1


def test_frames_are_matched_by_step_number_not_listing_order(tmp_path):
    from tests.conftest import write_analytic_scene, write_metadata
    scene = write_analytic_scene(tmp_path / "root", frames=12)
    for sub, ext in (("rgb", "png"), ("motion_vectors", "npy"), ("distance_to_camera", "npy")):
        for step in range(12):  # unpadded names: 'step_10' sorts before 'step_2' as text
            (scene.directory / sub / f"step_{step:04d}.{ext}").rename(scene.directory / sub / f"step_{step}.{ext}")
    csv = write_metadata(tmp_path / "m.csv", [(f"{scene.name}/env_0/0/0", "p", "train")])
    sample = _dataset(scene, csv, frames=12, stride=1)[0]
    assert sample["steps"].tolist() == list(range(12))
    rows, cols = _interior(scene, 11)
    assert (sample["flow"][11][0][rows, cols] == -scene.velocity[0]).all()


def test_grayscale_and_rgba_pngs_are_accepted(analytic_scene, analytic_csv):
    from PIL import Image
    rgb_dir = analytic_scene.directory / "rgb"
    Image.open(rgb_dir / "step_0000.png").convert("L").save(rgb_dir / "step_0000.png")
    Image.open(rgb_dir / "step_0001.png").convert("RGBA").save(rgb_dir / "step_0001.png")
    sample = _dataset(analytic_scene, analytic_csv, frames=2, stride=1)[0]
    gray = sample["rgb"][0]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert sample["rgb"][1].shape == (3, 64, 64)


def test_composition_never_follows_an_occluder(analytic_scene, analytic_csv):
    """Background just uncovered by the square was hidden at the intermediate step; chaining
    through it would copy the square's motion.  Those pixels must be invalid, not wrong."""
    sample = _dataset(analytic_scene, analytic_csv, frames=3, stride=3)[0]
    step = int(sample["steps"][2])
    x0, y0 = analytic_scene.square_origin(step)
    on_square = torch.zeros(64, 64, dtype=torch.bool)
    on_square[y0 : y0 + analytic_scene.square, x0 : x0 + analytic_scene.square] = True
    background_valid = sample["flow_valid"][2] & ~on_square
    assert background_valid.sum() > 1000
    assert sample["flow"][2][:, background_valid].abs().max() < 1e-4
    hidden_on_the_way = torch.zeros(64, 64, dtype=torch.bool)
    for intermediate in (step - 1, step - 2):  # the steps whose flow composition samples
        xi, yi = analytic_scene.square_origin(intermediate)
        hidden_on_the_way[yi : yi + analytic_scene.square, xi : xi + analytic_scene.square] = True
    uncovered = hidden_on_the_way & ~on_square
    assert uncovered.any() and not sample["flow_valid"][2][uncovered].any()


def test_convention_check_finds_the_replicator_signs(analytic_scene, analytic_csv):
    from data.convention_check import aspect_ratios, check_conventions, choose
    scores = check_conventions(analytic_scene.root, analytic_csv)
    chosen = choose(scores, margin=0.5)
    assert chosen.reading == ("replicator", "pixels", "current")
    assert aspect_ratios(scores, chosen)["name"][0] < 0.2


def test_loaded_flow_warps_generated_scenes_the_right_way(generated_dataset):
    """The same sign test on PyBullet scenes through the whole loader (stride 2: composed flow)."""
    root, csv = generated_dataset
    dataset = SimPhysicsDataset(DataConfig(root=str(root), metadata=str(csv), height=64, width=64,
                                           window=WindowSpec(num_frames=5, stride=2)))
    errors = {"right": 0.0, "negated": 0.0, "zero": 0.0}
    pixels = 0
    for index in range(len(dataset)):
        sample = dataset[index]
        for t in range(1, 5):
            moving = sample["flow_valid"][t] & (sample["flow"][t].norm(dim=0) > 0.5)
            previous, current, flow = sample["rgb"][t - 1 : t], sample["rgb"][t : t + 1], sample["flow"][t : t + 1]
            for name, candidate in (("right", flow), ("negated", -flow), ("zero", 0 * flow)):
                warped, _ = backward_warp(previous, candidate)
                errors[name] += float((warped - current).abs().mean(dim=1)[0][moving].sum())
            pixels += int(moving.sum())
    assert pixels > 500
    assert errors["right"] < 0.5 * errors["negated"] and errors["right"] < 0.5 * errors["zero"], errors
