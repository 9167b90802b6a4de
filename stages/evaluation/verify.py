"""Score verifiers on violation pairs: every clip of a manifest once, then pairwise accuracy.

Clips are read whole, at the stage-1 run's stride and frame size, through the data layer (so a
root without scene.json works, with the default intrinsics, and says so).  Writes verify.json,
verify.md and a bar plot per kind and verifier into the output directory.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data.dataset import SimPhysicsDataset
from data.scene_meta import read_scene_meta
from heads.io import atomic_write
from heads.metrics import MetricAccumulator, head_accumulator
from heads.moving_distance import JITTER_TOLERANCE, SCALE_TOLERANCE, MovingDistance
from stages.evaluation import exports as ck
from stages.evaluation.eval_config import EvaluationError
from stages.evaluation.pairs import Pair, accuracy_row, read_pairs
from stages.evaluation.verifiers import (
    DIAGNOSTICS,
    NEEDS_MODEL,
    VERIFIERS,
    clip_scores,
    heads_over_clip,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerifyConfig:
    stage1: str
    root: str
    pairs: str
    out: str
    verifiers: tuple[str, ...] = VERIFIERS
    model_dir: str = ""
    cache_dir: str = "runs/cache"
    device: str = ""
    seed: int = 0
    stage2: str = ""
    """A stage-2 export: its LoRA fused into the DiT and its heads replace the stage-1 ones."""


def write_clip_metadata(root: str | Path, videos: list[str], path: Path, split: str = "verify") -> Path:
    """A metadata CSV listing ``videos`` (prompts from their scene.json, if any) in one split, so the
    data layer reads a manifest's clips like any other scenes."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video", "prompt", "split"])
        for video in videos:
            meta = read_scene_meta(Path(root) / video) or {}
            writer.writerow([video, meta.get("prompt", ""), split])
    return path


def _clip_dataset(config: VerifyConfig, trained, videos: list[str], out: Path) -> SimPhysicsDataset:
    """The manifest's clips as a data set (a metadata CSV written beside the results)."""
    metadata = write_clip_metadata(config.root, videos, out / "clips.csv")
    data = replace(trained.data, root=config.root, metadata=str(metadata), hflip_prob=0.0)
    return SimPhysicsDataset(data, split="verify", train=False)


def _model(config: VerifyConfig, trained):
    """Heads and backbone features of the stage-1 run, or of the stage-2 run (its LoRA fused into
    the DiT, its co-trained heads) with ``config.stage2``; only when a verifier needs them."""
    from stages.features import FeatureSource

    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    stage1 = ck.check_stage_dir(config.stage1, "stage1")
    backbone = ck.backbone_config(trained.backbone, config.model_dir)
    source = FeatureSource(backbone, device, config.cache_dir)
    if not config.stage2:
        return ck.load_pair(stage1, device), source
    stage2 = ck.fuse_stage2_lora(config.stage2, backbone, source.backbone.dit)
    return ck.load_pair(stage2 / ck.STAGE2_HEADS, device), source


PERCEPTION_KEYS = ("depth_abs_rel", "depth_moving_abs_rel", "median_depth_moving_abs_rel", "flow_epe_moving",
                   "zero_flow_epe_moving")
"""What verify.json reports of the heads' own depth and flow on the plausible clips (``heads_perception``),
beside the moving bodies' distance scale and jitter (``heads.moving_distance``)."""


def add_perception(accumulator: MetricAccumulator, sample: dict, outputs: dict) -> None:
    """The heads' distance and flow over one whole clip against its ground truth, on the pixels
    stage-1 validation scores.  For the report only: it says what the heads miss where ``heads``
    fails (a moving body at the depth of the wall behind it); no score ever sees it."""
    scored = accumulator.add_flow(outputs["flow"][None], sample["flow"][None], sample["flow_valid"][None])
    accumulator.add_depth(outputs["distance"][None], sample["depth"][None], sample["depth_valid"][None],
                          moving=scored.moving)


def score_clips(config: VerifyConfig, pairs: list[Pair], out: Path, loaded=None
                ) -> tuple[dict[str, dict], list[str], dict]:
    """video -> verifier -> {score, terms}; the clips read without scene.json; and the heads'
    perception on the plausible clips (``PERCEPTION_KEYS``; empty without the heads verifier).
    ``loaded``: (heads, feature source) already in memory, in the state ``config`` names (the
    evaluation passes its own, so the backbone is not read from disk and held twice)."""
    trained = ck.stage1_config(Path(config.stage1))
    videos = list(dict.fromkeys(v for p in pairs for v in (p.plausible, p.implausible)))
    plausible = {p.plausible for p in pairs}
    dataset = _clip_dataset(config, trained, videos, out)
    model = None
    if set(config.verifiers) & set(NEEDS_MODEL):
        model = loaded if loaded is not None else _model(config, trained)
    window, stride = trained.data.window.num_frames, trained.data.window.stride
    perception = head_accumulator(trained.loss.moving_threshold, trained.data.far_clip_m)
    bodies = MovingDistance(trained.loss.moving_threshold)
    scores, defaults = {}, []
    for index, video in enumerate(tqdm(videos, desc="verify", unit="clip")):
        scene = dataset.scenes[index]
        if read_scene_meta(scene.directory) is None:
            defaults.append(video)
        sample = dataset.load_window(index, np.arange(0, scene.num_frames, stride))
        outputs = None
        if model is not None:
            outputs = heads_over_clip(*model, sample["rgb"], sample["prompt"], window)
        scores[video] = clip_scores(sample, config.verifiers, outputs, config.seed)
        if "heads" in config.verifiers and video in plausible:
            add_perception(perception, sample, outputs)
            bodies.add(outputs["distance"], sample)
    if defaults:
        log.warning("%d clip(s) have no scene.json: default intrinsics (data.fov_deg = %s deg) used for %s",
                    len(defaults), trained.data.fov_deg, ", ".join(defaults[:3]) + (" ..." if len(defaults) > 3 else ""))
    measured = perception.compute()
    seen = {k: measured[k] for k in PERCEPTION_KEYS if k in measured}
    return scores, defaults, ({**seen, **bodies.compute()} if seen else seen)


def plot(rows: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = sorted({k for row in rows.values() for k in row["by_kind"]})
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(kinds) + 2), 3.6))
    width = 0.8 / max(len(rows), 1)
    for i, (name, row) in enumerate(rows.items()):
        ax.bar(np.arange(len(kinds)) + i * width, [row["by_kind"][k] for k in kinds], width, label=name)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks(np.arange(len(kinds)) + width * (len(rows) - 1) / 2, kinds, rotation=20, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("pairwise accuracy")
    ax.legend(fontsize=7, ncol=len(rows))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(payload: dict) -> str:
    """verify.md: the accuracy table (rows verifiers, columns overall and kinds)."""
    rows = payload["rows"]
    kinds = sorted({k for row in rows.values() for k in row["by_kind"]})
    stage2 = (payload.get("model") or {}).get("stage2")
    lines = ["## Physics verifier: violation pairs" + (f", stage-2 model `{stage2}`" if stage2 else ""), "",
             (f"{payload['pairs']} pairs; pairwise accuracy = share of pairs where the plausible clip scores higher "
             "(ties count half); 95 % bootstrap interval over pairs."), "",
             "| verifier | overall | 95 % CI | " + " | ".join(kinds) + " |",
             "|---|---|---|" + "---|" * len(kinds)]
    for name, row in rows.items():
        lo, hi = row["ci95"]
        lines.append(f"| {name} | {row['overall']:.3f} | {lo:.2f}-{hi:.2f} | "
                     + " | ".join(f"{row['by_kind'][k]:.2f}" for k in kinds) + " |")
    seen = payload.get("heads_perception") or {}
    if "depth_moving_abs_rel" in seen:
        lines += ["", ("The heads on the plausible clips (ground truth, for this report only): depth AbsRel "
                       f"{seen['depth_abs_rel']:.3f}, on moving pixels {seen['depth_moving_abs_rel']:.3f} (per-clip "
                       f"median depth {seen['median_depth_moving_abs_rel']:.3f}); flow EPE on moving pixels "
                       f"{seen['flow_epe_moving']:.2f} px (zero flow {seen['zero_flow_epe_moving']:.2f}).")]
    if "moving_distance_ratio" in seen:
        lines += ["", (f"On moving pixels the heads' distance is {seen['moving_distance_ratio']:.2f}x the truth (middle "
                       f"half {seen['moving_distance_ratio_q25']:.2f}-{seen['moving_distance_ratio_q75']:.2f}x) and "
                       f"changes by {100 * seen['moving_distance_jitter']:.1f} % from frame to frame along the true "
                       f"tracks (p90 {100 * seen['moving_distance_jitter_p90']:.1f} %). The rule measures g on a "
                       f"body's track, so it needs that distance within about {SCALE_TOLERANCE:.0%} and steady to "
                       f"about {JITTER_TOLERANCE:.0%} a frame (docs/evaluation.md).")]
    if payload["default_intrinsics"]:
        lines += ["", f"{len(payload['default_intrinsics'])} clip(s) had no scene.json: default intrinsics."]
    return "\n".join(lines) + "\n"


def run_verify(config: VerifyConfig, loaded=None) -> dict:
    """Score every clip of the manifest, write verify.json, verify.md and the plot into config.out;
    ``loaded`` as in ``score_clips``."""
    unknown = sorted(set(config.verifiers) - set(VERIFIERS) - set(DIAGNOSTICS))
    if unknown:
        raise EvaluationError(f"unknown verifier(s) {', '.join(unknown)}; known: {', '.join(VERIFIERS + DIAGNOSTICS)}")
    started = time.perf_counter()
    pairs = read_pairs(config.pairs, config.root)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    scores, defaults, perception = score_clips(config, pairs, out, loaded)
    rows = {name: accuracy_row(pairs, {v: s[name]["score"] for v, s in scores.items()}) for name in config.verifiers}
    payload = {"rows": rows, "pairs": len(pairs), "kinds": {k: sum(p.kind == k for p in pairs) for k in
                                                             sorted({p.kind for p in pairs})},
               "default_intrinsics": defaults, "heads_perception": perception, "clips": scores,
               "model": {"stage1": config.stage1, "stage2": config.stage2 or None},
               "manifest": [p.__dict__ for p in pairs], "seconds": time.perf_counter() - started}
    text = json.dumps(ck.finite(payload), indent=2, default=float)
    atomic_write(out / "verify.json", lambda tmp: Path(tmp).write_text(text))
    (out / "verify.md").write_text(markdown(payload))
    plot(rows, out / "verify_by_kind.png")
    return payload
