"""Seeded stage-2 ablation: which loss terms help, over several seeds, judged on held-out families.

    python scripts/ablate_stage2.py [--seeds 0 1 2] [--variants fm_only ... reward] [--steps 30] \\
        [--out runs/ablation] [--split holdout] [section.field=value ...]

Every run is the stage-2 demo recipe (stages/configs/stage2_demo.toml, which starts from the
stage-1 demo heads: run `bash stages/stage1_heads.sh` first) with its variant's overrides, then
the extra overrides given here, `run.seed` set to the seed and `optim.max_steps` to --steps.
Variants (cumulative, as the stage-2 issue lists them):
  fm_only            flow matching alone (head, temporal and physics weights 0)
  fm_heads           + the flow/depth head losses (depth TGM 0)
  fm_heads_temporal  + temporal terms (depth TGM, flow-warp)
  fm_heads_physics   + physics terms (acceleration, free fall, jerk) without the temporal ones
  fm_heads_track     fm_heads + depth TGM + the depth track term (loss.depth_track_weight =
                     TRACK_WEIGHT): a body's distance must change along its ground-truth track as
                     the truth's does (the demo recipe as shipped)
  full               every term but the track one (the demo recipe until 2026-12-05)
  reward             objective.mode = "reward" (frozen heads; docs/stage2_reward.md), physics on
Each variant spells out every temporal, physics and track weight (`terms`), so it names the same
terms whatever stages/configs/stage2_demo.toml ships with.
Each run is scored on the fixed windows of --split (default: the held-out families):
flow-matching loss at sigma 0.3 and 0.7 with fixed noise; head metrics at the extraction timestep
(depth AbsRel metric and scale-aligned, flow EPE all / moving); the heads' physics residuals on the
ground-truth windows, judged on ground-truth supports (stages/evaluation/physics_report.py):
relative fitted-g error, free-fall residual, rest drift, and the fitted-g error of each half of the
heads' output with the other half exact (true depth: the heads' flow on the truth's distance; true
flow: the heads' distance with the truth's flow), which says whether a gain came from the motion
the heads see or from their depth alone. "stage1" is the same scoring before any
stage-2 step (LoRA zero, stage-1 heads).
With --rollouts (on by default when an override names real weights, backbone.model_dir=...) each
run is also evaluated by the evaluation's own code (scripts/evaluate_physics.py: TI2V rollouts from
the first frames of --rollout-scenes scenes of the split, the run's LoRA fused through diffsynth's
loader; the base model for stage1) and the table gains the rollouts' Physics-IQ spatiotemporal IoU
(higher is better) and MSE and the physics residuals of the generated videos (fitted-g error,
free-fall residual). With the tiny random backbone the rollouts are noise: the columns test the
path, not a model. Each run's evaluation is kept in <run>/eval (report.md, gallery.html).
Writes OUT/runs.jsonl (a line per run, appended as runs finish, each with the settings that made
it) and OUT/table.md (mean ± std over seeds).  Run again, the command skips the runs it finished
with the same settings (steps, split, windows, overrides, rollouts) and redoes the others: a table
never mixes runs made with other settings, nor lacks rollout columns that --rollouts asked for.
A run it does (again) starts from an empty run directory: an unfinished one starts over.

Cost, measured at the demo geometry (128^2, 9 frames) on 2 idle CPU cores: the default 7 variants
x 3 seeds x 30 steps plus the stage-1 row took 520 s of runs on `val` (about 25 s a run); the
tables are in docs/stage2_ablation.md.  (Shared with another job at load ~6, runs took
several times longer.)
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
DEMO2 = REPO / "stages/configs/stage2_demo.toml"
TRACK_WEIGHT = 4.0
"""Track-term weight of `fm_heads_track` (the demo recipe), with depth TGM on: over 3 seeds at 30
steps, 4 gave validation depth +3 %, held-out g error -8 %, free fall -8 % (the bar held); 5 gave
depth +7 %, g -16 %, free fall -12 % (docs/stage2_ablation.md)."""


def terms(temporal: bool, physics: bool, track: float = 0.0, tgm: bool | None = None) -> dict[str, float]:
    """The temporal (depth TGM and flow-warp; ``tgm`` sets the first alone), physics and track
    weights spelled out (on = the config classes' defaults), so a variant means the same terms
    whatever the demo recipe ships with."""
    from heads.losses import LossConfig
    from heads.physics import PhysicsLossConfig

    loss, phys = LossConfig(), PhysicsLossConfig()
    tgm = temporal if tgm is None else tgm
    weights = {"loss.depth_tgm_weight": loss.depth_tgm_weight if tgm else 0.0,
               "physics.warp_weight": phys.warp_weight if temporal else 0.0, "loss.depth_track_weight": track,
               "objective.physics_weight": 1.0}
    for name in ("acceleration_weight", "free_fall_weight", "jerk_weight"):
        weights[f"physics.{name}"] = getattr(phys, name) if physics else 0.0
    return weights


VARIANTS: dict[str, dict] = {
    "fm_only": {"objective.heads_weight": 0.0, **terms(False, False)},
    "fm_heads": terms(False, False),
    "fm_heads_temporal": terms(True, False),
    "fm_heads_physics": terms(False, True),
    "fm_heads_track": terms(False, False, TRACK_WEIGHT, tgm=True),
    "full": terms(True, True),
    "reward": {"objective.mode": "reward", "lora.train_heads": "false", **terms(True, True)},
}
COLUMNS = {  # key -> (title, lower is better)
    "fm_loss": ("FM loss", True), "depth_abs_rel": ("depth AbsRel", True),
    "depth_scale_abs_rel": ("depth AbsRel (scale-aligned)", True), "flow_epe": ("flow EPE", True),
    "flow_epe_moving": ("flow EPE moving", True), "g_rel_error": ("rel. g error", True),
    "free_fall_residual": ("free-fall res. (m/s²)", True), "rest_drift": ("rest drift (m/s)", True),
    "g_rel_error_true_depth": ("rel. g error, true depth", True),
    "g_rel_error_true_flow": ("rel. g error, true flow", True),
}
HALVES = ("true_depth", "true_flow")
"""Which half of the heads' output sets their fitted g: the heads' flow on the truth's distance, and
the heads' distance with the truth's flow (``physics_by_half``; titles in COLUMNS).  A
stage-2 gain in ``g_rel_error`` that ``g_rel_error_true_depth`` does not share came from depth alone."""
ROLLOUT_COLUMNS = {  # key -> (title, lower is better), from the evaluation's overall[model]
    "rollout_st_iou": ("rollout ST-IoU", False), "rollout_mse": ("rollout MSE", True),
    "rollout_g_rel_error": ("rollout rel. g error", True),
    "rollout_free_fall_residual": ("rollout free-fall res. (m/s²)", True),
}
ROLLOUT_SOURCES = {"rollout_st_iou": ("prediction", "spatiotemporal_iou"), "rollout_mse": ("prediction", "mse"),
                   "rollout_g_rel_error": ("physics_generated", "g_rel_error"),
                   "rollout_free_fall_residual": ("physics_generated", "free_fall_residual")}
FM_SIGMAS = (0.3, 0.7)


def build(overrides: list[str]):
    from stages.stage2 import Stage2Config, build_stage2
    from stages.trainer import load_config
    from stages.trainer.backend import make_accelerator

    return build_stage2(load_config(Stage2Config, DEMO2, overrides), make_accelerator())


@torch.no_grad()
def fm_loss(stage, batch: dict, index: int) -> float:
    """Flow-matching loss of the adapted DiT on one window at fixed sigmas and noise."""
    from world_model.features import dit_forward, make_noise, noisy_latents
    from world_model.flow_matching import flow_matching_loss, sigma_to_timestep

    latents, context = stage.source.encode(batch["rgb"], list(batch["prompt"]))
    objective, total = stage.run.config.objective, 0.0
    for k, s in enumerate(FM_SIGMAS):
        sigma = torch.tensor([s], device=latents.device)
        noise = make_noise(latents.shape, seed=objective.noise_seed + 1000 * index + k, device=latents.device,
                           dtype=latents.dtype)
        velocity = dit_forward(stage.run.unwrapped.dit, noisy_latents(latents, sigma, noise), sigma_to_timestep(sigma),
                               context).output
        total += float(flow_matching_loss(velocity, noise - latents, sigma_to_timestep(sigma), "uniform"))
    return total / len(FM_SIGMAS)


@torch.no_grad()
def physics_of_heads(stage, sample: dict, batch: dict) -> dict[str, dict[str, float]]:
    """The heads' residuals on a ground-truth window, on the ground truth's supports: {"heads": ...,
    and one entry per HALVES name, with that half of the heads' output replaced by the truth}."""
    from data.scene_meta import read_scene_meta
    from heads.metrics import depth_from_log
    from stages.evaluation import physics_report as phys

    windows = stage.val_set.dataset
    scene = windows.base.scenes[windows.scene_of(sample["index"])]
    g = phys.scene_gravity(read_scene_meta(scene.directory))
    one = {k: v[0] for k, v in batch.items() if torch.is_tensor(v)}
    kin, masks = phys.gt_physics(one, g)
    latents, context = stage.source.encode(batch["rgb"], list(batch["prompt"]))
    taps = stage.source.backbone.extract(latents, context, stage.source.extraction).as_list()
    flow, log_depth = stage.run.unwrapped.heads(taps, batch["rgb"])
    return physics_by_half(depth_from_log(log_depth[0]).cpu(), flow[0].float().cpu(),
                           {k: v.cpu() for k, v in one.items()}, kin, masks, g)


def physics_by_half(depth: torch.Tensor, flow: torch.Tensor, sample: dict, kin: dict, masks: dict,
                    g: float) -> dict[str, dict[str, float]]:
    """Residuals of the heads' distance (T, H, W) and flow (T, 2, H, W) on one ground-truth window,
    and of each half with the other one exact (keys "heads" and HALVES)."""
    from stages.evaluation import physics_report as phys

    sources = dict(zip(("heads",) + HALVES, ((depth, flow), (sample["depth"], flow), (depth, sample["flow"])), strict=True))
    return {name: phys.source_physics(d, f, sample, kin, masks, g) for name, (d, f) in sources.items()}


def score(stage, heads: dict[str, float]) -> dict[str, float]:
    """Every column of the table on the stage's validation windows, with the head metrics ``heads``
    its (EMA-weight) validation measured; call with the EMA weights swapped in."""
    from stages.evaluation import physics_report as phys
    from stages.trainer.prefetch import to_device

    fm, physics = [], []
    for index, batch in enumerate(DataLoader(stage.val_set, batch_size=1)):
        batch = to_device(batch, stage.run.accelerator.device)
        fm.append(fm_loss(stage, batch, index))
        physics.append(physics_of_heads(stage, {"index": stage.val_set.indices[index]}, batch))
    pooled = phys.pooled_g([p["heads"] for p in physics])
    halves = {f"g_rel_error_{h}": phys.pooled_g([p[h] for p in physics])["g_rel_error"] for h in HALVES}
    return {"fm_loss": float(np.mean(fm)), **{k: heads.get(k, math.nan) for k in COLUMNS if k in heads},
            **{k: pooled[k] for k in ("g_rel_error", "free_fall_residual", "rest_drift")}, **halves}


def rollout_metrics(stage, trained: bool, args) -> dict[str, float]:
    """The ROLLOUT_COLUMNS of one run from the evaluation (stages.evaluation.evaluate), written to
    <run>/eval: rollouts with the run's exported LoRA, or of the base model for the stage1 row."""
    from stages.evaluation.eval_config import EvalConfig
    from stages.evaluation.evaluate import run_evaluation

    cfg = stage.run.config
    run_dir = Path(cfg.run.output_dir)
    config = EvalConfig(stage1=cfg.objective.heads_dir, stage2=str(run_dir / "final") if trained else "",
                        root=cfg.data.root, metadata=cfg.data.metadata, split=args.split,
                        model_dir=cfg.backbone.model_dir, out=str(run_dir / "eval"), cache_dir=cfg.features.cache_dir,
                        steps=args.rollout_steps, cfg_scale=args.rollout_cfg, max_scenes=args.rollout_scenes,
                        flow_baselines=False)
    overall = run_evaluation(config)["overall"]["stage2" if trained else "stage1"]
    return {key: float((overall.get(part) or {}).get(field, math.nan)) for key, (part, field) in ROLLOUT_SOURCES.items()}


def run_one(name: str, seed: int, args, extra: list[str]) -> dict:
    run_dir = Path(args.out) / name / f"seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)  # else the trainer resumes whatever run was there before
    overrides = [f"{k}={v}" for k, v in VARIANTS.get(name, {}).items()] + extra + [
        f"run.seed={seed}", f"optim.max_steps={args.steps}", f"run.output_dir={run_dir}", f"run.val_split={args.split}",
        f"run.val_max_windows={args.max_windows}", "run.val_every=100000", "checkpoint.every_steps=100000",
        "checkpoint.keep_last=1", "optim.warmup_steps=1", "run.val_flow_baselines=false"]
    from stages.trainer.runner import ema_weights, train

    started = time.time()
    stage = build(overrides)
    heads = stage.validate() if name == "stage1" else train(stage)  # train() ends validating on EMA weights
    with ema_weights(stage):
        metrics = score(stage, heads)
    if args.rollouts:
        metrics.update(rollout_metrics(stage, name != "stage1", args))
    return {"variant": name, "seed": seed, "seconds": round(time.time() - started, 1), **metrics}


def run_settings(args) -> dict:
    """Everything besides variant and seed that changes a run's row (compared as JSON reads it back)."""
    rollouts = [args.rollout_scenes, args.rollout_steps, args.rollout_cfg] if args.rollouts else None
    return {"steps": args.steps, "split": args.split, "max_windows": args.max_windows,
            "overrides": list(args.overrides), "rollouts": rollouts}


def finished_rows(log_path: Path, settings: dict) -> list[dict]:
    """The rows of runs.jsonl made with ``settings``; says how many others it leaves out."""
    rows = [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.is_file() else []
    kept = [r for r in rows if r.get("settings") == settings]
    if len(kept) < len(rows):
        print(f"{log_path}: {len(rows) - len(kept)} run(s) made with other settings left out (redone if asked for)",
              flush=True)
    return kept


PHYSICS_BAR = ("g_rel_error", "free_fall_residual")
"""Residuals a variant must lower against the stage1 row to meet issue 17's bar."""


def finite_values(runs: list[dict], key: str) -> np.ndarray:
    """The runs' finite values of one column (a run without it, or with NaN, is left out)."""
    values = np.array([r.get(key, math.nan) for r in runs], dtype=float)
    return values[np.isfinite(values)]


def finite_mean(runs: list[dict], key: str) -> float:
    values = finite_values(runs, key)
    return float(values.mean()) if len(values) else math.nan


def meets_bar(means: dict[str, float], stage1: dict[str, float]) -> str:
    """Issue 17's bar on a variant's means against the stage1 row: fitted-g error and free-fall
    residual lower, depth AbsRel and moving-pixel flow EPE within 5 % (`stages.model.perception_change`)."""
    from stages.model import perception_change

    if not stage1:
        return "n/a"
    change = perception_change(stage1, means)
    misses = [f"{COLUMNS[k][0]} not lower" for k in PHYSICS_BAR if not means.get(k, math.nan) < stage1.get(k, math.nan)]
    misses += [f"{COLUMNS[k][0]} {change['rows'][k]['change'] * 100:+.0f} %" for k in change["worse"]]
    if change["kept"] is None:
        misses.append("no perception metrics")
    return "yes" if not misses else "no: " + ", ".join(misses)


def table(rows: list[dict], names: list[str]) -> str:
    """Markdown: a row per variant, mean ± std over its seeds per column (n = number of seeds; the
    rollout columns only when a run has them), and whether the means meet issue 17's bar against
    the stage1 row."""
    columns = {**COLUMNS, **(ROLLOUT_COLUMNS if any(k in r for r in rows for k in ROLLOUT_COLUMNS) else {})}
    lines = ["| variant | n | " + " | ".join(t for t, _ in columns.values()) + " | meets the bar |",
             "|---|---|" + "---|" * (len(columns) + 1)]
    stage1 = {key: finite_mean([r for r in rows if r["variant"] == "stage1"], key) for key in COLUMNS}
    stage1 = stage1 if any(math.isfinite(v) for v in stage1.values()) else {}
    for name in names:
        runs = [r for r in rows if r["variant"] == name]
        if not runs:
            continue
        cells = []
        for key in columns:
            values = finite_values(runs, key)
            cells.append("n/a" if not len(values) else f"{values.mean():.4g} ± {values.std(ddof=1) if len(values) > 1 else 0:.2g}")
        bar = "—" if name == "stage1" else meets_bar({key: finite_mean(runs, key) for key in COLUMNS}, stage1)
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + f" | {bar} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds per variant (default: 0 1 2)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), help="default: all")
    ap.add_argument("--steps", type=int, default=30, help="stage-2 steps per run (default: 30)")
    ap.add_argument("--split", default="holdout", help="split scored (default: holdout, the unseen families)")
    ap.add_argument("--max-windows", type=int, default=8, help="windows of the split scored (default: 8)")
    ap.add_argument("--out", default="runs/ablation", help="output directory (default: runs/ablation)")
    ap.add_argument("--rollouts", action=argparse.BooleanOptionalAction, default=None,
                    help="evaluate TI2V rollouts of every run (default: only with backbone.model_dir=... given)")
    ap.add_argument("--rollout-scenes", type=int, default=4, help="scenes of the split rolled out per run (default: 4)")
    ap.add_argument("--rollout-steps", type=int, default=30, help="denoising steps per rollout (default: 30)")
    ap.add_argument("--rollout-cfg", type=float, default=5.0, help="classifier-free guidance scale (default: 5)")
    ap.add_argument("overrides", nargs="*", help="section.field=value for every run (e.g. data.root=...)")
    args = ap.parse_args(argv)
    if args.rollouts is None:
        args.rollouts = any(o.startswith("backbone.model_dir=") and o.split("=", 1)[1] for o in args.overrides)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "runs.jsonl"
    settings = run_settings(args)
    rows = finished_rows(log_path, settings)
    names = ["stage1", *args.variants]
    for name in names:
        for seed in args.seeds[:1] if name == "stage1" else args.seeds:  # stage 1 has nothing random left
            if any(r["variant"] == name and r["seed"] == seed for r in rows):
                continue
            row = {**run_one(name, seed, args, args.overrides), "settings": settings}
            rows.append(row)
            with log_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            done = sum(r["variant"] != "stage1" for r in rows)
            left = len(args.variants) * len(args.seeds) - done
            print(f"{name} seed {seed}: {row['seconds']:.0f} s; {left} run(s) left", flush=True)
    text = table(rows, names)
    (out / "table.md").write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
