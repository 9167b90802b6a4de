"""Known-answer tests of the PyBullet scene generator (tiny scenes, CPU, a few seconds).

Checks the exact on-disk format, that distance is Euclidean along the ray, the motion-vector sign
convention against poses and against photometric warping, determinism, and atomic writes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pybullet as p
import pytest
from PIL import Image

from data.sim.camera import Camera
from data.sim.families import FAMILIES
from data.sim.generate import GenConfig, SceneJob, connect, generate_many, generate_scene, make_jobs
from data.sim.ground_truth import distance_from_depth_buffer
from data.sim.render import render
from data.sim.writer import SceneWriter

REPO = Path(__file__).resolve().parents[1]
SIZE, FRAMES = 64, 8
LEAF = Path("env_0") / "0" / "0"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    """One tiny scene of every family (seed 1)."""
    root = tmp_path_factory.mktemp("scenes")
    cfg = GenConfig(width=SIZE, height=SIZE, frames=FRAMES)
    status = generate_many(root, make_jobs(sorted(FAMILIES), 1, 1), cfg, workers=1, progress=False)
    assert set(status.values()) == {"written"}, status
    return root


def _leaf(root: Path, name: str) -> Path:
    return root / name / LEAF


def _load(root: Path, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """rgb (T,H,W,3) float64, mv (T,H,W,4), distance (T,H,W), scene.json."""
    leaf = _leaf(root, name)
    meta = json.loads((leaf / "scene.json").read_text())
    steps = range(meta["num_frames"])
    rgb = np.stack([np.asarray(Image.open(leaf / f"rgb/step_{t:04d}.png"), np.float64) for t in steps])
    mv = np.stack([np.load(leaf / f"motion_vectors/step_{t:04d}.npy") for t in steps])
    dist = np.stack([np.load(leaf / f"distance_to_camera/step_{t:04d}.npy") for t in steps])
    return rgb, mv, dist, meta


def _camera(meta: dict) -> Camera:
    c = meta["camera"]
    return Camera(meta["width"], meta["height"], c["fov_y_deg"], c["near"], c["far"],
                  tuple(c["position"]), tuple(c["target"]), tuple(c["up"]))


def test_layout_dtypes_and_shapes(scenes: Path) -> None:
    for family in FAMILIES:
        leaf = _leaf(scenes, f"{family}_00001")
        for sub, suffix in (("rgb", ".png"), ("motion_vectors", ".npy"), ("distance_to_camera", ".npy")):
            names = sorted(x.name for x in (leaf / sub).iterdir())
            assert names == [f"step_{t:04d}{suffix}" for t in range(FRAMES)]
        image = Image.open(leaf / "rgb/step_0003.png")
        assert image.mode == "RGB" and image.size == (SIZE, SIZE)
        mv = np.load(leaf / "motion_vectors/step_0003.npy")
        dist = np.load(leaf / "distance_to_camera/step_0003.npy")
        assert mv.shape == (SIZE, SIZE, 4) and mv.dtype == np.float32
        assert dist.shape == (SIZE, SIZE) and dist.dtype == np.float32
        assert not mv[..., 2:].any()
        assert not np.load(leaf / "motion_vectors/step_0000.npy").any(), "first frame must be zero"
        meta = json.loads((leaf / "scene.json").read_text())
        assert meta["family"] == family and meta["num_frames"] == FRAMES and meta["fps"] == 30
        assert meta["distance_convention"] == "euclidean_ray_m"
        assert all(len(o["poses"]) == FRAMES for o in meta["objects"])
        assert np.asarray(meta["camera"]["view_matrix"]).shape == (4, 4)
    assert not list(scenes.glob(".tmp-*")), "temporary directories must not remain"


def test_every_family_moves(scenes: Path) -> None:
    for family in FAMILIES:
        _, mv, _, meta = _load(scenes, f"{family}_00001")
        speed = np.hypot(mv[..., 0], mv[..., 1])
        moving_frames = (speed > 0.25).sum(axis=(1, 2)) >= 4
        assert moving_frames.sum() >= FRAMES // 2, family
        assert any(not o["static"] for o in meta["objects"])


def test_camera_matches_pybullet() -> None:
    cam = Camera(96, 64, 50.0, 0.1, 20.0, (0.3, -2.0, 1.0), (0.0, 0.2, 0.3))
    view = p.computeViewMatrix(cam.position, cam.target, cam.up)
    proj = p.computeProjectionMatrixFOV(cam.fov_y_deg, 96 / 64, cam.near, cam.far)
    gl_view, gl_proj = cam.gl_matrices()
    np.testing.assert_allclose(gl_view, view, atol=1e-6)
    np.testing.assert_allclose(gl_proj, proj, atol=1e-6)
    u, v = np.array([5.5, 70.5]), np.array([3.5, 60.5])
    pts = cam.unproject(u, v, np.array([2.0, 3.0]))
    np.testing.assert_allclose(np.linalg.norm(pts - cam.position, axis=1), [2.0, 3.0])
    pu, pv, _ = cam.project(pts)
    np.testing.assert_allclose(np.stack([pu, pv]), np.stack([u, v]), atol=1e-9)


def test_principal_point_matches_renderer() -> None:
    """Unprojected distances of two rendered planes (x = 1 and z = 0) land on those planes.

    A half-pixel error in cx (cy) tilts the recovered x = 1 (z = 0) plane by far more than the
    tolerance, so this pins the intrinsics to TinyRenderer's actual sample positions.
    """
    client = connect()
    try:
        for half, centre in (([0.5, 5, 5], [1.5, 0, 0]), ([5, 5, 0.5], [0, 0, -0.5])):
            col = client.createCollisionShape(p.GEOM_BOX, halfExtents=half)
            vis = client.createVisualShape(p.GEOM_BOX, halfExtents=half)
            client.createMultiBody(0, col, vis, centre)
        cam = Camera(48, 40, 50.0, 0.05, 30.0, (0.2, -3.0, 1.2), (0.4, 0.0, 0.4))
        raw = render(client, cam, shadows=False)
    finally:
        client.disconnect()
    dist = distance_from_depth_buffer(raw.depth_buffer, raw.segmentation >= 0, cam, 0.0)
    u, v = cam.pixel_grid()
    pts = cam.unproject(u, v, dist.astype(np.float64))
    for body, axis, value in ((0, 0, 1.0), (1, 2, 0.0)):
        mask = raw.segmentation == body
        assert mask.sum() > 100
        np.testing.assert_allclose(pts[mask][:, axis], value, atol=2e-4)


def test_distance_is_euclidean_on_floor(scenes: Path) -> None:
    """Where the floor (z = 0) is visible, the stored value is the exact ray length to it.

    The analytic ray-plane distance uses the intrinsics of scene.json, so this also pins the
    principal point to the renderer's pixel centres.  Planar depth would be measurably smaller.
    """
    _, _, dist, meta = _load(scenes, "ball_collide_00001")
    cam = _camera(meta)
    u, v = cam.pixel_grid()
    far_pts = cam.unproject(u, v, np.ones_like(u))  # unit rays
    ray = far_pts - np.asarray(cam.position)
    floor_distance = np.where(ray[..., 2] < 0, -cam.position[2] / np.minimum(ray[..., 2], -1e-9), np.inf)
    on_floor = np.abs(dist[0] - floor_distance) < 2e-3 * floor_distance
    assert on_floor.mean() > 0.3
    planar = dist[0] / cam.ray_factor()
    off_axis = on_floor & (cam.ray_factor() > 1.02)
    assert off_axis.sum() > 50
    assert np.all(np.abs(planar - floor_distance)[off_axis] > 5e-3 * floor_distance[off_axis])
    # Nothing visible lies beyond the floor along a downward ray (objects only occlude).
    assert np.all(dist[0][ray[..., 2] < 0] <= floor_distance[ray[..., 2] < 0] * 1.002)


def test_distance_on_ball_surface(scenes: Path) -> None:
    """Pixels near a ball's projected centre unproject onto its sphere (|X - c| ~ r).

    TinyRenderer draws spheres as a tessellated mesh whose faces lie up to ~6 % inside the
    true radius, hence the tolerance; the floor test above is the exact one.
    """
    _, _, dist, meta = _load(scenes, "ball_collide_00001")
    cam = _camera(meta)
    u, v = cam.pixel_grid()
    ball = next(o for o in meta["objects"] if o["shape"] == "sphere")
    centre, radius = np.asarray(ball["poses"][0][:3]), ball["radius"][0]
    cu, cv, depth = cam.project(centre)
    near_centre = np.hypot(u - cu, v - cv) < 0.5 * radius * cam.fy / depth
    assert near_centre.sum() >= 3
    pts = cam.unproject(u[near_centre], v[near_centre], dist[0][near_centre].astype(np.float64))
    np.testing.assert_allclose(np.linalg.norm(pts - centre, axis=1), 0.97 * radius, rtol=0.05)


def test_background_distance_values() -> None:
    cam = Camera(8, 8, 45.0, 0.1, 10.0, (0, -2, 1), (0, 0, 0))
    buffer = np.full((8, 8), 0.5, np.float32)
    hit = np.zeros((8, 8), bool)
    hit[:4] = True
    for background in (float("inf"), 0.0):
        d = distance_from_depth_buffer(buffer, hit, cam, background)
        assert np.all(d[4:] == background) and np.all(np.isfinite(d[:4])) and np.all(d[:4] > 0)
    with pytest.raises(ValueError):
        GenConfig(background_distance=5.0)


def test_motion_sign_of_falling_ball(scenes: Path) -> None:
    """A falling ball moves down in the image (v grows), so file ch1 = v_{t-1} - v_t < 0."""
    _, mv, _, meta = _load(scenes, "ball_on_block_00001")
    cam = _camera(meta)
    u, v = cam.pixel_grid()
    ball = next(o for o in meta["objects"] if o["name"] == "ball")
    radius = ball["radius"][0]
    poses = np.asarray(ball["poses"])
    t = 4  # still in free fall: dropped from >= 0.5 m, which takes > 9 frames
    assert poses[t, 2] < poses[t - 1, 2]
    (cu0, cv0, _), (cu1, cv1, depth) = cam.project(poses[t - 1, :3]), cam.project(poses[t, :3])
    assert cv1 > cv0
    inside = np.hypot(u - cu1, v - cv1) < 0.7 * radius * cam.fy / depth
    assert inside.sum() >= 3
    ch0, ch1 = mv[t][inside, 0], mv[t][inside, 1]
    assert np.all(ch1 < 0)
    np.testing.assert_allclose(ch1.mean(), cv0 - cv1, rtol=0.1)
    np.testing.assert_allclose(ch0.mean(), cu0 - cu1, atol=0.1 + 0.1 * abs(cv0 - cv1))


def _warp_backward(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample ``image`` (H,W,C) at p + flow[p] (pixels, +x right, +y down), bilinear, clamped."""
    h, w = image.shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    sx = np.clip(x + flow[..., 0], 0, w - 1)
    sy = np.clip(y + flow[..., 1], 0, h - 1)
    x0, y0 = np.floor(sx).astype(int), np.floor(sy).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


@pytest.mark.parametrize("family", ["ball_collide", "domino", "stack_topple"])
def test_photometric_warp_prefers_file_sign(scenes: Path, family: str) -> None:
    """I_t(p) ~ I_{t-1}(p + mv[p]) on moving pixels; the negated flow must be much worse."""
    rgb, mv, _, _ = _load(scenes, f"{family}_00001")
    good, bad = [], []
    for t in range(1, FRAMES):
        flow = mv[t, ..., :2].astype(np.float64)
        moving = np.hypot(flow[..., 0], flow[..., 1]) > 0.5
        if moving.sum() < 4:
            continue
        good.append(np.abs(_warp_backward(rgb[t - 1], flow) - rgb[t])[moving].mean())
        bad.append(np.abs(_warp_backward(rgb[t - 1], -flow) - rgb[t])[moving].mean())
    assert good, "no moving pixels"
    assert np.mean(good) < 0.6 * np.mean(bad), (good, bad)


def test_deterministic_and_seed_dependent(tmp_path: Path, scenes: Path) -> None:
    cfg = GenConfig(width=SIZE, height=SIZE, frames=FRAMES)
    for root in (tmp_path / "a", tmp_path / "b"):
        root.mkdir()
        assert generate_scene(root, SceneJob("ball_collide", 1), cfg) == "written"
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 3 * FRAMES + 1
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
        assert (tmp_path / "a" / rel).read_bytes() == (scenes / rel).read_bytes(), rel
    generate_scene(tmp_path / "a", SceneJob("ball_collide", 2), cfg)
    frame = Path("env_0/0/0/rgb/step_0000.png")
    seed1 = (tmp_path / "a" / "ball_collide_00001" / frame).read_bytes()
    assert (tmp_path / "a" / "ball_collide_00002" / frame).read_bytes() != seed1


def test_killed_run_leaves_no_scene(tmp_path: Path, monkeypatch) -> None:
    original = SceneWriter.write_frame

    def failing(self, step, *args):
        if step == 3:
            raise KeyboardInterrupt
        original(self, step, *args)

    monkeypatch.setattr(SceneWriter, "write_frame", failing)
    with pytest.raises(KeyboardInterrupt):
        generate_scene(tmp_path, SceneJob("domino", 0), GenConfig(width=32, height=32, frames=6))
    assert list(tmp_path.iterdir()) == []


def test_cli_help_and_tiny_run(tmp_path: Path) -> None:
    script = str(REPO / "scripts" / "generate_scenes.py")
    assert "--preset" in subprocess.run([sys.executable, script, "--help"], capture_output=True,
                                        text=True, check=True).stdout
    subprocess.run([sys.executable, script, "--out", str(tmp_path), "--preset", "demo", "--families",
                    "table_edge", "--scenes-per-family", "2", "--size", "32", "48", "--frames", "4",
                    "--workers", "2", "--seed", "7"], check=True, capture_output=True)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["table_edge_00007", "table_edge_00008"]
    meta = json.loads((tmp_path / "table_edge_00007" / LEAF / "scene.json").read_text())
    assert (meta["height"], meta["width"], meta["num_frames"]) == (32, 48, 4)
    assert np.load(tmp_path / "table_edge_00007" / LEAF / "distance_to_camera/step_0001.npy").shape == (32, 48)
