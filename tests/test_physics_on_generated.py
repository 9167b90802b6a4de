"""Physics through the whole data path: a PyBullet ball in free fall, loaded by the data layer
(intrinsics, gravity direction and dt from scene.json), lifted to 3D by heads.physics, gives
g = 9.81 m/s^2 and a small free-fall residual; a wrong dt or a wrong 'down' does not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from data.dataset import DataConfig, SimPhysicsDataset
from data.sampling import WindowSpec
from heads.physics import fitted_gravity, free_fall_prior, kinematics, moving_pixels

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def falling_ball(tmp_path_factory):
    out = tmp_path_factory.mktemp("falling")
    root, csv = out / "scenes", out / "meta.csv"
    subprocess.run([sys.executable, str(REPO / "scripts/generate_scenes.py"), "--out", str(root), "--preset", "demo",
                    "--families", "ball_on_block", "--scenes-per-family", "1", "--size", "192", "192",
                    "--frames", "20", "--workers", "1", "--log-level", "WARNING"], check=True)
    subprocess.run([sys.executable, str(REPO / "scripts/make_metadata.py"), str(root), "--out", str(csv),
                    "--split", "1", "0", "0"], check=True)
    scene = next(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    meta = json.loads((scene / "env_0/0/0/scene.json").read_text())
    ball = next(o["body_id"] for o in meta["objects"] if o["name"] == "ball")
    first_contact = next(t for t, pairs in enumerate(meta["contacts"]) if any(ball in pair for pair in pairs))
    return root, csv, first_contact


def _kinematics(root, csv, frames: int, dt_scale: float = 1.0):
    dataset = SimPhysicsDataset(DataConfig(root=str(root), metadata=str(csv), height=192, width=192,
                                           window=WindowSpec(num_frames=frames, stride=1)))
    s = {k: (v.unsqueeze(0) if isinstance(v, torch.Tensor) else v) for k, v in dataset[0].items()}
    kin = kinematics(s["depth"], s["depth_valid"], s["flow"], s["flow_valid"], s["intrinsics"], s["dt"] * dt_scale)
    return kin, s["down_cam"]


def test_generated_free_fall_has_earth_gravity(falling_ball):
    root, csv, first_contact = falling_ball
    assert first_contact >= 6, "the ball must fall for a few frames before it lands"
    kin, down = _kinematics(root, csv, frames=first_contact)  # frames before the first contact
    moving = moving_pixels(kin)
    g, n = fitted_gravity(kin, down, moving)
    assert int(n) > 50
    assert float(g) == pytest.approx(9.81, rel=0.1)
    residual, _ = free_fall_prior(kin, down, moving_mask=moving)
    level, _ = free_fall_prior(kin, torch.tensor([[0.0, 1.0, 0.0]]), moving_mask=moving)
    slow, _ = _kinematics(root, csv, frames=first_contact, dt_scale=2.0)
    wrong_dt, _ = free_fall_prior(slow, down, moving_mask=moving_pixels(slow))
    assert float(residual) < 2.0, "exact simulated free fall must nearly satisfy the prior"
    assert float(wrong_dt) > 3 * float(residual) and float(level) > 1.5 * float(residual)
    assert np.isfinite(float(residual))
