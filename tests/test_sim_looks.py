"""Looks and camera placement: every factor varies with the seed, the rendered geometry is the
recorded one at any field of view, yaw and roll, sky has no depth, and physics ignores the look."""

from __future__ import annotations

import numpy as np
import pybullet as p
import pytest

from data.sim.camera import orbit_camera
from data.sim.generate import GenConfig, SceneJob, _build, connect
from data.sim.ground_truth import distance_from_depth_buffer
from data.sim.looks import FOV_LIMITS, LOOK_SETS, draw_look, draw_placement, look_rng
from data.sim.render import render
from data.sim.textures import (
    BODY_DARK,
    TEXTURES,
    body_pattern,
    body_pattern_cells,
    make_texture,
)
from data.sim.world import World


def _looks(n: int = 40) -> list[dict]:
    return [draw_look(look_rng("ball_collide", seed, 0)) for seed in range(n)]


def test_every_look_factor_varies_between_seeds() -> None:
    looks = _looks()
    factors = {
        "set": [lk["set"] for lk in looks],
        "floor texture": [lk["floor"]["texture"] for lk in looks],
        "floor tone": [tuple(lk["floor"]["tones"][0]) for lk in looks],
        "background": [lk["background"]["kind"] for lk in looks],
        "background distance": [lk["background"].get("distance") for lk in looks],
        "light direction": [tuple(lk["light"]["direction"]) for lk in looks],
        "light colour": [tuple(lk["light"]["color"]) for lk in looks],
        "ambient": [lk["light"]["ambient"] for lk in looks],
        "diffuse": [lk["light"]["diffuse"] for lk in looks],
        "specular": [lk["light"]["specular"] for lk in looks],
        "shadows": [lk["light"]["shadows"] for lk in looks],
        "fov": [lk["fov_y_deg"] for lk in looks],
    }
    for name, values in factors.items():
        assert len(set(values)) >= 2, (name, values)
    assert set(factors["set"]) == set(LOOK_SETS)
    assert {"sky", "wall", "plane"} <= set(factors["background"])
    assert len(set(factors["floor texture"])) >= 4
    assert all(FOV_LIMITS[0] <= f <= FOV_LIMITS[1] for f in factors["fov"])
    for lk in looks:
        assert abs(np.linalg.norm(lk["light"]["direction"]) - 1) < 1e-9 and lk["light"]["direction"][2] > 0


def test_camera_placement_varies_and_keeps_the_action_width() -> None:
    rng = np.random.default_rng(0)
    placements = [draw_placement(rng, float(rng.uniform(35, 75)), 45.0, 2.5) for _ in range(40)]
    for field in ("yaw_deg", "pitch_deg", "roll_deg", "distance", "fov_y_deg"):
        values = [getattr(pl, field) for pl in placements]
        assert np.ptp(values) > 0.2 * max(abs(v) for v in values), field
    for pl in placements:  # the half-width seen at the target stays within 10 % of the nominal one
        width = pl.distance * np.tan(np.radians(pl.fov_y_deg) / 2)
        assert width == pytest.approx(2.5 * np.tan(np.radians(22.5)), rel=0.11)


def test_a_look_set_can_be_forced_and_unknown_ones_are_refused() -> None:
    assert {draw_look(look_rng("bounce", s, 0), ("workshop",))["set"] for s in range(5)} == {"workshop"}
    with pytest.raises(ValueError, match="known"):
        draw_look(look_rng("bounce", 0, 0), ("no_such_look",))


@pytest.mark.parametrize("kind", sorted(TEXTURES))
def test_textures_are_deterministic_and_textured(kind: str) -> None:
    tones = np.array([[0.8, 0.6, 0.4], [0.3, 0.2, 0.1]])
    a = make_texture(kind, np.random.default_rng(3), 128, tones)
    b = make_texture(kind, np.random.default_rng(3), 128, tones)
    assert a.shape == (128, 128, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert a.std() > 8  # structure for flow to lock on to, not a flat colour


RADIUS = 0.04


def _world_point(camera, u: float, v: float, depth: float) -> np.ndarray:
    """The world point the recorded camera sees at pixel (u, v) at planar depth ``depth``."""
    view = camera.view_matrix()
    cam = np.array([(u - camera.cx) / camera.fx * depth, -(v - camera.cy) / camera.fy * depth, -depth])
    return view[:3, :3].T @ (cam - view[:3, 3])


@pytest.mark.parametrize("fov, yaw, pitch, roll", [(35.0, 25.0, -6.0, 4.0), (75.0, -30.0, 8.0, -4.0)])
def test_rendered_geometry_is_the_recorded_camera(fov: float, yaw: float, pitch: float, roll: float) -> None:
    """Small spheres placed where the recorded camera sees given pixels (near the corners and the
    centre) render there and at the distance it gives, under a wide or narrow, yawed, pitched and
    rolled camera.  Points far from the centre make a focal length off by 2 % miss by > 1 px
    (checked: the test fails with fy scaled by 1.02 or 0.98)."""
    camera = orbit_camera(240, 180, (0.0, -2.4, 0.95), (0.0, 0.0, 0.35), fov, 2.6, yaw, pitch, roll)
    pixels = [(40.0, 35.0), (200.0, 150.0), (120.0, 90.0), (205.0, 30.0)]
    points = [_world_point(camera, u, v, 2.2) for u, v in pixels]
    client = connect()
    try:
        bodies = [client.createMultiBody(0, -1, client.createVisualShape(p.GEOM_SPHERE, radius=RADIUS, rgbaColor=[1, 0, 0, 1]),
                                         point.tolist()) for point in points]
        raw = render(client, camera, None, shadows=False)
    finally:
        client.disconnect()
    distance = distance_from_depth_buffer(raw.depth_buffer, raw.segmentation >= 0, camera, np.inf)
    for body, point, (u, v) in zip(bodies, points, pixels):
        rows, cols = np.nonzero(raw.segmentation == body)
        assert rows.size > 4
        assert abs(cols.mean() + 0.5 - u) < 1.0 and abs(rows.mean() + 0.5 - v) < 1.0, (u, v, cols.mean(), rows.mean())
        true = np.linalg.norm(point - np.asarray(camera.position)) - RADIUS
        assert distance[rows, cols].min() == pytest.approx(true, rel=0.01)


def _scene_under(look: str, seed: int = 2):
    client = connect()
    try:
        world, camera, _, drawn, _ = _build(client, SceneJob("projectile", seed),
                                                          GenConfig(width=64, height=48, looks=(look,)), 0)
        raw = render(client, camera, drawn, shadows=False)
        states = [client.getBasePositionAndOrientation(o.body_id)[0] for o in world.objects]
        for _ in range(60):
            client.stepSimulation()
        states += [client.getBasePositionAndOrientation(o.body_id)[0] for o in world.objects]
        world.close()
        return raw, drawn, np.asarray(states)
    finally:
        client.disconnect()


def test_sky_pixels_have_no_depth_and_physics_ignores_the_look() -> None:
    sky, sky_look, sky_motion = _scene_under("outdoor")
    wall, _, wall_motion = _scene_under("tiled_hall")
    assert sky_look["background"]["kind"] == "sky"
    empty = sky.segmentation < 0
    assert empty[: sky.segmentation.shape[0] // 4].mean() > 0.5  # the upper image is open sky
    assert np.all(np.isinf(distance_from_depth_buffer(sky.depth_buffer, ~empty, _camera_of(sky_look), np.inf)[empty]))
    assert sky.rgb[empty].std(axis=0).max() > 1  # painted as a gradient, not the renderer's flat clear colour
    assert (wall.segmentation < 0).mean() < empty.mean()
    np.testing.assert_allclose(sky_motion, wall_motion, atol=1e-9)


def _camera_of(look: dict):
    return orbit_camera(64, 48, (0.0, -2.4, 0.95), (0.0, 0.0, 0.35), look["fov_y_deg"], 2.5)


def test_the_prompt_names_the_looks_floor() -> None:
    from data.sim.prompts import FLOOR_WORDS, prompt_from_scene

    assert set(FLOOR_WORDS) == set(TEXTURES)
    ball = [{"name": "ball", "shape": "sphere", "color_name": "red"}]
    assert "wooden floor" in prompt_from_scene({"family": "bounce", "objects": ball, "look": {"floor": {"texture": "planks"}}})
    assert "checkered floor" in prompt_from_scene({"family": "bounce", "objects": ball})


@pytest.mark.parametrize("kind", ["stripes", "checker", "dots"])
def test_body_patterns_are_two_level_greys(kind: str) -> None:
    a = body_pattern(kind, 6)
    assert np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2])  # grey: keeps the colour
    assert np.unique(a).tolist() == [int(BODY_DARK * 255), 255]
    assert 0.15 < (a == 255).mean() < 0.85
    with pytest.raises(ValueError, match="known"):
        body_pattern("plaid", 6)


def test_pattern_cells_follow_the_apparent_size() -> None:
    """Visible cells stay 6 px wide or more, so small bodies stay plain instead of flickering."""
    assert [body_pattern_cells(r) for r in (2.0, 5.9, 6.0, 9.0, 12.0, 40.0)] == [0, 0, 4, 6, 8, 10]


def _body_pixels(kind: str | None) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """RGB of a moving red ball and of a static box, rendered after ``texture_bodies(kind)``,
    and the cells each moving body got."""
    client = connect()
    world = World(client, np.random.default_rng(0), texture_seed=3)
    try:
        ball = world.spawn_ball("ball", 0.3, [-0.35, 0.0, 0.3], "red", mass=1.0)
        world.spawn_ball("speck", 0.02, [0.0, 0.3, 0.3], "green", mass=1.0)
        box = world.spawn_box("box", [0.2, 0.2, 0.2], [0.4, 0.0, 0.2], "blue", mass=0.0)
        camera = orbit_camera(96, 96, (0.0, -2.0, 0.6), (0.0, 0.0, 0.3), 45.0, 2.0)
        cells = world.texture_bodies(kind, camera)
        raw = render(client, camera, None, shadows=False)
    finally:
        world.close()
        client.disconnect()
    ball_rgb = raw.rgb[raw.segmentation == ball.body_id].astype(float)
    return ball_rgb, raw.rgb[raw.segmentation == box.body_id], cells


@pytest.mark.parametrize("kind", ["stripes", "checker", "dots"])
def test_moving_bodies_wear_the_pattern_in_their_own_colour(kind: str) -> None:
    plain_ball, plain_box, none = _body_pixels(None)
    ball, box, cells = _body_pixels(kind)
    assert none == {} and cells["ball"] >= 4 and cells["speck"] == 0  # the speck is ~1 px: plain
    assert ball.std(axis=0)[0] > plain_ball.std(axis=0)[0] + 15  # light and dark patches, not shading alone
    assert np.all(ball.mean(axis=0)[0] > 1.5 * ball.mean(axis=0)[1:])  # still a red ball
    assert np.array_equal(box, plain_box)  # static bodies stay plain


def test_generated_scenes_paint_the_drawn_body_pattern(monkeypatch: pytest.MonkeyPatch) -> None:
    """_build applies the look's ``object_texture``: without the call the same scene renders
    differently on its moving bodies only."""
    seed = next(s for s in range(50) if draw_look(look_rng("ball_collide", s, 0), ("studio",))["object_texture"])

    def frame() -> tuple[np.ndarray, np.ndarray]:
        client = connect()
        try:
            world, camera, _, look, _ = _build(client, SceneJob("ball_collide", seed),
                                               GenConfig(width=96, height=96, looks=("studio",)), 0)
            raw = render(client, camera, look, shadows=False)
            moving = np.isin(raw.segmentation, [o.body_id for o in world.objects if not o.static])
            world.close()
            return raw.rgb, moving
        finally:
            client.disconnect()

    painted, moving = frame()
    monkeypatch.setattr(World, "texture_bodies", lambda self, kind, camera: {})
    plain, _ = frame()
    assert moving.sum() > 20
    assert np.abs(painted[moving].astype(int) - plain[moving]).max() > 40
    assert np.array_equal(painted[~moving], plain[~moving])
