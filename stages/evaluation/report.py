"""report.md and its plots (matplotlib, Agg): per-scene bars, a metric-table figure, training curves."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from heads.metrics import CLASSICAL_FLOW_LABELS, HEAD_METRIC_ROWS, classical_flow_key
from stages.evaluation import breakdown, gallery, iq
from stages.evaluation.verify import markdown as verify_markdown

log = logging.getLogger(__name__)

# (title, getter(scene model record) -> value, unit) of the per-scene bar charts.
SCENE_BARS = (
    ("depth AbsRel (heads on GT)", lambda r: r["perception"].get("depth_abs_rel"), ""),
    ("flow EPE moving (heads on GT)", lambda r: r["perception"].get("flow_epe_moving"), "px"),
    ("spatiotemporal IoU (rollout vs GT)", lambda r: r["prediction"]["spatiotemporal_iou"], ""),
    ("fitted g (heads on GT)", lambda r: r["physics_heads"]["g_fit"], "m/s^2"),
    ("fitted g (heads on rollout)", lambda r: r["physics_generated"]["g_fit"], "m/s^2"),
    ("rest drift (heads on rollout)", lambda r: r["physics_generated"]["rest_drift"], "m/s"),
)
GROUP_LABELS = {"held_out_families": "held-out families", "seen_families": "seen families"}
"""Short names of metrics.json["groups"] keys in tables."""
PHYSICS_ROWS = (("fitted g", "g_fit", "m/s^2"), ("|g_fit - g| / g", "g_rel_error", ""),
                ("free-fall residual", "free_fall_residual", "m/s^2"), ("free-fall pixels", "free_fall_px", ""),
                ("rest drift", "rest_drift", "m/s"))


def fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _nan(value) -> float:
    return math.nan if value is None else float(value)


def scene_bars(payload: dict, path: Path) -> None:
    """One panel per SCENE_BARS metric, bars per scene and model (scene g as a line on g panels)."""
    scenes = [s["scene"] for s in payload["scenes"]]
    models = payload["models"]
    fig, axes = plt.subplots(len(SCENE_BARS), 1, figsize=(max(6, 1.2 * len(scenes) * len(models)), 2.6 * len(SCENE_BARS)))
    width = 0.8 / len(models)
    for ax, (title, get, unit) in zip(axes, SCENE_BARS):
        for m, model in enumerate(models):
            values = [_nan(get(s["models"][model])) for s in payload["scenes"]]
            ax.bar([i + m * width for i in range(len(scenes))], values, width, label=model)
        if "fitted g" in title:
            ax.axhline(payload["scenes"][0]["g_scene"], color="k", ls="--", lw=1, label="scene g")
        ax.set_title(title + (f" [{unit}]" if unit else ""), fontsize=9)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(scenes))], scenes, fontsize=7, rotation=15)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


VALUE_COLUMNS = ["heads", "baseline", *CLASSICAL_FLOW_LABELS.values()]
"""Value columns of the perception tables: the classical flow methods fill flow rows only."""


def _model_rows(overall: dict, models: list[str]) -> list[list[str]]:
    """[model, metric, heads, baseline, DIS, Farneback] rows of one pooled group: perception, then
    rollout metrics."""
    rows = []
    for model in models:
        o, blank = overall[model], [""] * len(CLASSICAL_FLOW_LABELS)
        for label, ours, base, _ in HEAD_METRIC_ROWS:
            classical = [fmt(o["perception"].get(classical_flow_key(m, ours))) if classical_flow_key(m, ours) else ""
                         for m in CLASSICAL_FLOW_LABELS]
            rows.append([model, label, fmt(o["perception"].get(ours)), fmt(o["perception"].get(base)), *classical])
        for key in ("spatial_iou", "spatiotemporal_iou", "weighted_spatial_iou", "mse"):
            rows.append([model, f"rollout {key}", fmt(o["prediction"][key]), "", *blank])
    return rows


def _table_rows(payload: dict) -> list[list[str]]:
    """[scenes, model, metric, heads, baseline]: each family group apart, never pooled together."""
    return [[GROUP_LABELS[key], *row] for key, group in payload["groups"].items()
            for row in _model_rows(group["overall"], payload["models"])]


def table_figure(payload: dict, path: Path) -> None:
    rows = _table_rows(payload)
    fig, ax = plt.subplots(figsize=(11, 0.3 * len(rows) + 0.8))
    ax.axis("off")
    table = ax.table(cellText=rows, colLabels=["scenes", "model", "metric", *VALUE_COLUMNS], loc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


HEAD_CURVES = {f"val/{ours}" for _, ours, _, _ in HEAD_METRIC_ROWS}
"""Validation keys plotted: the heads' own metrics (the baselines are flat lines that crowd the plot)."""


def training_curves(stage_dirs: dict[str, Path], path: Path) -> bool:
    """Loss and validation curves from <stage dir>/../metrics.jsonl; False when no stage has one."""
    runs = {}
    for model, directory in stage_dirs.items():
        jsonl = directory.parent / "metrics.jsonl"
        if jsonl.is_file():
            runs[model] = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    if not runs:
        return False
    fig, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 3.5), squeeze=False)
    for ax, (model, records) in zip(axes[0], runs.items()):
        keys = sorted({k for r in records for k in r
                       if (k == "loss" or k.startswith("loss_") or k in HEAD_CURVES) and isinstance(r[k], (int, float))})
        for key in keys:
            points = [(r["step"], r[key]) for r in records if key in r and r[key] is not None]
            if points:
                ax.plot(*zip(*points), label=key, marker="." if len(points) < 20 else None)
        ax.set_xlabel("step")
        ax.set_title(f"{model} training ({directory_name(stage_dirs[model])})", fontsize=9)
        if ax.lines:
            ax.set_yscale("log")
            ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def directory_name(path: Path) -> str:
    return str(path.parent.name or path)


def cell(text: str) -> str:
    """Text safe inside a markdown table cell (rules like |g_fit - g| / g contain pipes)."""
    return str(text).replace("|", "\\|")


PERCEPTION_NOTE = (
    "Baselines: zero flow; per-clip median depth, aligned like the heads. Scale-aligned: the prediction times "
    "median(gt) / median(pred) per clip; affine-aligned: least-squares scale and shift of inverse depth per clip. "
    "The median baseline is constant per clip: scale alignment leaves it unchanged and affine alignment turns it "
    "into the clip's harmonic-mean depth, so its aligned rows are the best a constant can do, not a fitted model. "
    "DIS (OpenCV preset MEDIUM) and Farneback: classical flow between the same frame pairs, in the direction of "
    "the target, scored on the same pixels. Rollout metrics are Physics-IQ's (higher IoU, lower MSE is better) "
    "between the generated continuation and the ground-truth window.")


def _group_section(key: str, group: dict, payload: dict) -> list[str]:
    """Pass/fail, perception, physics and coherence of one family group (metrics.json["groups"])."""
    lines = [f"## {group['holds'][0].upper()}{group['holds'][1:]}: {len(group['scenes'])} scene(s) (`{key}`)", "",
             "### Pass / fail (heuristics)", "", "| model | check | value | rule | result |", "|---|---|---|---|---|"]
    for model, checks in group["verdicts"].items():
        lines += [f"| {model} | {name} | {fmt(v['value'])} | {cell(v['rule'])} | {'PASS' if v['pass'] else 'FAIL'} |"
                  for name, v in checks.items()]
    lines += ["", "### Perception on ground-truth windows (pixel-weighted over scenes)", "",
              "| model | metric | " + " | ".join(VALUE_COLUMNS) + " |", "|---|---|" + "---|" * len(VALUE_COLUMNS)]
    lines += [f"| {' | '.join(row)} |" for row in _model_rows(group["overall"], payload["models"])]
    lines += ["", PERCEPTION_NOTE, "",
              "### Physics residuals (depth + flow lifted to 3D)", "",
              "| source | " + " | ".join(cell(f"{label}{f' ({u})' if u else ''}") for label, _, u in PHYSICS_ROWS) + " |",
              "|---|" + "---|" * len(PHYSICS_ROWS)]
    overall = group["overall"]
    sources = [("ground truth", overall["gt"]["physics"])]
    for model in payload["models"]:
        sources += [(f"{model} heads on GT", overall[model]["physics_heads"]),
                    (f"{model} heads on rollout", overall[model]["physics_generated"])]
    lines += [f"| {name} | " + " | ".join(fmt(p.get(k)) for _, k, _ in PHYSICS_ROWS) + " |" for name, p in sources]
    c = payload["constants"]
    lines += ["", f"Temporal coherence: share of frames whose flow-warp L1 is <= {c['warp_l1_max']} "
              f"(GT flow on GT frames: {fmt(overall['gt']['coherence']['coherent_frames'])}; "
              + "; ".join(f"{m} heads on rollout: {fmt(overall[m]['coherence_generated']['coherent_frames'])}"
                          for m in payload["models"]) + ").", ""]
    return lines


IQ_KEYS = ("spatial_iou", "spatiotemporal_iou", "weighted_spatial_iou", "mse")


def _best_of_section(payload: dict) -> list[str]:
    """With --best-of N: the chosen rollouts' Physics-IQ metrics and fitted g beside the first samples'."""
    rows = [(m, o["best_of"], o) for m, o in payload["overall"].items() if m != "gt" and o.get("best_of")]
    if not rows:
        return []
    b = rows[0][1]
    lines = [f"## Best of {b['n']} rollouts (verifier `{b['verifier']}`)", "",
             "| model | sample | " + " | ".join(IQ_KEYS) + " | g_fit rollout |", "|---|---|" + "---|" * (len(IQ_KEYS) + 1)]
    for model, best, overall in rows:
        lines.append(f"| {model} | first | " + " | ".join(fmt(best["prediction_first"][k]) for k in IQ_KEYS)
                     + f" | {fmt(best['physics_first'].get('g_fit'))} |")
        lines.append(f"| {model} | chosen | " + " | ".join(fmt(overall["prediction"][k]) for k in IQ_KEYS)
                     + f" | {fmt(overall['physics_generated'].get('g_fit'))} |")
        lines.append(f"| {model} | chosen is not the first | {fmt(best['chosen_not_first'])} |" + " |" * len(IQ_KEYS))
    return lines + ["", "Higher IoU and lower MSE are better; g_fit pooled over the scenes' free-fall pixels.", ""]


def markdown(payload: dict, curves: bool) -> str:
    a, g = payload["args"], payload["geometry"]
    lines = [f"# Physics evaluation: split `{a['split']}`, {len(payload['scenes'])} scene(s)", "",
             *[f"> {note}" for note in payload["notes"]], "",
             (f"Backbone `{payload['backbone']['preset']}` ({payload['backbone']['model_dir'] or 'random weights'}), "
              f"device {payload['device']}; windows {g['frames']} frames at stride {g['stride']}, "
              f"{g['size']}x{g['size']}; rollouts {a['steps']} steps, cfg {a['cfg_scale']}, seeds {a['seed']}+scene "
              "index."), ""]
    for key, group in payload["groups"].items():
        lines += _group_section(key, group, payload)
    lines += iq.markdown(payload.get("physics_iq"))
    lines += breakdown.markdown(payload, fmt)
    lines += _best_of_section(payload)
    for key in ("verify", "verify_stage2"):
        if payload.get(key):
            lines += [verify_markdown(payload[key]), f"Details: {key}/verify.json, {key}/verify_by_kind.png.", ""]
    lines += ["## What the heads see", "", ("RGB | GT flow | predicted flow | GT depth | predicted depth, one frame "
                                             "per scene (grey: no ground truth); animated previews in gallery.html."), ""]
    for m in payload["models"]:
        lines += [f"![perception {m}]({gallery.perception_sheet_name(m)})", ""]
    lines += ["## Per scene", "", ("| scene | family | look | scenes | model | AbsRel | AbsRel scale-aligned | "
                                   "EPE moving (px) | ST-IoU | g_fit heads | g_fit rollout |"),
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in payload["scenes"]:
        for m, r in s["models"].items():
            p = r["perception"]
            lines.append(f"| {s['scene']} | {s['family']} | {s['look']} | {GROUP_LABELS[s['group']]} | {m} | "
                         f"{fmt(p.get('depth_abs_rel'))} | {fmt(p.get('depth_scale_abs_rel'))} | "
                         f"{fmt(p.get('flow_epe_moving'))} | "
                         f"{fmt(r['prediction']['spatiotemporal_iou'])} | {fmt(r['physics_heads']['g_fit'])} | "
                         f"{fmt(r['physics_generated']['g_fit'])} |")
    lines += ["", "![per scene](per_scene.png)", "", "![metrics](metrics_table.png)", ""]
    lines += ["![training curves](training_curves.png)", ""] if curves else ["(no metrics.jsonl next to the stage exports)", ""]
    lines += [f"Contact sheets: {', '.join(f'contact_sheet_{m}.png' for m in payload['models'])}; gallery: gallery.html.", ""]
    return "\n".join(lines)


def write_all(out: Path, payload: dict, stage_dirs: dict[str, Path]) -> list[str]:
    """report.md, per_scene.png, metrics_table.png and (when available) training_curves.png."""
    scene_bars(payload, out / "per_scene.png")
    table_figure(payload, out / "metrics_table.png")
    curves = training_curves(stage_dirs, out / "training_curves.png")
    (out / "report.md").write_text(markdown(payload, curves), encoding="utf-8")
    return ["metrics.json", "report.md", "per_scene.png", "metrics_table.png"] + (["training_curves.png"] if curves else [])
