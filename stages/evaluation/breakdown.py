"""Perception pooled per scenario family and per look set (metrics.json "breakdown", report.md).

Heads that learn a generator's look rather than geometry and motion fail on unseen looks even
when the family is familiar; pooling per family alone would hide that. A scene's look set is
`data.scene_meta.scene_look` of its scene.json ("unknown" for scenes that name none). Each pool
is pixel-weighted over its scenes, like every other pooled perception number.
"""

from __future__ import annotations

from heads.metrics import (
    CLASSICAL_FLOW_LABELS,
    HEAD_METRIC_ROWS,
    MetricAccumulator,
    classical_flow_key,
)

BREAKDOWNS = ("family", "look")
"""Scene fields the perception is pooled by, in report order."""
BREAKDOWN_COLUMNS = (
    ("AbsRel metric", "depth_abs_rel"),
    ("AbsRel scale-aligned", "depth_scale_abs_rel"),
    ("AbsRel affine-aligned", "depth_affine_abs_rel"),
    ("EPE moving (px)", "flow_epe_moving"),
    ("EPE all (px)", "flow_epe"),
)
"""(title, head key) of the report's breakdown tables; each cell also shows the row's baselines."""
_BASELINE_OF = {ours: base for _, ours, base, _ in HEAD_METRIC_ROWS}


def pool_keys(scene: dict) -> list[tuple[str, str]]:
    """The (breakdown, name) pools a scene record adds to, e.g. ('family', 'ramp_slide')."""
    return [(kind, scene[kind]) for kind in BREAKDOWNS]


def breakdown(scenes: list[dict], models: list[str],
              accumulators: dict[str, dict[tuple[str, str], MetricAccumulator]]) -> dict:
    """metrics.json["breakdown"]: {kind: {name: {"scenes": [...], "perception": {model: metrics}}}},
    names in order of first appearance; ``accumulators[model][(kind, name)]`` pooled that name's scenes."""
    out: dict = {}
    for kind in BREAKDOWNS:
        names = list(dict.fromkeys(s[kind] for s in scenes))
        out[kind] = {name: {"scenes": [s["scene"] for s in scenes if s[kind] == name],
                            "perception": {m: accumulators[m][(kind, name)].compute() for m in models}}
                     for name in names}
    return out


def cell_values(metrics: dict, head_key: str) -> list:
    """Heads, then baseline(s) of one column: median depth (same alignment), or zero, DIS, Farneback flow."""
    keys = [head_key, _BASELINE_OF[head_key]]
    keys += [classical_flow_key(m, head_key) for m in CLASSICAL_FLOW_LABELS if classical_flow_key(m, head_key)]
    return [metrics.get(k) for k in keys]


def markdown(payload: dict, fmt) -> list[str]:
    """report.md sections: one table per breakdown, a row per (name, model); ``fmt`` formats a value."""
    lines = []
    for kind in BREAKDOWNS:
        pools = payload["breakdown"][kind]
        lines += [f"## Perception per {kind}", "",
                  "Cells: heads / per-clip median depth through the same alignment (AbsRel); heads / zero flow / "
                  + " / ".join(CLASSICAL_FLOW_LABELS.values()) + " (EPE; a missing baseline shows as n/a).", "",
                  f"| {kind} | scenes | model | " + " | ".join(t for t, _ in BREAKDOWN_COLUMNS) + " |",
                  "|---|---|---|" + "---|" * len(BREAKDOWN_COLUMNS)]
        for name, pool in pools.items():
            for model, metrics in pool["perception"].items():
                cells = [" / ".join(fmt(v) for v in cell_values(metrics, key)) for _, key in BREAKDOWN_COLUMNS]
                lines.append(f"| {name} | {len(pool['scenes'])} | {model} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines
