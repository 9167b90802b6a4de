"""The Physics-IQ score of each evaluated model, normalised by the scenes' second takes.

Scenes generated with ``generate_scenes.py --takes 2`` carry a perturbed re-simulation
(``<scene>/env_0/0/1``). Each rollout is compared with take 1 and take 2 is compared with take 1 on
the same time base; the score (`heads.iq_score`) then turns the four metrics into one percentage,
overall, per scenario family and per group (held-out / seen families), with a bootstrap interval
over scenes. Without take 2 on every evaluated scene there is no physical variance and no score.
"""

from __future__ import annotations

import logging

from heads import iq_score
from heads.video_metrics import METRIC_NAMES

log = logging.getLogger(__name__)

NOTE = ("Physics-IQ score: 100 * [(ST/ST_v + S/S_v + WS/WS_v)/3 - (MSE - MSE_v)], clipped to [0, 100], with _v "
        "the same metrics between take 1 and take 2 of the generated scenes (physical variance), dataset means "
        "as the official calculate_iq_score.py; interval: 95 % bootstrap over scenes. Simulated takes differ "
        "less than real re-recordings, so these scores are not comparable with the public leaderboard.")


def take2_of(dataset):
    """The dataset read from every scene's take 2, or None (logged) when a scene of it lacks take 2."""
    count = len(dataset.scenes)
    missing = [dataset.scenes[i].directory for i in range(count) if not dataset.has_take(i, 2)]
    if missing:
        log.warning("no Physics-IQ score: %d of %d scene(s) have no second take (e.g. %s); generate them with "
                    "generate_scenes.py --takes 2", len(missing), count, missing[0])
        return None
    return dataset.take(2)


def records(scenes: list[dict], model: str) -> list[dict]:
    """One score record per scene: its rollout's metrics against take 1 and take 2 against take 1."""
    out = []
    for s in scenes:
        prediction = s["models"][model]["prediction"]
        if all(f"variance_{m}" in prediction for m in METRIC_NAMES):
            out.append({"scene": s["scene"], "family": s["family"], "group": s["group"], **prediction})
    return out


def scores(scenes: list[dict], models: list[str], seed: int = 0) -> dict | None:
    """metrics.json["physics_iq"]: per model {all, per_family, per_group}, or None without takes."""
    table = {}
    for model in models:
        rows = records(scenes, model)
        if not rows or len(rows) != len(scenes):
            return None
        table[model] = {**iq_score.score_table(rows, "family", seed=seed),
                        "per_group": iq_score.score_table(rows, "group", seed=seed)["per_group"]}
    return {"note": NOTE, "models": table}


def _row(label: str, s: dict) -> str:
    return (f"| {label} | {s['score']:.2f} | [{s['ci_low']:.2f}, {s['ci_high']:.2f}] | {s['scenes']} | "
            + " | ".join(f"{s['metrics'][k]:.4g} / {s['variance'][k]:.4g}" for k in METRIC_NAMES) + " |")


def markdown(physics_iq: dict | None) -> list[str]:
    """The report.md section: one table per model, overall, per group and per family."""
    if not physics_iq:
        return ["## Physics-IQ score", "", "Not computed: the scenes have no second take (generate_scenes.py --takes 2).",
                ""]
    lines = ["## Physics-IQ score", "", physics_iq["note"], ""]
    for model, table in physics_iq["models"].items():
        lines += [f"### {model}", "", "| scenes | score % | 95 % interval | n | " + " | ".join(
            f"{k} (model / take 2)" for k in METRIC_NAMES) + " |", "|" + "---|" * (4 + len(METRIC_NAMES))]
        lines.append(_row("all", table["all"]))
        lines += [_row(f"group {k}", v) for k, v in table["per_group"].items()]
        lines += [_row(f"family {k}", v) for k, v in table["per_family"].items()]
        lines.append("")
    return lines


def summary_lines(physics_iq: dict | None) -> list[str]:
    """What evaluate_physics.py prints: one line per model and group."""
    if not physics_iq:
        return ["Physics-IQ score: n/a (no second takes; generate_scenes.py --takes 2)"]
    lines = ["Physics-IQ score (95 % bootstrap interval over scenes):"]
    for model, table in physics_iq["models"].items():
        for label, s in [("all", table["all"]), *table["per_group"].items()]:
            lines.append(f"  {model:<7} {label:<18} {s['score']:6.2f} %  [{s['ci_low']:.2f}, {s['ci_high']:.2f}]"
                         f"  ({s['scenes']} scene(s))")
    return lines
