"""Violation pairs: every kind is really in the written ground truth, measured from the files.

One tiny run of scripts/make_violation_pairs.py (projectile and bounce, seed 1, 64 px, 33 frames)
and one of generate_scenes.py with the same options.  projectile_00001 flies, lands and comes to
rest within the clip; bounce_00001 is still bouncing at the end (no time_reversed variant).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.metadata_split import build_rows, describe_scene
from data.sim import generate
from data.sim.bodies import GRAVITY
from data.sim.camera import Camera
from data.sim.generate import GenConfig, SceneJob
from data.sim.violation_pairs import generate_pair
from data.sim.violations import GRAVITY_FACTORS, KINDS, Violation

REPO = Path(__file__).resolve().parents[1]
LEAF = Path("env_0") / "0" / "0"
FAMILIES = ("projectile", "bounce")
OPTIONS = ["--preset", "demo", "--families", ",".join(FAMILIES), "--scenes-per-family", "1", "--seed", "1",
           "--size", "64", "64", "--frames", "33", "--log-level", "WARNING"]


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> tuple[Path, Path]:
    """(pairs root, generate_scenes.py root) made with the same generation options."""
    out = tmp_path_factory.mktemp("violations")
    pairs, plain = out / "pairs", out / "plain"
    for script, root in (("make_violation_pairs.py", pairs), ("generate_scenes.py", plain)):
        subprocess.run([sys.executable, str(REPO / "scripts" / script), "--out", str(root), "--workers", "2",
                        *OPTIONS], check=True, capture_output=True)
    return pairs, plain


def _load(root: Path, name: str) -> dict:
    """scene.json plus rgb (T,H,W,3) float64, mv (T,H,W,4) and distance (T,H,W) as arrays."""
    leaf = root / name / LEAF
    meta = json.loads((leaf / "scene.json").read_text())
    steps = range(meta["num_frames"])
    meta["rgb"] = np.stack([np.asarray(Image.open(leaf / f"rgb/step_{t:04d}.png"), np.float64) for t in steps])
    meta["mv"] = np.stack([np.load(leaf / f"motion_vectors/step_{t:04d}.npy") for t in steps])
    meta["dist"] = np.stack([np.load(leaf / f"distance_to_camera/step_{t:04d}.npy") for t in steps])
    return meta


def _positions(meta: dict, body_id: int | None = None) -> np.ndarray:
    """(T, 3) base positions of the body (default: the only moving one)."""
    movers = [o for o in meta["objects"] if not o["static"]]
    obj = movers[0] if body_id is None else next(o for o in movers if o["body_id"] == body_id)
    return np.asarray(obj["poses"])[:, :3]


def _camera(meta: dict) -> Camera:
    c = meta["camera"]
    return Camera(meta["width"], meta["height"], c["fov_y_deg"], c["near"], c["far"],
                  tuple(c["position"]), tuple(c["target"]), tuple(c["up"]))


def _warp_backward(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample ``image`` at p + flow[p] (pixels, +x right, +y down), bilinear, clamped."""
    h, w = image.shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    sx, sy = np.clip(x + flow[..., 0], 0, w - 1), np.clip(y + flow[..., 1], 0, h - 1)
    x0, y0 = np.floor(sx).astype(int), np.floor(sy).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    return top * (1 - fy) + (image[y1, x0] * (1 - fx) + image[y1, x1] * fx) * fy


def _warp_errors(meta: dict, sign: float = 1.0) -> list[float]:
    """Per frame: mean |I_{t-1}(p + sign * mv[p]) - I_t(p)| over pixels moving > 0.5 px."""
    errors = []
    for t in range(1, meta["num_frames"]):
        flow = meta["mv"][t, ..., :2].astype(np.float64)
        moving = np.hypot(flow[..., 0], flow[..., 1]) > 0.5
        if moving.sum() >= 4:
            warped = _warp_backward(meta["rgb"][t - 1], sign * flow)
            errors.append(float(np.abs(warped - meta["rgb"][t])[moving].mean()))
    return errors


def test_manifest_rows_and_recorded_violations(roots) -> None:
    pairs, _ = roots
    with open(pairs / "pairs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["plausible", "implausible", "kind"]
    expected = {(f"{f}_00001", k) for f in FAMILIES for k in KINDS} - {("bounce_00001", "time_reversed")}
    assert {(r["plausible"].split("/")[0], r["kind"]) for r in rows} == expected
    assert len(rows) == len(expected)
    for row in rows:
        assert row["plausible"] == f"{row['plausible'].split('/')[0]}/env_0/0/0"
        assert row["implausible"] == row["plausible"].replace("/env_0", f"_{row['kind']}/env_0", 1)
        meta = json.loads((pairs / row["implausible"] / "scene.json").read_text())
        assert meta["violation"]["kind"] == row["kind"]
        plausible = json.loads((pairs / row["plausible"] / "scene.json").read_text())
        assert plausible["violation"] is None and meta["attempt"] == plausible["attempt"]
    assert not (pairs / "bounce_00001_time_reversed").exists(), "bounce does not end at rest"
    assert not list(pairs.glob(".tmp-*"))


def test_plausible_identical_to_generate_scenes(roots) -> None:
    pairs, plain = roots
    for family in FAMILIES:
        files = sorted(p.relative_to(plain) for p in (plain / f"{family}_00001").rglob("*") if p.is_file())
        assert len(files) == 3 * 33 + 1
        for rel in files:
            assert (pairs / rel).read_bytes() == (plain / rel).read_bytes(), rel


def test_variants_share_the_start(roots) -> None:
    """Same look, camera, bodies and start: frame 0 is the plausible take's frame 0."""
    pairs, _ = roots
    for family in FAMILIES:
        leaf = pairs / f"{family}_00001" / LEAF
        for kind in set(KINDS) - {"time_reversed"}:
            other = pairs / f"{family}_00001_{kind}" / LEAF
            for rel in ("rgb/step_0000.png", "distance_to_camera/step_0000.npy"):
                assert (other / rel).read_bytes() == (leaf / rel).read_bytes(), (family, kind)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", [None, *GRAVITY_FACTORS])
def test_gravity_in_free_fall(roots, family: str, kind: str | None) -> None:
    """The vertical acceleration fitted to the first 7 frames (free flight) is the recorded gravity."""
    name = f"{family}_00001" + (f"_{kind}" if kind else "")
    meta = json.loads((roots[0] / name / LEAF / "scene.json").read_text())
    z = _positions(meta)[:7, 2]
    t = np.arange(7) / meta["fps"]
    coef, residual, *_ = np.polyfit(t, z, 2, full=True)
    assert residual[0] < 1e-8, "not in free flight"
    factor = GRAVITY_FACTORS.get(kind, 1.0)
    np.testing.assert_allclose(2 * coef[0], -GRAVITY * factor, rtol=1e-3)
    np.testing.assert_allclose(meta["gravity"], [0.0, 0.0, -GRAVITY * factor])


@pytest.mark.parametrize("family", FAMILIES)
def test_teleport_one_jump_in_poses_and_flow(roots, family: str) -> None:
    pairs, _ = roots
    meta, plausible = _load(pairs, f"{family}_00001_teleport"), _load(pairs, f"{family}_00001")
    violation = meta["violation"]
    frame, offset = violation["frame"], np.asarray(violation["offset"])
    assert meta["num_frames"] // 4 <= frame < meta["num_frames"] - meta["num_frames"] // 4
    assert 0.15 <= np.linalg.norm(offset) <= 0.3 and offset[2] == 0
    forward = np.subtract(meta["camera"]["target"], meta["camera"]["position"])
    assert abs(offset @ forward) < 1e-9, "the jump is sideways to the camera"
    position = _positions(meta, violation["body_id"])
    jump = np.linalg.norm(np.diff(position - _positions(plausible, violation["body_id"]), axis=0), axis=1)
    assert np.argmax(jump) == frame - 1 and np.sort(jump)[-2] < 0.1 * jump.max(), jump
    np.testing.assert_allclose(jump.max(), np.linalg.norm(offset), rtol=1e-6)
    # GT flow at the jump: the body's pixels moved by the projected jump (centre's shift).
    cam = _camera(meta)
    (u0, v0, _), (u1, v1, _) = cam.project(position[frame - 1]), cam.project(position[frame])
    flow = meta["mv"][frame]
    body = np.hypot(flow[..., 0], flow[..., 1]) > 0
    assert body.sum() >= 4
    assert np.hypot(u0 - u1, v0 - v1) > 2.0 + np.abs(plausible["mv"][frame, ..., :2]).max()
    np.testing.assert_allclose(flow[body, :2].mean(axis=0), [u0 - u1, v0 - v1], atol=0.5, rtol=0.1)


def test_vanish_body_pixels_disappear(roots) -> None:
    """projectile has one moving body: from the vanish frame on, nothing moves or changes."""
    pairs, _ = roots
    meta, plausible = _load(pairs, "projectile_00001_vanish"), _load(pairs, "projectile_00001")
    frame = meta["violation"]["frame"]
    assert np.array_equal(meta["rgb"][:frame], plausible["rgb"][:frame])
    assert np.abs(meta["rgb"][frame] - plausible["rgb"][frame]).sum(axis=-1).astype(bool).sum() >= 4
    assert not meta["mv"][frame:].any()
    assert np.all(meta["rgb"][frame:] == meta["rgb"][frame])
    assert np.all(meta["dist"][frame:] == meta["dist"][frame])
    assert np.all(_positions(meta)[frame:, 2] < -50)


@pytest.mark.parametrize("family", FAMILIES)
def test_pass_through_falls_through_floor(roots, family: str) -> None:
    pairs, _ = roots
    meta = json.loads((pairs / f"{family}_00001_pass_through" / LEAF / "scene.json").read_text())
    plausible = json.loads((pairs / f"{family}_00001" / LEAF / "scene.json").read_text())
    assert _positions(plausible)[-1, 2] > 0
    assert _positions(meta)[-1, 2] < -0.5


@pytest.mark.parametrize("family", FAMILIES)
def test_speed_change_doubles_the_time_base(roots, family: str) -> None:
    """From the switch on, variant frame t is the plausible take's frame 2t - switch + 1 (frames
    dropped), and its GT flow still warps frame t-1 onto frame t."""
    pairs, _ = roots
    meta, plausible = _load(pairs, f"{family}_00001_speed_change"), _load(pairs, f"{family}_00001")
    switch, schedule = meta["violation"]["switch_frame"], meta["violation"]["substeps_per_frame"]
    assert switch == meta["num_frames"] // 2 and schedule == [8, 16]
    ours, theirs = _positions(meta), _positions(plausible)
    np.testing.assert_allclose(ours[:switch], theirs[:switch], atol=1e-12)
    later = np.arange(switch, (meta["num_frames"] + switch) // 2)
    assert len(later) >= 8
    np.testing.assert_allclose(ours[later], theirs[2 * later - switch + 1], atol=1e-9)
    step = np.linalg.norm(np.diff(ours, axis=0), axis=1)
    assert step[switch - 1] > 1.5 * np.linalg.norm(theirs[switch] - theirs[switch - 1])
    assert np.mean(_warp_errors(meta)) < 0.6 * np.mean(_warp_errors(meta, -1.0))


def test_time_reversed_frames_and_flow(roots) -> None:
    pairs, _ = roots
    meta, plausible = _load(pairs, "projectile_00001_time_reversed"), _load(pairs, "projectile_00001")
    assert np.array_equal(meta["rgb"], plausible["rgb"][::-1])
    assert np.array_equal(meta["dist"], plausible["dist"][::-1])
    np.testing.assert_array_equal(_positions(meta), _positions(plausible)[::-1])
    assert not np.abs(meta["mv"][:4]).max() > 0.25, "the reversed clip starts at rest"
    reversed_err, own_err = np.mean(_warp_errors(meta)), np.mean(_warp_errors(plausible))
    assert reversed_err < 1.5 * own_err + 1.0, (reversed_err, own_err)
    assert reversed_err < 0.6 * np.mean(_warp_errors(meta, -1.0))


def test_metadata_sees_variants_as_their_family(roots) -> None:
    pairs, _ = roots
    rows = build_rows(pairs, (0.8, 0.1, 0.1), set(), 0, set())
    assert len(rows) == 2 + len(KINDS) * 2 - 1
    for row in rows:
        name = row["video"].split("/")[0]
        assert describe_scene(pairs, name)[0] == name.split("_00001")[0]


def test_unknown_kind_rejected() -> None:
    with pytest.raises(ValueError, match="unknown violation"):
        Violation("gravity_sideways")


def test_variants_reuse_the_accepted_attempt(tmp_path: Path, monkeypatch) -> None:
    """A plausible take accepted after retries: its variants are simulated with that attempt."""
    monkeypatch.setattr(generate, "frame_moves", lambda motion: False)  # every attempt is 'low motion'
    cfg = GenConfig(width=32, height=32, frames=6, max_attempts=2)
    statuses = generate_pair(tmp_path, SceneJob("projectile", 3), cfg, ("gravity_up",))
    assert statuses == {"projectile_00003": "low-motion", "projectile_00003_gravity_up": "written"}
    leaf, variant = tmp_path / "projectile_00003" / LEAF, tmp_path / "projectile_00003_gravity_up" / LEAF
    assert json.loads((variant / "scene.json").read_text())["attempt"] == 1
    assert (variant / "rgb/step_0000.png").read_bytes() == (leaf / "rgb/step_0000.png").read_bytes()
