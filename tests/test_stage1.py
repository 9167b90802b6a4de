"""Stage 1 end to end on generated scenes: cached = online features, exact resume after SIGKILL,
two-process training, the NaN guard, clear errors, and the shipped configs."""

from __future__ import annotations

import json
from csv import DictReader
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from stages.trainer import ConfigError, NonFiniteLossError, load_config
from stages.stage1 import Stage1Config
from tests.conftest import sigkill_when_written, start_stage
from tests.helpers import DEMO, REPO, assert_perception_sheet, overrides, run_stage1, run_two_process_stage1


def test_cached_features_equal_online_features(generated_dataset, tmp_path):
    from data.dataset import SimPhysicsDataset
    from data.windows import FixedWindows
    from stages.features import FeatureCache, FeatureSource

    root, csv = generated_dataset
    config = load_config(Stage1Config, DEMO, overrides(root, csv, tmp_path / "run", tmp_path / "cache"))
    source = FeatureSource(config.backbone, torch.device("cpu"), config.features.cache_dir)
    windows = FixedWindows(SimPhysicsDataset(config.data, split="train"), per_scene=2)
    cache = FeatureCache(config.features.cache_dir, windows, source)
    assert cache.build(source) == len(windows.refs) and cache.missing() == []
    for index in (0, len(windows.refs) - 1):
        sample = windows[index]
        online = source.extract(sample["rgb"].unsqueeze(0), [sample["prompt"]])
        for cached, live in zip(cache.load(index), online):
            torch.testing.assert_close(cached.float(), live[0].to(torch.bfloat16).float(), rtol=0, atol=0)
    assert cache.build(source) == 0, "a second build must find everything cached"


def _train_subprocess(args: list[str], log: Path):
    return start_stage("stages/stage1.py", DEMO, args, log)


AUGMENTED = {"augment.brightness": 0.3, "augment.hue": 0.1, "augment.crop_scale": "0.6,1", "augment.strides": "1,2,3",
             "data.hflip_prob": 0.5, "features.views_per_window": 2, "curriculum.enabled": "true"}
"""Every augmentation, two cached views per window and the curriculum (generated scenes hold 17
frames: 5-frame windows fit at stride 3)."""


@pytest.mark.parametrize("subset", [{}, {"data.window.supervised_frames": 3}, AUGMENTED],
                         ids=["all-frames", "3-frames", "augmented-curriculum"])
def test_resume_after_sigkill_matches_an_uninterrupted_run(generated_dataset, tmp_path, subset):
    """With a frame subset, the per-epoch subset draws must resume exactly too; so must the views
    picked per epoch and the curriculum's order."""
    root, csv = generated_dataset
    cache = tmp_path / "cache"
    straight = _train_subprocess(overrides(root, csv, tmp_path / "straight", cache, **subset), tmp_path / "straight.log")
    assert straight.wait(timeout=300) == 0, (tmp_path / "straight.log").read_text()[-3000:]
    killed_args = overrides(root, csv, tmp_path / "killed", cache, **subset)
    victim = _train_subprocess(killed_args, tmp_path / "killed.log")
    marker = tmp_path / "killed" / "checkpoint-2" / "COMPLETE"
    sigkill_when_written(victim, marker, timeout=300)
    assert marker.exists() and not (tmp_path / "killed" / "final").exists(), "the kill must land mid-run"
    resumed = _train_subprocess(killed_args, tmp_path / "resumed.log")
    assert resumed.wait(timeout=300) == 0, (tmp_path / "resumed.log").read_text()[-3000:]
    assert "resumed from" in (tmp_path / "resumed.log").read_text()
    a = load_file(tmp_path / "straight" / "final" / "heads.safetensors")
    b = load_file(tmp_path / "killed" / "final" / "heads.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_online_path_trains_on_a_frame_subset_and_validates_on_all_frames(generated_dataset, tmp_path):
    """Augmented too: every augmentation is drawn per step in the online path, and the augmented
    training windows (never seen twice) leave no latents in the cache; validation's do."""
    root, csv = generated_dataset
    augmented = {k: v for k, v in AUGMENTED.items() if k != "features.views_per_window"}
    metrics = run_stage1(overrides(root, csv, tmp_path / "online", tmp_path / "cache", **{
        "features.mode": "online", "data.window.supervised_frames": 2, "optim.max_steps": 2, **augmented}))
    assert np.isfinite(metrics["flow_epe"]) and np.isfinite(metrics["depth_abs_rel"]), metrics
    lines = (tmp_path / "online" / "metrics.jsonl").read_text().splitlines()
    assert any('"loss"' in line for line in lines)
    val_windows = sum(line.rstrip().endswith(",val") for line in Path(csv).read_text().splitlines())
    assert len(list((tmp_path / "cache" / "latents").rglob("*.safetensors"))) == min(val_windows, 2)


def test_two_process_cpu_run_trains(generated_dataset, tmp_path):
    root, csv = generated_dataset
    proc = run_two_process_stage1(overrides(root, csv, tmp_path / "ddp", tmp_path / "cache", **{"optim.max_steps": 3}),
                                  port=29517)
    assert (tmp_path / "ddp" / "final" / "heads.safetensors").exists()
    # Really two processes: each step consumed one window per rank, and both ranks' RNG was saved.
    # (A launch that silently runs two independent single-process trainings fails here.)
    meta = json.loads((tmp_path / "ddp" / "checkpoint-3" / "meta.json").read_text())
    assert meta["sampler"]["position"] == 3 * 2, meta["sampler"]
    rng = torch.load(tmp_path / "ddp" / "checkpoint-3" / "rng.pt", weights_only=True)
    assert len(rng["ranks"]) == 2
    assert "process 1 of 2" in proc.stderr
    # Step lines survive the import of diffsynth (modelscope once silenced them in every multi-process run).
    assert "INFO stages.trainer.loop: step" in proc.stderr, proc.stderr[-3000:]


@pytest.mark.skipif(torch.cuda.is_available(), reason="about CPU-only launches")
def test_the_launcher_gives_a_cpu_run_every_core_and_honours_pwm_paths(generated_dataset, tmp_path):
    """accelerate launch pins CPU processes to one thread unless told otherwise; the demo (the
    README's main job) then ran on one of two cores, 1.8x slower."""
    root, csv = generated_dataset
    env = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    # Paths through their PWM_* spelling: the launcher's own path overrides must not shadow them.
    env.update(PWM_DATA__ROOT=str(root), PWM_DATA__METADATA=str(csv), PWM_RUN__OUTPUT_DIR=str(tmp_path / "run"),
               PWM_FEATURES__CACHE_DIR=str(tmp_path / "cache"), NUM_GPUS="1")
    paths = ("data.root=", "data.metadata=", "run.output_dir=", "features.cache_dir=")
    args = [a for a in overrides(root, csv, tmp_path / "run", tmp_path / "cache",
                                 **{"optim.max_steps": 1, "optim.warmup_steps": 0}) if not a.startswith(paths)]
    proc = subprocess.run(["bash", str(REPO / "stages/stage1_heads.sh"), *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"process 0 of 1 on cpu ({len(os.sched_getaffinity(0))} CPU threads)" in proc.stderr, proc.stderr[-3000:]
    assert (tmp_path / "run" / "final" / "heads.safetensors").is_file() and (tmp_path / "cache").is_dir()
    assert "samples_per_s=" in proc.stderr, "the progress bar shows the throughput"
    # The printed validation says what it is on, counted from the metadata.
    with csv.open() as handle:
        val = sum(row["split"] == "val" for row in DictReader(handle))
    expected = f"validation: unseen scenes of seen families (split val, {val} scene{'s' if val > 1 else ''})"
    assert val > 0 and expected in proc.stdout, proc.stdout[-2000:]


def test_nan_losses_are_skipped_then_stop_the_run(generated_dataset, tmp_path, monkeypatch):
    from heads import losses

    root, csv = generated_dataset
    real = losses.HeadLoss.__call__
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        calls["n"] += 1
        loss, metrics = real(self, *args, **kwargs)
        return (loss * float("nan") if calls["n"] == 2 else loss), metrics

    monkeypatch.setattr(losses.HeadLoss, "__call__", poisoned)
    run_stage1(overrides(root, csv, tmp_path / "once", tmp_path / "cache", **{"optim.max_steps": 3}))
    payload = json.loads((tmp_path / "once" / "final" / "metrics.json").read_text())
    assert payload["skipped_steps"]["total_skipped"] == 1 and payload["step"] == 3

    monkeypatch.setattr(losses.HeadLoss, "__call__", lambda self, *a, **k: (real(self, *a, **k)[0] * float("nan"), {}))
    with pytest.raises(NonFiniteLossError, match="consecutive non-finite"):
        run_stage1(overrides(root, csv, tmp_path / "always", tmp_path / "cache", **{"guard.max_consecutive_nonfinite": 3}))


@pytest.mark.parametrize("grad_clip", [1.0, 0.0], ids=["clipped", "clipping-off"])
def test_a_nan_gradient_under_a_finite_loss_is_skipped_not_applied(grad_clip, generated_dataset, tmp_path,
                                                                    monkeypatch):
    """sqrt(0 * x) * 0 is 0 forward and NaN backward: the kind of NaN a masked term can hide.  With
    clipping off the norm must still be computed, or the NaN reaches the weights."""
    from heads import losses

    root, csv = generated_dataset
    real, calls = losses.HeadLoss.__call__, {"n": 0}

    def nan_gradient(self, flow, *args, **kwargs):
        calls["n"] += 1
        loss, metrics = real(self, flow, *args, **kwargs)
        return (loss + (flow * 0).sqrt().sum() * 0 if calls["n"] == 2 else loss), metrics

    monkeypatch.setattr(losses.HeadLoss, "__call__", nan_gradient)
    run_stage1(overrides(root, csv, tmp_path / "run", tmp_path / "cache",
                         **{"optim.max_steps": 3, "optim.grad_clip": grad_clip}))
    payload = json.loads((tmp_path / "run" / "final" / "metrics.json").read_text())
    assert payload["skipped_steps"]["total_skipped"] == 1 and payload["step"] == 3
    heads = load_file(tmp_path / "run" / "final" / "heads.safetensors")
    assert all(torch.isfinite(t).all() for t in heads.values())


def test_resuming_into_another_schedule_length_is_refused(generated_dataset, tmp_path):
    """With epochs-derived totals a changed process count changes the schedule; the restored LR
    schedule would then sit at its floor for the extra steps."""
    root, csv = generated_dataset
    args = overrides(root, csv, tmp_path / "run", tmp_path / "cache", **{"optim.max_steps": 2})
    run_stage1(args)
    with pytest.raises(ConfigError, match=r"schedule has 2 optimizer steps, but this run computes 4.*max_steps=2"):
        run_stage1([*args, "optim.max_steps=4"])


def test_a_changed_config_or_a_fresh_start_in_a_used_run_dir_is_refused(generated_dataset, tmp_path):
    """Rerunning with other heads gave 186 lines of torch size mismatches and overwrote the run's
    config.toml; --resume none started a second run among the first one's checkpoints."""
    root, csv = generated_dataset
    args = overrides(root, csv, tmp_path / "run", tmp_path / "cache", **{"optim.max_steps": 2})
    run_stage1(args)
    saved_config = (tmp_path / "run" / "config.toml").read_text()
    reshaped = r"shape changed \['flow\.neck.*\(16, 64, 1, 1\) -> \(32, 64, 1, 1\).*new run.output_dir"
    with pytest.raises(ConfigError, match=reshaped):
        run_stage1([*args, "heads.features=32"])
    assert (tmp_path / "run" / "config.toml").read_text() == saved_config, "a refused resume kept the run's config"
    with pytest.raises(ConfigError, match=r"already holds checkpoints \(newest: checkpoint-2\)"):
        run_stage1([*args, "checkpoint.resume=none"])


def test_init_from_starts_a_fresh_schedule_from_another_runs_weights(generated_dataset, tmp_path):
    """The way to train a finished run longer, now that resuming into another schedule is refused."""
    root, csv = generated_dataset
    run_stage1(overrides(root, csv, tmp_path / "first", tmp_path / "cache", **{"optim.max_steps": 2}))
    source = tmp_path / "first" / "checkpoint-2"
    # A learning rate too small to move anything and an EMA that does not update within 4 steps:
    # the second run's weights and EMA are the first run's.
    run_stage1(overrides(root, csv, tmp_path / "longer", tmp_path / "cache", **{
        "optim.max_steps": 4, "optim.lr": 1e-20, "ema.update_every": 1000, "checkpoint.init_from": source}))
    meta = json.loads((tmp_path / "longer" / "checkpoint-4" / "meta.json").read_text())
    assert meta["step"] == 4 and meta["total_steps"] == 4, "a schedule of its own, from step 0"
    for group in ("trainable", "ema"):
        start = load_file(source / f"{group}.safetensors")
        end = load_file(tmp_path / "longer" / "checkpoint-4" / f"{group}.safetensors")
        for key in start:
            if key.startswith("__"):
                continue
            torch.testing.assert_close(end[key], start[key], rtol=0, atol=1e-6, msg=f"{group} {key}")
    with pytest.raises(ConfigError, match="is not a checkpoint folder"):
        run_stage1(overrides(root, csv, tmp_path / "third", tmp_path / "cache",
                             **{"checkpoint.init_from": tmp_path / "nope"}))


def test_bad_paths_and_values_fail_clearly(generated_dataset, tmp_path):
    from data.errors import DataFormatError
    from world_model.loading import WeightsError

    root, csv = generated_dataset
    with pytest.raises(DataFormatError, match="does not exist"):
        run_stage1(overrides(tmp_path / "nowhere", csv, tmp_path / "r1", tmp_path / "cache"))
    with pytest.raises(DataFormatError, match="metadata CSV does not exist"):
        run_stage1(overrides(root, tmp_path / "none.csv", tmp_path / "r2", tmp_path / "cache"))
    with pytest.raises((ConfigError, ValueError), match="multiple of 32"):
        run_stage1(overrides(root, csv, tmp_path / "r3", tmp_path / "cache", **{"data.height": 100}))
    with pytest.raises(ConfigError, match="unknown field 'learning_rate'.*Valid names: .*lr"):
        run_stage1(overrides(root, csv, tmp_path / "r4", tmp_path / "cache", **{"optim.learning_rate": 1}))
    with pytest.raises((ConfigError, ValueError), match="model_dir"):
        run_stage1(overrides(root, csv, tmp_path / "r5", tmp_path / "cache", **{"backbone.preset": "ti2v_5b"}))
    with pytest.raises(ConfigError, match=r"taps \[0, 1, 99\] must be blocks 0..3 of preset 'tiny'"):
        run_stage1(overrides(root, csv, tmp_path / "r7", tmp_path / "cache", **{"backbone.taps": "0,1,99"}))
    with pytest.raises(WeightsError, match=str(tmp_path / "no_weights")):
        run_stage1(overrides(root, csv, tmp_path / "r6", tmp_path / "cache",
                             **{"backbone.preset": "ti2v_5b", "backbone.model_dir": tmp_path / "no_weights"}))


@pytest.mark.parametrize("override, message", [
    ("optim.lr=-1", "invalid config in 'optim': lr must be a positive finite number, got -1.0"),
    ("data.root=/nonexistent/scenes", "/nonexistent/scenes: data root does not exist"),
])
def test_the_script_reports_user_errors_in_one_line(override, message, generated_dataset, tmp_path):
    """A typo in a config value is not a crash: one line naming what is wrong, exit status 2."""
    root, csv = generated_dataset
    env = {key: value for key, value in os.environ.items() if key != "PWM_TRACEBACK"}
    proc = subprocess.run([sys.executable, str(REPO / "stages/stage1.py"), "--config", str(DEMO),
                           *overrides(root, csv, tmp_path / "run", tmp_path / "cache"), override],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"stage1.py: error: {message}" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-3000:]


@pytest.mark.parametrize("processes", [1, 2])
@pytest.mark.parametrize("override, message", [
    ("optim.lr=-1", "lr must be a positive finite number"),
    ("data.metadata=missing.csv", "missing.csv: metadata CSV does not exist"),
])
def test_the_launcher_passes_a_user_error_through_unwrapped(processes, override, message, generated_dataset, tmp_path):
    """One process runs the entry point directly; several are preceded by a one-process preflight.
    Either way: the error once, no launcher traceback, status 2, nothing written."""
    root, csv = generated_dataset
    env = {**os.environ, "DATA_ROOT": str(root), "METADATA": str(csv), "OUTPUT_DIR": str(tmp_path / "run"),
           "NUM_GPUS": str(processes)}
    env.pop("PWM_TRACEBACK", None)
    proc = subprocess.run(["bash", str(REPO / "stages/stage1_heads.sh"), override], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.count("stage1.py: error:") == 1 and message in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "ChildFailedError" not in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "run").exists()


def test_preflight_checks_the_named_files_and_writes_nothing(generated_dataset, tmp_path):
    from data.errors import DataFormatError
    from world_model.loading import WeightsError

    root, csv = generated_dataset
    args = ["--preflight", *overrides(root, csv, tmp_path / "run", tmp_path / "cache")]
    assert run_stage1(args) == {}
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()
    with pytest.raises(DataFormatError, match="no rows with split 'nope'"):
        run_stage1([*args, "run.val_split=nope"])
    with pytest.raises(WeightsError, match="no_weights"):
        run_stage1([*args, "backbone.preset=ti2v_5b", f"backbone.model_dir={tmp_path / 'no_weights'}"])
    with pytest.raises(ConfigError, match="checkpoint.init_from=.*is not a checkpoint folder"):
        run_stage1([*args, f"checkpoint.init_from={tmp_path / 'nope'}"])
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint folder"):
        run_stage1([*args, "--resume", str(tmp_path / "nope")])


def _toml_leaves(table: dict, prefix: tuple[str, ...] = ()):
    for key, value in table.items():
        if isinstance(value, dict):
            yield from _toml_leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


@pytest.mark.parametrize("path", sorted((REPO / "stages/configs").glob("stage1_*.toml")), ids=lambda p: p.name)
def test_shipped_stage1_configs_parse(path):
    """Every value the file writes reaches the config unchanged (a key dropped or a section read into
    the wrong place would leave a default), and the geometry fits the backbone's token grid."""
    import tomllib

    from world_model.presets import get_preset

    # Real-weight recipes name their weights directory through the launcher (MODEL_DIR).
    config = load_config(Stage1Config, path, ["backbone.model_dir=weights/Wan2.2-TI2V-5B"])
    assert str(config.backbone.model_dir) == "weights/Wan2.2-TI2V-5B"
    leaves = list(_toml_leaves(tomllib.loads(path.read_text())))
    assert len(leaves) > 15, leaves
    for keys, written in leaves:
        value = config
        for key in keys:
            value = getattr(value, key)
        where = ".".join(keys)
        if isinstance(value, Path):
            assert value == Path(written), where
        elif isinstance(value, tuple):
            assert list(value) == written, where
        elif isinstance(written, str) and not isinstance(value, str):
            assert str(value).endswith(written) or getattr(value, "value", None) == written, (where, value)
        else:
            assert value == written and type(value) is type(written), (where, value, written)
    geometry = (config.data.window.num_frames, config.data.height, config.data.width)
    get_preset(config.backbone.preset).check_video_size(*geometry)


def test_demo_recipe_beats_the_trivial_baselines(generated_dataset, tmp_path):
    """The demo recipe (its heads, loss weights, schedule) on generated scenes, shortened: depth
    beats the per-clip median and flow beats zero flow on moving pixels on the val split."""
    root, csv = generated_dataset
    metrics = run_stage1(overrides(root, csv, tmp_path / "demo", tmp_path / "cache", **{
        "heads.features": 32, "optim.max_steps": 150, "optim.warmup_steps": 10, "checkpoint.every_steps": 1000,
        "run.val_every": 1000, "run.val_max_windows": 16, "log.every_steps": 50}))
    print({k: round(v, 4) for k, v in metrics.items()})
    assert metrics["depth_abs_rel"] < 0.5 * metrics["median_depth_abs_rel"], metrics
    assert metrics["flow_epe_moving"] < metrics["zero_flow_epe_moving"], metrics


def test_resume_alias_sets_the_checkpoint_field():
    from stages.trainer.config import expand_aliases

    assert expand_aliases(["--resume", "none", "optim.lr=1"]) == ["checkpoint.resume=none", "optim.lr=1"]
    assert expand_aliases(["--resume=runs/x/checkpoint-4"]) == ["checkpoint.resume=runs/x/checkpoint-4"]
    config = load_config(Stage1Config, DEMO, expand_aliases(["--resume", "none"]))
    assert config.checkpoint.resume == "none"


def test_validation_table_says_when_there_is_no_validation(capsys):
    from stages.model import print_validation

    print_validation({})
    assert "validation: none" in capsys.readouterr().out


def test_report_splits_are_scored_with_the_final_heads_like_validation(generated_dataset, tmp_path, capsys):
    """run.report_splits: after training, each named split is scored by the final heads exactly as
    validation would score it (a run validating on that split gives the same numbers), printed with
    what it holds, and written to final/validation.json beside the val split's table."""
    root, csv = generated_dataset
    short = {"optim.max_steps": 2, "checkpoint.every_steps": 1000, "run.val_max_windows": 3}
    run_stage1(overrides(root, csv, tmp_path / "report", tmp_path / "cache", **short,
                         **{"run.report_splits": '["holdout"]'}))
    printed = capsys.readouterr().out
    tables = json.loads((tmp_path / "report" / "final" / "validation.json").read_text())
    assert set(tables) == {"val", "holdout"}
    assert tables["holdout"]["holds"].startswith("scenes of families never seen in training (split holdout")
    assert tables["holdout"]["holds"] in printed and tables["val"]["holds"] in printed
    on_holdout = run_stage1(overrides(root, csv, tmp_path / "direct", tmp_path / "cache", **short,
                                      **{"run.val_split": "holdout"}))
    assert tables["holdout"]["metrics"] == pytest.approx(on_holdout, rel=1e-6, nan_ok=True)
    assert tables["holdout"]["metrics"] != pytest.approx(tables["val"]["metrics"], nan_ok=True)
    # Beside validation.json: one perception contact sheet per scored split, a row per window (<= SHEET_SCENES).
    from stages.stage1 import SHEET_SCENES, sheet_name

    with open(csv, newline="") as handle:
        per_split = [row["split"] for row in DictReader(handle)]
    for split in ("val", "holdout"):
        rows = min(SHEET_SCENES, short["run.val_max_windows"], per_split.count(split))
        assert_perception_sheet(tmp_path / "report" / "final" / sheet_name(split), rows, (64, 64))
    assert sorted(p.name for p in (tmp_path / "report" / "final").glob("perception_*.png")) == [
        "perception_holdout.png", "perception_val.png"]
