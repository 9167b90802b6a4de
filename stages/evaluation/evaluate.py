"""The evaluation loop: for each model (base backbone + stage-1 heads; LoRA-fused backbone + stage-2
heads) and each scene of the split, perception on GT, a TI2V rollout, heads on the rollout, physics.
Scenes of families never seen in training and unseen scenes of seen families are pooled apart
(metrics.json "groups"): the two answer different questions and must not be averaged together.

Models run one after the other because fusing the LoRA changes the shared DiT in place; the
rollout seeds (config.seed + scene index) are the same for both. Everything measured goes into
metrics.json, whose fields are listed below and checked by the tests.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from tqdm import tqdm

from data.dataset import SimPhysicsDataset
from data.metadata_split import describe_scene, seen_families
from data.scene_meta import read_scene_meta, scene_look
from data.windows import FixedWindows
from heads.metrics import depth_from_log
from heads.video_metrics import mean_metrics
from stages.evaluation import (
    best_of,
    breakdown,
    gallery,
    iq,
    perception,
    report,
    rollout,
    timebase,
)
from stages.evaluation import exports as ck
from stages.evaluation import physics_report as phys
from stages.evaluation.eval_config import EvalConfig
from stages.evaluation.exports import finite
from stages.evaluation.pairs import read_pairs
from stages.features import FeatureSource

log = logging.getLogger(__name__)

METRICS_FIELDS = ("args", "geometry", "backbone", "device", "checkpoints", "models", "scenes", "overall",
                  "verdicts", "groups", "breakdown", "physics_iq", "constants", "notes", "outputs", "seconds")
"""Top-level fields of metrics.json; "overall" and "verdicts" pool every scene evaluated; "breakdown"
pools perception per family and per look set (stages.evaluation.breakdown); "physics_iq" is the
Physics-IQ score per model (stages.evaluation.iq; null when the scenes have no second take)."""
GROUPS = (("held_out_families", "scenes of families never seen in training"),
          ("seen_families", "unseen scenes of families seen in training"))
"""(key, what it holds) of metrics.json["groups"]: a family is seen when the metadata's training split
(the stage-1 run's run.train_split) has a scene of it.  Each present group has GROUP_FIELDS."""
GROUP_FIELDS = ("holds", "scenes", "overall", "verdicts")
SCENE_FIELDS = ("scene", "video", "prompt", "family", "look", "group", "g_scene", "physics_gt", "coherence_gt",
                "models")
"""Fields of each entry of metrics.json["scenes"]; "models" maps model name -> SCENE_MODEL_FIELDS."""
SCENE_MODEL_FIELDS = ("seed", "perception", "beats_baseline", "prediction", "physics_heads", "coherence_heads",
                      "physics_generated", "coherence_generated", "best_of")
"""best_of is null with --best-of 1, else {n, verifier, seeds, scores, chosen, prediction_first, physics_first}:
prediction and physics_generated are the chosen rollout's."""
OVERALL_FIELDS = ("perception", "beats_baseline", "prediction", "physics_heads", "coherence_heads",
                  "physics_generated", "coherence_generated", "best_of")
"""Fields of metrics.json["overall"][model]; metrics.json["overall"]["gt"] has physics and coherence."""
VERDICT_FIELDS = ("heads_beat_baselines", "physics_heads", "physics_generated", "temporal_coherence")
"""Pass/fail heuristics per model in metrics.json["verdicts"][model]: each {value, rule, pass}."""
NOTES = (
    ("Held-out means unseen scenario families: 'held_out_families' scenes belong to families with no scene "
     "in the training split (make_metadata --holdout-families puts them in the 'holdout' split); "
     "'seen_families' scenes are new seeds of trained families and score like training data."),
    "Scoring models trained on Physics-IQ-like scenes on Physics-IQ itself risks leakage.",
    ("Rollouts, physics and coherence use the ground truth resampled to the backbone's frame rate (nearest "
     "simulator frame in time, true frame times kept); perception metrics use the training window."),
    "Physics and coherence rows of a table are judged on the same ground-truth pixels (free fall, rest, motion).",
    "Physics-IQ metrics score generated frames only (frame 0 is the conditioning image).",
)


@dataclass
class Context:
    """What every model pass shares."""

    config: EvalConfig
    geometry: ck.Geometry
    windows: FixedWindows
    refs: list
    source: FeatureSource
    pipe: object
    moving_threshold: float
    far: float
    downsample: int
    take2: object = None
    """The dataset read from every scene's second take (Physics-IQ's physical variance), or None."""
    families: list[tuple[str, str]] = field(default_factory=list)
    """(family, group) of each ref."""
    looks: list[str] = field(default_factory=list)
    """Look set of each ref (`data.scene_meta.scene_look`)."""
    scenes: list[dict] = field(default_factory=list)
    visuals: dict = field(default_factory=dict)


def _scene_gt(ctx: Context, k: int, sample: dict, g: float, kin: dict, masks: dict) -> None:
    """Record the ground truth's own physics, coherence and frame strips once per scene."""
    if len(ctx.scenes) > k:
        return
    family, group = ctx.families[k]
    ctx.scenes.append({"scene": sample["scene"], "video": sample["video"], "prompt": sample["prompt"],
                       "family": family, "look": ctx.looks[k], "group": group, "g_scene": g,
                       "physics_gt": phys.residuals(kin, sample["down_cam"][None], g, masks["free"], masks["static"]),
                       "coherence_gt": phys.coherence(sample["rgb"], sample["flow"], masks["moving"]), "models": {}})
    ctx.visuals[sample["scene"]] = gallery.scene_visuals(sample)


def _scene_model(ctx: Context, name: str, pair, k: int, pooled: list) -> None:
    """One scene under one model: perception, rollout, heads on the rollout, physics, coherence."""
    c, ref = ctx.config, ctx.refs[k]
    sample = ctx.windows.base.load_window(ref.scene_index, ctx.windows.frames(ref))
    fps = ctx.source.preset.fps
    timed = timebase.backbone_window(ctx.windows.base, ref.scene_index, ref.start, ctx.geometry.frames, fps)
    g = phys.scene_gravity(read_scene_meta(ctx.windows.base.scenes[ref.scene_index].directory))
    kin, masks = phys.gt_physics(timed, g)
    masks["moving"] = phys.motion_support(timed, ctx.moving_threshold)
    _scene_gt(ctx, k, timed, g, kin, masks)
    flow, log_depth = perception.predict(pair, ctx.source, sample["rgb"], sample["prompt"])
    scene_acc = perception.new_accumulator(ctx.moving_threshold, ctx.far)
    perception.add([scene_acc, *pooled], flow, log_depth, sample, flow_baselines=c.flow_baselines)
    pictures = gallery.perception_pictures(sample, flow, log_depth)  # what the metrics just scored
    if not torch.equal(timed["steps"], sample["steps"]):  # heads on the GT frames of the rollout's time base
        flow, log_depth = perception.predict(pair, ctx.source, timed["rgb"], sample["prompt"])
    depth = depth_from_log(log_depth)
    seed = c.seed + k
    generated, first, choice = best_of.choose(
        ctx.pipe, pair, ctx.source, timed["rgb"][0], sample["prompt"], timed["intrinsics"], seed=seed, n=c.best_of,
        verifier=c.verifier, frames=ctx.geometry.frames, steps=c.steps, cfg_scale=c.cfg_scale, scene=sample["scene"])
    gen_flow, gen_log_depth = perception.predict(pair, ctx.source, generated, sample["prompt"])
    gen_depth = depth_from_log(gen_log_depth)
    if choice is not None:  # what the first sample alone would have scored
        first_flow, first_log_depth = perception.predict(pair, ctx.source, first, sample["prompt"])
        choice["prediction_first"] = rollout.prediction_metrics(first, timed["rgb"], ctx.downsample)
        choice["physics_first"] = phys.source_physics(depth_from_log(first_log_depth), first_flow, timed, kin, masks,
                                                      g, rollout_fps=fps)
    metrics = scene_acc.compute()
    take2 = None
    if ctx.take2 is not None:
        take2 = timebase.backbone_window(ctx.take2, ref.scene_index, ref.start, ctx.geometry.frames, fps)["rgb"]
    ctx.scenes[k]["models"][name] = {"best_of": choice,
        "seed": seed, "perception": metrics, "beats_baseline": perception.beats_baseline(metrics),
        "prediction": rollout.prediction_metrics(generated, timed["rgb"], ctx.downsample, take2),
        "physics_heads": phys.source_physics(depth, flow, timed, kin, masks, g),
        "coherence_heads": phys.coherence(timed["rgb"], flow, masks["moving"]),
        "physics_generated": phys.source_physics(gen_depth, gen_flow, timed, kin, masks, g, rollout_fps=fps),
        "coherence_generated": phys.coherence(generated, gen_flow, masks["moving"])}
    ctx.visuals[sample["scene"]][name] = {**gallery.model_visuals(ctx.visuals[sample["scene"]], generated, flow,
                                                                   depth, gen_flow, gen_depth), **pictures}


def _coherence_overall(records: list[dict]) -> dict[str, float]:
    frames = sum(r["frames_scored"] for r in records)
    share = sum(r["coherent_frames"] * r["frames_scored"] for r in records) / frames if frames else math.nan
    warp = sum(r["warp_l1_mean"] * r["frames_scored"] for r in records) / frames if frames else math.nan
    return {"coherent_frames": share, "warp_l1_mean": warp, "frames_scored": frames}


def _best_of_overall(per: list[dict]) -> dict | None:
    """Prediction metrics and pooled g of the first samples, beside the chosen ones' (in _overall)."""
    records = [p["best_of"] for p in per if p.get("best_of")]
    if not records:
        return None
    return {"n": records[0]["n"], "verifier": records[0]["verifier"],
            "chosen_not_first": sum(r["chosen"] != 0 for r in records) / len(records),
            "prediction_first": mean_metrics([r["prediction_first"] for r in records]),
            "physics_first": phys.pooled_g([r["physics_first"] for r in records])}


def _overall(scenes: list[dict], name: str, acc) -> dict:
    per = [s["models"][name] for s in scenes]
    metrics = acc.compute()
    return {"best_of": _best_of_overall(per),"perception": metrics, "beats_baseline": perception.beats_baseline(metrics),
            "prediction": mean_metrics([p["prediction"] for p in per]),
            "physics_heads": phys.pooled_g([p["physics_heads"] for p in per]),
            "coherence_heads": _coherence_overall([p["coherence_heads"] for p in per]),
            "physics_generated": phys.pooled_g([p["physics_generated"] for p in per]),
            "coherence_generated": _coherence_overall([p["coherence_generated"] for p in per])}


def _gt_overall(scenes: list[dict]) -> dict:
    return {"physics": phys.pooled_g([s["physics_gt"] for s in scenes]),
            "coherence": _coherence_overall([s["coherence_gt"] for s in scenes])}


def _verdicts(overall: dict) -> dict:
    """Pass/fail per model (rule: `perception.VERDICT_RULE`); the heads must beat zero flow on all
    pixels too, not only on moving ones (a head can win on moving pixels while being worse overall)."""
    beats = overall["beats_baseline"]
    value = overall["perception"].get("depth_scale_abs_rel", math.nan)
    passed = all(beats[key] for key in perception.VERDICT_KEYS)
    return {"heads_beat_baselines": phys.verdict(value, passed, perception.VERDICT_RULE),
            "physics_heads": phys.g_verdict(overall["physics_heads"]),
            "physics_generated": phys.g_verdict(overall["physics_generated"]),
            "temporal_coherence": phys.coherence_verdict(overall["coherence_generated"]["coherent_frames"])}


def _setup(config: EvalConfig) -> tuple[Context, dict, dict]:
    """Check inputs, load heads and data, build the backbone and the pipeline."""
    stage1 = ck.check_stage_dir(config.stage1, "stage1")
    stage2 = ck.check_stage_dir(config.stage2, "stage2") if config.stage2 else None
    trained = ck.stage1_config(stage1)
    backbone = ck.backbone_config(trained.backbone, config.model_dir)
    geometry = ck.resolve_geometry(config, trained)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    pairs = {"stage1": (ck.load_pair(stage1, device), stage1)}
    if stage2 is not None:
        ck.check_stage2_backbone(stage2, backbone)
        pairs["stage2"] = (ck.load_pair(stage2 / ck.STAGE2_HEADS, device), stage2)
    for pair, where in pairs.values():
        ck.check_geometry(pair, backbone, geometry, where)
    window = replace(trained.data.window, num_frames=geometry.frames, stride=geometry.stride, eval_anchor="start")
    data = replace(trained.data, root=config.root, metadata=config.metadata, height=geometry.size,
                   width=geometry.size, window=window, hflip_prob=0.0)
    windows = FixedWindows(SimPhysicsDataset(data, split=config.split, train=False), per_scene=1)
    refs = windows.refs[: config.max_scenes or None]
    families = _families(windows, refs, config, trained.run.train_split)
    looks = [scene_look(read_scene_meta(windows.base.scenes[r.scene_index].directory)) for r in refs]
    source = FeatureSource(backbone, device, config.cache_dir)
    ctx = Context(config=config, geometry=geometry, windows=windows, refs=refs, source=source,
                  pipe=rollout.build_pipeline(source), moving_threshold=trained.loss.moving_threshold,
                  far=trained.loss.depth_far, downsample=rollout.iq_downsample(config.iq_downsample, geometry.size),
                  families=families, looks=looks, take2=iq.take2_of(windows.base))
    hashes = {"stage1": ck.sha256_files(stage1), **({"stage2": ck.sha256_files(stage2)} if stage2 else {})}
    return ctx, pairs, {"hashes": hashes, "backbone": asdict(backbone), "device": str(device)}


def _families(windows: FixedWindows, refs: list, config: EvalConfig, train_split: str) -> list[tuple[str, str]]:
    """(family, group) of each evaluated scene; seen = a scene of it is in the metadata's train split."""
    seen = seen_families(config.root, config.metadata, train_split)
    if not seen:
        log.warning("%s has no rows in the training split %r: every scene counts as a held-out family",
                    config.metadata, train_split)
    families = [describe_scene(Path(config.root), windows.base.entries[r.scene_index].scene)[0] for r in refs]
    return [(f, GROUPS[1][0] if f in seen else GROUPS[0][0]) for f in families]


def _groups(ctx: Context, models: list[str], accs: dict) -> dict:
    """metrics.json["groups"]: per present group, its scenes pooled per model, the GT, and verdicts."""
    out = {}
    for key, holds in GROUPS:
        scenes = [s for s in ctx.scenes if s["group"] == key]
        if scenes:
            overall = {m: _overall(scenes, m, accs[m][key]) for m in models}
            out[key] = {"holds": holds, "scenes": [s["scene"] for s in scenes],
                        "overall": {**overall, "gt": _gt_overall(scenes)},
                        "verdicts": {m: _verdicts(overall[m]) for m in models}}
    return out


VERIFY_KEYS = ("rows", "pairs", "kinds", "default_intrinsics", "heads_perception", "model")
"""What metrics.json keeps of each verify.json (the per-clip scores stay in verify/verify.json)."""


def _verify(config: EvalConfig, out: Path, name: str, pair, source) -> dict:
    """The verifiers on the violation pairs (stages.evaluation.verify) with model ``name``: ``verify``
    with the stage-1 model (out/verify/, every verifier), ``verify_stage2`` with the stage-2 LoRA and
    heads (out/verify_stage2/, only the verifiers that read a model: heads, features), so the report
    judges each model by its own heads.  Run while the evaluation's backbone is in that model's state,
    on its heads and feature source: the backbone is read from disk and held once, not once more per
    model.  -> {key: what metrics.json keeps}."""
    from stages.evaluation.verifiers import NEEDS_MODEL, VERIFIERS
    from stages.evaluation.verify import VerifyConfig, run_verify

    run = VerifyConfig(stage1=config.stage1, root=config.root, pairs=config.pairs, out=str(out / "verify"),
                       model_dir=config.model_dir, cache_dir=config.cache_dir, device=config.device,
                       seed=config.seed)
    key = "verify"
    if name == "stage2":
        key = "verify_stage2"
        run = replace(run, out=str(out / key), stage2=config.stage2,
                      verifiers=tuple(v for v in VERIFIERS if v in NEEDS_MODEL))
    result = run_verify(run, loaded=(pair, source))
    return {key: {k: result[k] for k in VERIFY_KEYS}}


def _pool_keys(ctx: Context, k: int) -> list[tuple[str, str]]:
    """The per-family and per-look pools scene k adds to (stages.evaluation.breakdown)."""
    return breakdown.pool_keys({"family": ctx.families[k][0], "look": ctx.looks[k]})


def run_evaluation(config: EvalConfig) -> dict:
    """Evaluate, write every output into config.out, and return the metrics.json payload."""
    from world_model.lora_export import load_lora_into_dit

    started = time.perf_counter()
    if config.pairs:  # a bad manifest fails before any rollout
        read_pairs(config.pairs, config.root)
    ctx, pairs, info = _setup(config)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    overall, verdicts, accs, verified = {}, {}, {}, {}
    for name, (pair, where) in pairs.items():
        if name == "stage2":
            load_lora_into_dit(ctx.source.backbone.dit, where / ck.LORA_NAME, pipe=ctx.pipe)
        if config.pairs:
            verified.update(_verify(config, out, name, pair, ctx.source))
        pools = ["all", *dict(GROUPS), *{key for k in range(len(ctx.refs)) for key in _pool_keys(ctx, k)}]
        accs[name] = {key: perception.new_accumulator(ctx.moving_threshold, ctx.far) for key in pools}
        for k in tqdm(range(len(ctx.refs)), desc=f"evaluate {name}", unit="scene"):
            keys = ["all", ctx.families[k][1], *_pool_keys(ctx, k)]
            _scene_model(ctx, name, pair, k, [accs[name][key] for key in keys])
        overall[name] = _overall(ctx.scenes, name, accs[name]["all"])
        verdicts[name] = _verdicts(overall[name])
    overall["gt"] = _gt_overall(ctx.scenes)
    payload = {"args": asdict(config), "geometry": asdict(ctx.geometry), "backbone": info["backbone"],
               "device": info["device"], "checkpoints": info["hashes"], "models": list(pairs),
               "scenes": ctx.scenes, "overall": overall, "verdicts": verdicts,
               "groups": _groups(ctx, list(pairs), accs), "notes": list(NOTES),
               "breakdown": breakdown.breakdown(ctx.scenes, list(pairs), accs),
               "physics_iq": iq.scores(ctx.scenes, list(pairs), seed=config.seed),
               "constants": {"warp_l1_max": phys.WARP_L1_MAX, "coherence_pass": phys.COHERENCE_PASS,
                             "g_tolerance": phys.G_TOLERANCE, "min_speed_m_s": phys.MIN_SPEED,
                             "contact_tolerance_m_s2": phys.CONTACT_TOLERANCE, "iq_downsample": ctx.downsample,
                             "backbone_fps": ctx.source.preset.fps,
                             "moving_threshold_px": ctx.moving_threshold}}
    payload.update(verified)
    stage_dirs = {name: where for name, (_, where) in pairs.items()}
    payload["outputs"] = report.write_all(out, payload, stage_dirs) + gallery.write_all(out, payload, ctx.visuals)
    payload["seconds"] = time.perf_counter() - started
    (out / "metrics.json").write_text(json.dumps(finite(payload), indent=2, default=str))
    return payload
