"""The Physics-IQ score on hand-computed cases: aggregation, official rounding, take 2, no motion, bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from heads import iq_score
from heads.video_metrics import motion_masks, physics_iq_metrics


def _record(scene, family="a", **values) -> dict:
    names = ("spatiotemporal_iou", "spatial_iou", "weighted_spatial_iou", "mse")
    model, variance = values["model"], values["variance"]
    return {"scene": scene, "family": family, **dict(zip(names, model)),
            **{f"variance_{n}": v for n, v in zip(names, variance)}}


def test_hand_computed_score():
    # (0.25/0.5 + 0.4/0.8 + 0.2/0.4) / 3 - (0.03 - 0.01) = 0.48
    r = _record("s", model=(0.25, 0.4, 0.2, 0.03), variance=(0.5, 0.8, 0.4, 0.01))
    assert iq_score.score([r]) == 48.0
    assert iq_score.score([_record("s", model=(0.5, 0.8, 0.4, 0.01), variance=(0.5, 0.8, 0.4, 0.01))]) == 100.0
    assert iq_score.score([_record("s", model=(0.0, 0.0, 0.0, 0.5), variance=(0.5, 0.8, 0.4, 0.01))]) == 0.0  # clip
    assert iq_score.score([_record("s", model=(0.9, 0.9, 0.9, 0.0), variance=(0.5, 0.8, 0.4, 0.01))]) == 100.0


def test_score_divides_dataset_means_not_per_video_ratios():
    # Video 1: model ST 0.1 / variance 0.1; video 2: 0.5 / 0.9. Ratio of means 0.3/0.5 = 0.6;
    # the mean of the ratios would be (1 + 0.556) / 2 = 0.778. S and WS behave like ST; MSE equal.
    a = _record("1", model=(0.1, 0.1, 0.1, 0.0), variance=(0.1, 0.1, 0.1, 0.0))
    b = _record("2", model=(0.5, 0.5, 0.5, 0.0), variance=(0.9, 0.9, 0.9, 0.0))
    assert iq_score.score([a, b]) == 60.0


def test_official_rounding_of_the_variance_and_the_score():
    r = _record("s", model=(0.03, 0.03, 0.03, 0.02), variance=(0.123456, 0.123456, 0.123456, 0.012345))
    rounded = 100 * ((0.03 / 0.1235 + 0.03 / 0.12346 + 0.03 / 0.1235) / 3 - (0.02 - 0.0123))
    raw = 100 * ((0.03 / 0.123456) - (0.02 - 0.012345))
    assert iq_score.score([r]) == round(rounded, 2)
    assert iq_score.score([r], official_rounding=False) == pytest.approx(raw, abs=1e-9)
    assert round(rounded, 2) != round(raw, 2)


def _clip(shift: int, t: int = 10, size: int = 48) -> np.ndarray:
    """A bright square moving right 2 px per frame on a dark textured floor, starting ``shift`` px in."""
    rng = np.random.default_rng(0)
    floor = rng.integers(20, 40, (size, size, 3)).astype(np.uint8)
    video = np.repeat(floor[None], t, axis=0)
    for k in range(t):
        x = 6 + shift + 2 * k
        video[k, 18:30, x:x + 10] = 230
    return video


def test_a_prediction_equal_to_take2_scores_100():
    take1, take2 = _clip(0), _clip(1)
    m = physics_iq_metrics(take2, take1, gt_video_take2=take2, downsample=1)
    assert iq_score.score([{"scene": "s", **m}], official_rounding=False) == pytest.approx(100.0)
    assert iq_score.score([{"scene": "s", **m}]) >= 99.99


def test_a_prediction_without_motion_scores_what_the_formula_says():
    take1, take2 = _clip(0), _clip(1)
    still = np.repeat(take1[:1], len(take1), axis=0)
    m = physics_iq_metrics(still, take1, gt_video_take2=take2, downsample=1)
    gt_moves = motion_masks(take1).any(axis=(1, 2))
    # No predicted motion: IoU 1 on frames where take 1 does not move either, 0 elsewhere; the
    # spatial and weighted spatial IoUs are 0; MSE is the plain pixel error of the frozen frame.
    st = float(np.mean(~gt_moves))
    mse = float(np.mean(((still.astype(float) - take1) / 255.0) ** 2))
    assert (m["spatiotemporal_iou"], m["spatial_iou"], m["weighted_spatial_iou"]) == (pytest.approx(st), 0.0, 0.0)
    assert m["mse"] == pytest.approx(mse)
    expected = 100 * ((st / m["variance_spatiotemporal_iou"]) / 3 - (mse - m["variance_mse"]))
    assert 0 < expected < 20
    assert iq_score.score([{"scene": "s", **m}], official_rounding=False) == pytest.approx(expected)


def test_bootstrap_keeps_views_together_and_brackets_the_score():
    same = [_record(f"s{i}", model=(0.25, 0.4, 0.2, 0.03), variance=(0.5, 0.8, 0.4, 0.01)) for i in range(4)]
    assert iq_score.bootstrap_interval(same, samples=50) == (48.0, 48.0)
    rng = np.random.default_rng(1)
    per_scene = rng.uniform(0.1, 0.4, (10, 3))
    # 10 scenes of 3 identical views: the views are not independent evidence.
    mixed = [_record(f"s{i // 3}", model=(*per_scene[i // 3], 0.02), variance=(0.5, 0.6, 0.4, 0.01))
             for i in range(30)]
    low, high = iq_score.bootstrap_interval(mixed, samples=400, seed=3)
    assert low < iq_score.score(mixed) < high
    assert (low, high) == iq_score.bootstrap_interval(mixed, samples=400, seed=3)
    # Resampling the 30 videos independently would claim ~sqrt(3) x more precision than 10 scenes hold.
    singles = [{**r, "scene": str(i)} for i, r in enumerate(mixed)]
    s_low, s_high = iq_score.bootstrap_interval(singles, samples=400, seed=3)
    assert (high - low) > 1.4 * (s_high - s_low)


def test_each_family_is_normalised_by_its_own_takes():
    a = [_record("a1", "a", model=(0.2, 0.2, 0.2, 0.0), variance=(0.4, 0.4, 0.4, 0.0))]
    b = [_record("b1", "b", model=(0.2, 0.2, 0.2, 0.0), variance=(0.8, 0.8, 0.8, 0.0))]
    table = iq_score.score_table(a + b, samples=20)
    assert table["per_family"]["a"]["score"] == 50.0
    assert table["per_family"]["b"]["score"] == 25.0
    assert table["all"]["score"] == pytest.approx(100 * 0.2 / 0.6, abs=0.005)
    assert table["all"]["scenes"] == 2 and table["all"]["videos"] == 2


def test_missing_variance_or_zero_variance():
    with pytest.raises(ValueError, match="second take"):
        iq_score.score([{"scene": "s", "spatial_iou": 1.0, "spatiotemporal_iou": 1.0,
                         "weighted_spatial_iou": 1.0, "mse": 0.0}])
    assert math.isnan(iq_score.score([_record("s", model=(0.2, 0.2, 0.2, 0.0), variance=(0.0, 0.4, 0.4, 0.0))]))


def test_evaluation_scores_need_take2_on_every_scene():
    from stages.evaluation import iq

    with_take2 = {"spatiotemporal_iou": 0.25, "spatial_iou": 0.4, "weighted_spatial_iou": 0.2, "mse": 0.03,
                  "variance_spatiotemporal_iou": 0.5, "variance_spatial_iou": 0.8,
                  "variance_weighted_spatial_iou": 0.4, "variance_mse": 0.01}
    scenes = [{"scene": f"s{i}", "family": "f", "group": "held_out_families",
               "models": {"stage1": {"prediction": dict(with_take2)}}} for i in range(3)]
    table = iq.scores(scenes, ["stage1"])
    assert table["models"]["stage1"]["all"]["score"] == 48.0
    assert table["models"]["stage1"]["per_group"]["held_out_families"]["scenes"] == 3
    assert "| all | 48.00 | [48.00, 48.00] | 3 |" in "\n".join(iq.markdown(table))
    del scenes[0]["models"]["stage1"]["prediction"]["variance_mse"]
    assert iq.scores(scenes, ["stage1"]) is None
    assert "Not computed" in iq.markdown(None)[2] and "n/a" in iq.summary_lines(None)[0]
