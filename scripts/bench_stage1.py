"""Stage-1 step cost, online path (backbone every step) vs cached path (features from disk).

    python scripts/bench_stage1.py [--steps 10] [section.field=value ...]

Both paths run the same config (default: the demo recipe; on a clone that has not run the demo,
one generated scene per family in a temp dir) in fresh processes, so peak memory is per path.
Printed per path: windows/s and supervised frames/s (windows x their supervised frames: all
of them, or data.window.supervised_frames), the per-step breakdown (data loading, VAE/text encoding,
backbone, heads forward+backward, optimizer), peak memory, then the step-time ratio.  On the
cached path the backbone, VAE and text encoder must cost nothing per step: the share of step
time spent in the heads (forward, backward and their optimizer step) and target loading is
printed with PASS/FAIL (>= 90 %; exit 1 on FAIL).
The 5B-geometry numbers on a GPU come from scripts/gpu_check.sh (random weights).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PHASES = ("data", "encode", "backbone", "heads_fwd_bwd", "optimizer")


def measure(path: str, steps: int, warmup: int, overrides: list[str]) -> dict:
    """Run ``warmup + steps`` optimizer steps of one path in this process; per-step ms by phase."""
    import torch

    from stages.stage1 import Stage1Config, build_stage1
    from stages.trainer import load_config
    from stages.trainer.backend import make_accelerator
    from stages.trainer.loop import batch_stream, optimizer_step

    config = load_config(Stage1Config, REPO / "stages/configs/stage1_demo.toml",
                         [*overrides, f"features.mode={path}", "run.val_split=", "optim.max_steps=100000"])
    started = time.perf_counter()
    stage = build_stage1(config, make_accelerator())
    setup_s = time.perf_counter() - started
    run, stream = stage.run, batch_stream(stage.run)
    timers = [run.timer] + ([stage.source.timer] if stage.source is not None else [])
    for i in range(warmup + steps):
        if i == warmup:
            for timer in timers:  # off in training: timing syncs the GPU at every phase boundary
                timer.enabled = True
            started = time.perf_counter()
        optimizer_step(run, stream, stage.loss_fn, config.optim)
    wall = time.perf_counter() - started
    timings = dict(run.timer.totals)
    inner = dict(stage.source.timer.totals) if stage.source is not None else {}
    per_step = {
        "data": timings.get("data", 0.0), "encode": inner.get("encode", 0.0), "backbone": inner.get("backbone", 0.0),
        "heads_fwd_bwd": timings.get("forward_backward", 0.0) - sum(inner.values()),
        "optimizer": timings.get("optimizer", 0.0),
    }
    samples = steps * config.run.batch_size * config.optim.grad_accum
    supervised = samples * (config.data.window.supervised_frames or config.data.window.num_frames)
    device = run.accelerator.device
    peak = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    return {"path": path, "setup_s": setup_s, "step_ms": 1000 * wall / steps, "samples_per_s": samples / wall,
            "supervised_frames_per_s": supervised / wall,
            "phases_ms": {k: 1000 * v / steps for k, v in per_step.items()}, "peak_gib": peak,
            "peak_kind": "cuda allocated" if device.type == "cuda" else "process max RSS"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--path", choices=("online", "cached"), help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    args, overrides = parser.parse_known_args(argv)
    if args.path:
        Path(args.result_file).write_text(json.dumps(measure(args.path, args.steps, args.warmup, overrides)))
        return 0
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [*overrides, *demo_data_if_missing(overrides, Path(tmp))]
        for path in ("online", "cached"):
            out = Path(tmp) / f"{path}.json"
            subprocess.run([sys.executable, __file__, "--path", path, "--result-file", str(out), "--steps",
                            str(args.steps), "--warmup", str(args.warmup), *overrides], check=True, cwd=REPO)
            results[path] = json.loads(out.read_text())
    return report(results)


def demo_data_if_missing(overrides: list[str], tmp: Path) -> list[str]:
    """On a clone that has not run the demo yet, a small generated data set in ``tmp`` (one scene
    per family: the step cost does not depend on how many there are) and the overrides naming it."""
    from stages.stage1 import Stage1Config
    from stages.trainer import load_config

    config = load_config(Stage1Config, REPO / "stages/configs/stage1_demo.toml", overrides)
    if (REPO / config.data.metadata).is_file():
        return []
    root, csv = tmp / "scenes", tmp / "meta.csv"
    print(f"bench_stage1.py: {config.data.metadata} not found; generating one demo scene per family in a temp "
          "dir (bash stages/stage1_heads.sh makes the demo's data set)", file=sys.stderr)
    subprocess.run([sys.executable, str(REPO / "scripts/generate_scenes.py"), "--out", str(root), "--preset", "demo",
                    "--scenes-per-family", "1", "--workers", "2", "--log-level", "WARNING"], check=True, cwd=REPO)
    subprocess.run([sys.executable, str(REPO / "scripts/make_metadata.py"), str(root), "--out", str(csv)], check=True,
                   cwd=REPO)
    return [f"data.root={root}", f"data.metadata={csv}"]


def report(results: dict[str, dict]) -> int:
    print(f"{'path':<8}{'step ms':>9}{'windows/s':>11}{'sup.frames/s':>14}  " + "".join(f"{p:>14}" for p in PHASES)
          + f"{'peak GiB':>10}")
    for path, r in results.items():
        phases = "".join(f"{r['phases_ms'][p]:>14.1f}" for p in PHASES)
        print(f"{path:<8}{r['step_ms']:>9.1f}{r['samples_per_s']:>11.2f}{r['supervised_frames_per_s']:>14.1f}  "
              f"{phases}{r['peak_gib']:>10.2f}")
    cached = results["cached"]
    phases = cached["phases_ms"]
    # The heads' work is their forward, backward and their own AdamW step; what must cost nothing
    # per step on the cached path is the frozen backbone, the VAE and the text encoder.
    heads_and_targets = phases["heads_fwd_bwd"] + phases["optimizer"] + phases["data"]
    share = heads_and_targets / max(sum(phases.values()), 1e-9)
    print(f"online/cached step-time ratio: {results['online']['step_ms'] / cached['step_ms']:.2f}x "
          f"(peak memory: {cached['peak_kind']})")
    verdict = "PASS" if share >= 0.9 else "FAIL (below 90%)"
    print(f"cached path: {share:.1%} of step time in the heads (forward, backward, optimizer "
          f"{phases['optimizer']:.1f} ms) and target loading; backbone/VAE/text "
          f"{phases['backbone'] + phases['encode']:.1f} ms/step: {verdict}")
    return 0 if share >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
