"""DeepSpeed ZeRO-2 through the shipped config and the real launcher, in one process and in two
(two ZeRO partitions, over gloo): same weights as the DDP path, exact resume, the NaN guard, and
the configurations that are refused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import DEMO, DEMO2, overrides, stage2_args

REPO = Path(__file__).resolve().parents[1]
ZERO2 = REPO / "stages/configs/accelerate_zero2.yaml"
STEPS = {"optim.max_steps": 4, "optim.grad_accum": 2, "checkpoint.every_steps": 2}


def launcher(tmp_path: Path, dataset, out: Path, args: list[str], num_gpus: int = 1, config: Path | None = ZERO2,
             script: str = "stage1_heads.sh", **env_extra: str) -> subprocess.CompletedProcess:
    """A stage launcher as a user runs it; one thread, so runs compare without summation-order noise
    (AdamW turns noise in near-zero gradients into lr-sized weight differences)."""
    root, csv = dataset
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DATA_ROOT": str(root), "METADATA": str(csv), "OUTPUT_DIR": str(out),
           "CACHE_DIR": str(tmp_path / "cache"), "NUM_GPUS": str(num_gpus), "MIXED_PRECISION": "no",
           "ACCELERATE_CONFIG": str(config or ""), **env_extra}
    return subprocess.run(["bash", str(REPO / "stages" / script), *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=600)


def launch_script(script: Path, config: Path, args: list[str], accelerate_config: Path | None = ZERO2,
                  precision: str = "bf16") -> subprocess.CompletedProcess:
    """``script`` (a patched stage entry point) through ``accelerate launch`` in one process."""
    config_file = ["--config_file", str(accelerate_config)] if accelerate_config else []
    command = [sys.executable, "-m", "accelerate.commands.launch", *config_file, "--num_processes", "1",
               "--mixed_precision", precision, "--dynamo_backend", "no", str(script), "--config", str(config), *args]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=600, check=False)


def tensors(run: Path, step: int, group: str) -> dict[str, torch.Tensor]:
    return load_file(run / f"checkpoint-{step}" / f"{group}.safetensors")


def test_zero2_matches_the_ddp_path_and_resumes_exactly(generated_dataset, tmp_path):
    root, csv = generated_dataset
    args = overrides(root, csv, tmp_path / "ds", tmp_path / "cache", **STEPS)
    proc = launcher(tmp_path, generated_dataset, tmp_path / "ds", args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "DeepSpeed ZeRO-2: micro-batch 1, accumulation 2" in proc.stderr, "the run must really go through DeepSpeed"

    # Same arithmetic as the DDP path: accumulation boundary, loss scale, clipping and schedule.
    proc = launcher(tmp_path, generated_dataset, tmp_path / "ddp",
                    overrides(root, csv, tmp_path / "ddp", tmp_path / "cache", **STEPS), config=None)
    assert proc.returncode == 0 and "DeepSpeed" not in proc.stderr, proc.stderr[-3000:]
    ds, ddp = tensors(tmp_path / "ds", 4, "trainable"), tensors(tmp_path / "ddp", 4, "trainable")
    assert ds.keys() == ddp.keys()
    # Summation order differs between the paths, and AdamW turns noise in near-zero gradients into
    # weight noise: 2.6e-5 on one GroupNorm weight at step 4 on some CPUs (the code of the previous,
    # passing, run fails there too). A wrong accumulation boundary, loss scale or clip moves weights
    # by about the learning rate (1e-3), ten times this tolerance; the weights move by more than
    # five times it between checkpoints (checked below).
    for key in ds:
        torch.testing.assert_close(ds[key], ddp[key], rtol=1e-4, atol=1e-4, msg=key)
    moved = max(float((tensors(tmp_path / "ds", 2, "trainable")[k] - ds[k]).abs().max()) for k in ds)
    assert moved > 5e-4, "the weights must change between checkpoints for the comparison to mean anything"

    # checkpoint.init_from: ZeRO's fp32 master weights must follow the loaded module weights, or
    # the first step writes the fresh initialisation back (lr too small to move anything).
    init_args = overrides(root, csv, tmp_path / "init", tmp_path / "cache", **{
        **STEPS, "optim.lr": 1e-20, "checkpoint.init_from": tmp_path / "ds" / "checkpoint-2"})
    proc = launcher(tmp_path, generated_dataset, tmp_path / "init", init_args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    start, end = tensors(tmp_path / "ds", 2, "trainable"), tensors(tmp_path / "init", 4, "trainable")
    for key in start:
        torch.testing.assert_close(end[key], start[key], rtol=0, atol=1e-6, msg=key)

    # Killed after checkpoint-2: the ZeRO partition state (fp32 master, AdamW moments) restores exactly.
    shutil.copytree(tmp_path / "ds", tmp_path / "resumed", ignore=shutil.ignore_patterns("checkpoint-4", "final"))
    proc = launcher(tmp_path, generated_dataset, tmp_path / "resumed", overrides(root, csv, tmp_path / "resumed",
                                                                               tmp_path / "cache", **STEPS))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stderr
    for group in ("trainable", "ema"):
        a, b = tensors(tmp_path / "ds", 4, group), tensors(tmp_path / "resumed", 4, group)
        for key in a:
            assert torch.equal(a[key], b[key]), (group, key)


def test_zero2_stage2_lora_matches_the_ddp_path(generated_dataset, stage1_heads, tmp_path):
    """Stage 2 wraps the whole DiT (frozen base, LoRA, heads) in the engine; LoRA must train alike."""
    runs = {}
    for name, config in (("ds", ZERO2), ("ddp", None)):
        args = stage2_args(generated_dataset, stage1_heads, tmp_path / name, **{"optim.grad_accum": 2})
        proc = launcher(tmp_path, generated_dataset, tmp_path / name, args, config=config, script="stage2_lora.sh",
                        STAGE1_DIR=str(stage1_heads))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert ("DeepSpeed ZeRO-2" in proc.stderr) is (config is not None)
        runs[name] = tensors(tmp_path / name, 4, "trainable")
    assert runs["ds"].keys() == runs["ddp"].keys() and any("lora_" in key for key in runs["ds"])
    for key in runs["ds"]:
        torch.testing.assert_close(runs["ds"][key], runs["ddp"][key], rtol=1e-4, atol=1e-5, msg=key)


BF16_BASE = """
import sys
import torch
from stages import features
from stages.trainer import runner
features.compute_dtype = lambda config, device: torch.bfloat16  # what a GPU run holds the frozen base in
real_train = runner.train
def train(stage):
    dtypes = sorted({(p.requires_grad, str(p.dtype)) for p in stage.run.unwrapped.parameters()})
    print("parameter dtypes", dtypes, flush=True)
    return real_train(stage)
runner.train = train
from stages.stage2 import main
runner.run_script(main)
"""


def test_zero2_matches_ddp_under_bf16_autocast_with_a_bf16_base(generated_dataset, stage1_heads, tmp_path):
    """A GPU run: frozen bf16 base, fp32 LoRA and heads, bf16 autocast.  The ZeRO path once handed
    the losses bf16 model outputs (accelerate upcasts them only on the DDP path): 1.8e-3 apart
    after 4 steps, the first loss already different; and its probes and validation, which call
    the module outside the loop, ran without autocast."""
    script = tmp_path / "bf16_stage2.py"
    script.write_text(BF16_BASE)
    runs, evaluated = {}, {}
    for name, accelerate_config in (("ds", ZERO2), ("ddp", None)):
        # One micro-batch per step: with two, the paths part at step 2 (identical losses, grad norms
        # 7e-5 apart, then Adam spreads it; see the xfail test below) once the physics terms are
        # judged on every ground-truth pixel; this test is about precision handling.
        args = stage2_args(generated_dataset, stage1_heads, tmp_path / name,
                           **{"optim.grad_accum": 1, "run.val_split": "val", "run.val_max_windows": 2,
                              "objective.fm_weighting": "uniform"})
        proc = launch_script(script, DEMO2, args, accelerate_config)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "parameter dtypes [(False, 'torch.bfloat16'), (True, 'torch.float32')]" in proc.stdout, proc.stdout
        runs[name] = tensors(tmp_path / name, 4, "trainable")
        terms = json.loads((tmp_path / name / "final" / "terms.json").read_text())
        validation = json.loads((tmp_path / name / "final" / "metrics.json").read_text())["validation"]
        evaluated[name] = {**{f"start/{k}": v for k, v in terms["start"].items()}, **validation}
    for key in runs["ds"]:
        torch.testing.assert_close(runs["ds"][key], runs["ddp"][key], rtol=1e-4, atol=1e-5, msg=key)
    assert evaluated["ds"].keys() == evaluated["ddp"].keys() and "flow_epe_moving" in evaluated["ds"]
    for key, value in evaluated["ds"].items():
        assert value == pytest.approx(evaluated["ddp"][key], rel=1e-5, abs=1e-7, nan_ok=True), key


@pytest.mark.xfail(strict=False, reason="open: under a bf16 base with the bell-weighted flow-matching loss and "
                   "grad_accum 2, ZeRO-2's step-2 update differed from DDP's on the one-look test data (identical "
                   "losses and grad norms at steps 1-2, 0.5% apart in loss at step 3); on the data with looks it "
                   "agrees, so the gap depends on the windows drawn; with grad_accum 1 they agree. Since the physics terms "
                   "are judged on every ground-truth pixel, uniform weights with grad_accum 2 part the same way (grad "
                   "norms 7e-5 apart at step 2, weights 1e-3 apart at step 4)")
def test_zero2_matches_ddp_with_the_bell_weighted_loss_and_accumulation(generated_dataset, stage1_heads, tmp_path):
    """Recorded so that whoever finds the cause sees this test pass everywhere (non-strict: data-dependent)."""
    script = tmp_path / "bf16_stage2.py"
    script.write_text(BF16_BASE)
    losses = {}
    for name, accelerate_config in (("ds", ZERO2), ("ddp", None)):
        args = stage2_args(generated_dataset, stage1_heads, tmp_path / name,
                           **{"optim.grad_accum": 2, "run.val_split": "", "objective.fm_weighting": "bell"})
        proc = launch_script(script, DEMO2, args, accelerate_config)
        assert proc.returncode == 0, proc.stderr[-3000:]
        records = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        losses[name] = [r["loss"] for r in records if "loss" in r]
    assert len(losses["ds"]) == 4 and losses["ds"] == pytest.approx(losses["ddp"], rel=1e-5)


NAN_ON_SECOND_LOSS = """
import sys
from heads import losses
real, calls = losses.HeadLoss.__call__, {"n": 0}
def poisoned(self, *args, **kwargs):
    calls["n"] += 1
    loss, metrics = real(self, *args, **kwargs)
    return (loss * float("nan") if calls["n"] == 2 else loss), metrics
losses.HeadLoss.__call__ = poisoned
from stages.stage1 import main
main()
"""


def test_zero2_skips_a_non_finite_step_under_bf16_autocast(generated_dataset, tmp_path):
    root, csv = generated_dataset
    script = tmp_path / "nan_stage1.py"
    script.write_text(NAN_ON_SECOND_LOSS)
    proc = launch_script(script, DEMO, overrides(root, csv, tmp_path / "nan", tmp_path / "cache",
                                                 **{"optim.max_steps": 3}))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "autocast torch.bfloat16" in proc.stderr
    payload = json.loads((tmp_path / "nan" / "final" / "metrics.json").read_text())
    # DeepSpeed itself dropped the poisoned step (ZeroBackend.discard_gradients raises otherwise).
    assert payload["skipped_steps"]["total_skipped"] == 1 and payload["step"] == 3
    heads = load_file(tmp_path / "nan" / "final" / "heads.safetensors")
    assert all(torch.isfinite(t).all() for t in heads.values())
    assert all(t.dtype == torch.float32 for t in heads.values()), "weights stay fp32 under autocast"


def test_zero2_over_two_processes_matches_ddp_and_resumes_exactly(generated_dataset, tmp_path):
    """Two ranks, two ZeRO partitions: what a multi-GPU run does, over gloo.  accelerate once
    counted such a CPU launch as one process (every rank training alone on all the data), and
    --multi_gpu once overrode the config file and ran plain DDP."""
    root, csv = generated_dataset
    runs = {}
    for name, config in (("ds", ZERO2), ("ddp", None)):
        proc = launcher(tmp_path, generated_dataset, tmp_path / name,
                        overrides(root, csv, tmp_path / name, tmp_path / "cache", **STEPS), num_gpus=2, config=config)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "process 1 of 2" in proc.stderr and ("DeepSpeed ZeRO-2" in proc.stderr) is (config is not None)
        runs[name] = tensors(tmp_path / name, 4, "trainable")
    # Reduction order differs (ZeRO's reduce-scatter vs DDP's buckets) and AdamW turns that noise in
    # near-zero gradients into lr-sized steps for a few values: measured 5e-5 at most, median 7e-9.
    # Ranks training on the wrong data (each alone, or both on the same windows) differ by ~1e-3.
    gaps = sorted(float((runs["ds"][k] - runs["ddp"][k]).abs().max()) for k in runs["ds"])
    assert gaps[-1] < 5e-4 and gaps[len(gaps) // 2] < 1e-6, (gaps[-1], gaps[len(gaps) // 2])
    state = torch.load(tmp_path / "ds" / "checkpoint-4" / "state.pt", weights_only=True)
    assert len(state["optimizer"]) == 2, "one ZeRO partition per rank"

    # Killed after checkpoint-2: both partitions restore, and the rerun ends bit-identical.
    shutil.copytree(tmp_path / "ds", tmp_path / "resumed", ignore=shutil.ignore_patterns("checkpoint-4", "final"))
    proc = launcher(tmp_path, generated_dataset, tmp_path / "resumed", overrides(
        root, csv, tmp_path / "resumed", tmp_path / "cache", **STEPS), num_gpus=2)
    assert proc.returncode == 0 and "resumed from" in proc.stderr, proc.stderr[-3000:]
    for group in ("trainable", "ema"):
        a, b = tensors(tmp_path / "ds", 4, group), tensors(tmp_path / "resumed", 4, group)
        assert all(torch.equal(a[key], b[key]) for key in a), group

    # The two partitions cannot resume in one process: a clear refusal, not a silent half state.
    shutil.copytree(tmp_path / "ds", tmp_path / "one", ignore=shutil.ignore_patterns("checkpoint-4", "final"))
    proc = launcher(tmp_path, generated_dataset, tmp_path / "one",
                    overrides(root, csv, tmp_path / "one", tmp_path / "cache", **STEPS))
    assert proc.returncode != 0
    assert "has 2 partitions but this run has 1: resume with the same number of processes" in proc.stderr, \
        proc.stderr[-3000:]


def test_a_deepspeed_environment_without_a_launcher_is_one_process():
    """The gloo backend is named only under a launcher: without one there is no process group to
    count (naming it anyway crashed accelerate looking for one)."""
    code = "from stages.trainer.backend import make_accelerator; a = make_accelerator(); print(a.num_processes, a.distributed_type)"
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**env, "ACCELERATE_USE_DEEPSPEED": "true", "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["1", "DistributedType.DEEPSPEED"]


def fake_accelerator(ds_config: dict, processes: int = 4) -> SimpleNamespace:
    plugin = SimpleNamespace(deepspeed_config=ds_config)
    return SimpleNamespace(distributed_type="DistributedType.DEEPSPEED", num_processes=processes,
                           state=SimpleNamespace(deepspeed_plugin=plugin))


def test_configure_writes_the_recipe_and_keeps_fp32_weights():
    from stages.trainer import backend as zero

    ds = {"zero_optimization": {"stage": 2}, "bf16": {"enabled": True}, "gradient_accumulation_steps": 1,
          "train_micro_batch_size_per_gpu": "auto"}
    assert zero.configure(fake_accelerator(ds), batch_size=2, grad_accum=8, grad_clip=0.5) == torch.bfloat16
    assert ds["bf16"] == {"enabled": False}
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"], ds["train_batch_size"],
            ds["gradient_clipping"]) == (2, 8, 64, 0.5)
    plain = {"zero_optimization": {"stage": 1}}
    assert zero.configure(fake_accelerator(plain), 1, 1, 1.0) is None


@pytest.mark.parametrize("ds, message", [
    ({"zero_optimization": {"stage": 3}}, "ZeRO stage 3 is not supported"),
    ({"zero_optimization": {"stage": 0}}, "ZeRO stage 0 is not supported"),
    ({"zero_optimization": {"stage": 2}, "fp16": {"enabled": True}}, "fp16 is not supported"),
])
def test_configure_refuses_what_would_train_wrongly(ds, message):
    from stages.trainer import backend as zero

    with pytest.raises(ValueError, match=message):
        zero.configure(fake_accelerator(ds), 1, 1, 1.0)
