"""The Physics-IQ score of a set of videos, its breakdown per family and a bootstrap interval over scenes.

The official score (github.com/google-deepmind/physics-IQ-benchmark, `code/calculate_iq_score.py`,
commit e457754f) is computed from dataset means, not per video:
  ST, S, WS, MSE          = means over every video (scenario x view) of prediction-vs-take-1 metrics
  ST_v, S_v, WS_v, MSE_v  = means of the same metrics between take 1 and take 2 (physical variance),
                            rounded to 4 decimals (S_v: 5)
  score = 100 * [ (ST / ST_v + S / S_v + WS / WS_v) / 3 - (MSE - MSE_v) ], clipped to [0, 100],
          rounded to 2 decimals.
(The official CSV parser also rounds each per-frame ST and MSE value to 4 decimals before averaging;
records here hold per-video means, so that last rounding, at most 5e-5 per value, is not mirrored.)
A prediction exactly as far from take 1 as take 2 is scores 100. The formula is
`heads.video_metrics.physics_iq_score`; this module aggregates and rounds.

Records are dicts with the four metrics, their `variance_<name>` (from
`heads.video_metrics.physics_iq_metrics(..., gt_video_take2=...)`), a `scene` id (all views of a
scenario share it) and optionally a `family`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from heads.video_metrics import METRIC_NAMES, physics_iq_score

VARIANCE_DECIMALS = {"spatiotemporal_iou": 4, "spatial_iou": 5, "weighted_spatial_iou": 4, "mse": 4}
"""Rounding of the physical-variance means in the official score (`round(..., 4)`, spatial 5)."""
SCORE_DECIMALS = 2
BOOTSTRAP_SAMPLES = 1000
CI_LEVEL = 0.95
IOU_NAMES = ("spatiotemporal_iou", "spatial_iou", "weighted_spatial_iou")


def _check(records: Sequence[Mapping]) -> None:
    if not records:
        raise ValueError("no videos to score")
    missing = [k for k in (*METRIC_NAMES, *(f"variance_{m}" for m in METRIC_NAMES)) if k not in records[0]]
    if missing:
        raise ValueError(f"records lack {missing}: the physical variance needs a second take of every video")


def dataset_means(records: Sequence[Mapping]) -> tuple[dict[str, float], dict[str, float]]:
    """(model means, physical-variance means) over every video, equal weight per video."""
    _check(records)
    model = {m: float(np.mean([r[m] for r in records])) for m in METRIC_NAMES}
    variance = {m: float(np.mean([r[f"variance_{m}"] for r in records])) for m in METRIC_NAMES}
    return model, variance


def score(records: Sequence[Mapping], official_rounding: bool = True) -> float:
    """The Physics-IQ score (percent) of ``records``; NaN when a variance IoU mean is 0 (undefined)."""
    model, variance = dataset_means(records)
    if official_rounding:
        variance = {m: round(v, VARIANCE_DECIMALS[m]) for m, v in variance.items()}
    if min(variance[m] for m in IOU_NAMES) <= 0:
        return math.nan
    value = physics_iq_score(model, variance)
    return round(value, SCORE_DECIMALS) if official_rounding else value


def bootstrap_interval(records: Sequence[Mapping], samples: int = BOOTSTRAP_SAMPLES, level: float = CI_LEVEL,
                       seed: int = 0, official_rounding: bool = True) -> tuple[float, float]:
    """Percentile interval of the score over scenes drawn with replacement (a scene's views stay
    together; the physical variance is recomputed from each draw, as the score would be on that set)."""
    by_scene: dict[str, list[Mapping]] = {}
    for r in records:
        by_scene.setdefault(str(r["scene"]), []).append(r)
    scenes = sorted(by_scene)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(samples):
        drawn = rng.integers(len(scenes), size=len(scenes))
        values.append(score([r for i in drawn for r in by_scene[scenes[i]]], official_rounding))
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def summary(records: Sequence[Mapping], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> dict:
    """Score, 95 % interval, scene and video counts, and the means it came from."""
    model, variance = dataset_means(records)
    low, high = bootstrap_interval(records, samples, seed=seed)
    return {"score": score(records), "ci_low": low, "ci_high": high, "ci_level": CI_LEVEL,
            "scenes": len({str(r["scene"]) for r in records}), "videos": len(records),
            "metrics": model, "variance": variance}


def score_table(records: Sequence[Mapping], by: str = "family", samples: int = BOOTSTRAP_SAMPLES,
                seed: int = 0) -> dict:
    """{"all": summary, "per_<by>": {value: summary}}; each group is normalised by its own takes."""
    groups: dict[str, list[Mapping]] = {}
    for r in records:
        groups.setdefault(str(r.get(by, "")), []).append(r)
    return {"all": summary(records, samples, seed),
            f"per_{by}": {k: summary(v, samples, seed) for k, v in sorted(groups.items())}}
