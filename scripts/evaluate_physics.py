"""Evaluate trained heads (stage 1) and the LoRA-tuned backbone (stage 2) on held-out scenes.

    python scripts/evaluate_physics.py --stage1 runs/stage1_demo/final [--stage2 runs/stage2_demo/final] \\
        --root runs/scenes/demo --metadata metadata/demo.csv [--split holdout] [--model-dir DIR] \\
        [--out runs/eval] [--steps N --frames T --size S --seed K] [--max-scenes N]

For every scene of the split (windows from frame 0):
1. perception: the heads' depth and flow on the ground-truth window beside the baselines, per scene,
   overall, per family and per look: depth AbsRel, delta<1.25, RMSE(log) metric, scale-aligned and
   affine-aligned against the per-clip median depth (same alignment); flow EPE all/moving and outlier
   rate against zero flow and OpenCV DIS / Farneback flow on the same frames (--no-flow-baselines: off);
2. prediction: a TI2V rollout from the first frame + prompt (WanVideoPipeline; base backbone, and
   with the stage-2 LoRA fused when given, same seeds) scored against the GT video by Physics-IQ's
   spatial / spatiotemporal / weighted spatial IoU and MSE;
3. physics: depth + flow lifted to 3D on GT, on the heads' predictions and on the heads run over the
   rollout: fitted g (m/s^2) vs the scene's g, free-fall residual, rest drift (m/s);
4. Physics-IQ score per model, overall / per group / per family with a 95 % bootstrap interval over
   scenes, when every scene has a second take (generate_scenes.py --takes 2: the physical variance);
5. pass/fail heuristics: temporal coherence of rollouts, |g_fit - g| / g, heads vs baselines (depth
   scale-aligned AbsRel vs the median baseline; flow EPE moving and all vs zero flow).
Scenes of families never seen in training and unseen scenes of seen families (a family is seen when
the metadata's train split has a scene of it) are pooled and judged apart.
Writes metrics.json, report.md, plots, contact_sheet_<model>.png and a self-contained gallery.html.
Defaults for frames, stride and size come from the stage-1 run's config. Without --model-dir the
stage-1 run's backbone is used (tiny preset: random seeded weights, runs on a CPU in minutes).
"""

from __future__ import annotations

import argparse
import logging
import math

from data.errors import DataFormatError
from stages.evaluation import iq
from stages.evaluation.eval_config import EvalConfig, EvaluationError
from world_model import progress


def parse_args(argv: list[str] | None = None) -> EvalConfig:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage1", required=True, help="stage-1 export directory (heads + config.toml)")
    ap.add_argument("--stage2", default="", help="stage-2 export directory (lora.safetensors + heads/)")
    ap.add_argument("--root", required=True, help="data root holding <scene>/env_0/0/0")
    ap.add_argument("--metadata", required=True, help="metadata CSV with video,prompt,split")
    ap.add_argument("--split", default="holdout",
                    help="split to evaluate (default: holdout = the held-out families alone; test_seen = unseen "
                         "scenes of seen families)")
    ap.add_argument("--model-dir", default="", help="local Wan2.2-TI2V-5B weights (default: the stage-1 run's)")
    ap.add_argument("--out", default="runs/eval", help="output directory (default: runs/eval)")
    ap.add_argument("--cache-dir", default="runs/cache", help="latent / text-context cache (default: runs/cache)")
    ap.add_argument("--steps", type=int, default=30, help="denoising steps per rollout (default: 30)")
    ap.add_argument("--frames", type=int, default=0, help="frames per window and rollout, 1 + 4k (default: stage 1's)")
    ap.add_argument("--stride", type=int, default=0, help="simulator steps between frames (default: stage 1's)")
    ap.add_argument("--size", type=int, default=0, help="square frame size, multiple of 32 (default: stage 1's)")
    ap.add_argument("--seed", type=int, default=0, help="rollout seed of scene 0; scene i uses seed + i")
    ap.add_argument("--cfg-scale", type=float, default=5.0, help="classifier-free guidance scale (default: 5)")
    ap.add_argument("--max-scenes", type=int, default=0, help="evaluate at most N scenes (default: all)")
    ap.add_argument("--iq-downsample", type=int, default=0,
                    help="Physics-IQ comparison downsampling (default: 4 at >= 256 px, else 1)")
    ap.add_argument("--device", default="", help="torch device (default: cuda if available, else cpu)")
    ap.add_argument("--no-flow-baselines", dest="flow_baselines", action="store_false",
                    help="skip the classical flow baselines (OpenCV DIS and Farneback) beside zero flow")
    ap.add_argument("--pairs", default="",
                    help=("violation-pair manifest under --root: score the physics verifiers on it too "
                          "(with --stage2, heads and features once more with the stage-2 model)"))
    ap.add_argument("--best-of", type=int, default=1,
                    help="rollouts per scene; the verifier's most plausible is scored, the first kept beside it")
    ap.add_argument("--verifier", default="heads",
                    help="verifier choosing among --best-of rollouts: heads, features, frame_difference, random")
    ap.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    ap.add_argument("--diffsynth-progress", choices=progress.MODES, default=progress.mode(),
                    help="diffsynth's denoising and VAE bars: 'fold' draws them as transient bars under ours, "
                         "'silent' hides them (default: fold, or PWM_DIFFSYNTH_PROGRESS)")
    args = vars(ap.parse_args(argv))
    logging.basicConfig(level=args.pop("log_level").upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    progress.set_mode(args.pop("diffsynth_progress"))
    return EvalConfig(**args)


def summary(payload: dict) -> str:
    """The pass/fail lines printed at the end."""
    lines = [(f"\nevaluated {len(payload['scenes'])} scene(s) of split {payload['args']['split']!r} "
              f"-> {payload['args']['out']}")]
    for group in payload["groups"].values():
        lines.append(f"{group['holds']} ({len(group['scenes'])}):")
        for model, checks in group["verdicts"].items():
            for name, v in checks.items():
                value = v["value"]
                shown = "n/a" if value is None or math.isnan(value) else f"{value:.4g}"
                lines.append(f"  {model:<7} {name:<22} {shown:>10}  {'PASS' if v['pass'] else 'FAIL'}  ({v['rule']})")
    return "\n".join([*lines, *iq.summary_lines(payload.get("physics_iq"))])


def main(argv: list[str] | None = None) -> dict:
    try:
        config = parse_args(argv)
        from stages.evaluation import run_evaluation

        payload = run_evaluation(config)
    except (EvaluationError, DataFormatError) as error:
        raise SystemExit(f"error: {error}") from None
    print(summary(payload))
    return payload


if __name__ == "__main__":
    main()
