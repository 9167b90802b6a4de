"""heads.compile and heads.channels_last (runtime-only options): both train to the default run's
weights, with the same parameter names in checkpoints and the export (compile with aot_eager:
the wiring, without a C++ compiler)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from stages.trainer import ConfigError, load_config
from stages.stage1 import Stage1Config
from tests.helpers import DEMO, overrides, run_stage1, run_two_process_stage1


def test_compiled_heads_train_like_eager_ones(generated_dataset, tmp_path):
    root, csv = generated_dataset
    steps = {"optim.max_steps": 3, "data.window.supervised_frames": 3, "run.val_max_windows": 1}
    run_stage1(overrides(root, csv, tmp_path / "eager", tmp_path / "cache", **steps))
    run_stage1(overrides(root, csv, tmp_path / "compiled", tmp_path / "cache", **steps,
                         **{"heads.compile": "default", "heads.compile_backend": "aot_eager"}))
    eager = load_file(tmp_path / "eager" / "final" / "heads.safetensors")
    compiled = load_file(tmp_path / "compiled" / "final" / "heads.safetensors")
    assert eager.keys() == compiled.keys() and not any("_orig_mod" in key for key in compiled)
    moved = load_file(tmp_path / "eager" / "checkpoint-2" / "trainable.safetensors")
    assert not any("_orig_mod" in key for key in moved)
    for key in eager:
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-4, atol=1e-5, msg=key)
    validation = [json.loads((tmp_path / run / "final" / "metrics.json").read_text())["validation"]
                  for run in ("eager", "compiled")]
    assert validation[0]["flow_epe_moving"] == pytest.approx(validation[1]["flow_epe_moving"], rel=1e-4)


def test_compiled_heads_under_ddp_train_like_eager_ones(generated_dataset, tmp_path):
    """The compiled pair inside accelerate's DDP wrapper: gradients still reach every rank's
    all-reduce (two CPU processes over gloo; compiled with aot_eager)."""
    root, csv = generated_dataset
    compiled = {"heads.compile": "default", "heads.compile_backend": "aot_eager"}
    for name, extra in (("eager", {}), ("compiled", compiled)):
        run_two_process_stage1(overrides(root, csv, tmp_path / name, tmp_path / "cache", **{"optim.max_steps": 3},
                                         **extra), port=29531)
    eager = load_file(tmp_path / "eager" / "final" / "heads.safetensors")
    exported = load_file(tmp_path / "compiled" / "final" / "heads.safetensors")
    assert eager.keys() == exported.keys()
    for key in eager:
        torch.testing.assert_close(exported[key], eager[key], rtol=1e-4, atol=1e-5, msg=key)


def test_an_unknown_compile_mode_is_refused():
    with pytest.raises(ConfigError, match="compile must be one of"):
        load_config(Stage1Config, DEMO, ["heads.compile=fast"])


def test_channels_last_heads_train_checkpoint_and_export_like_default_ones(generated_dataset, tmp_path):
    """The TI2V-5B recipe turns channels_last on: its weights must still save (safetensors needs
    contiguous tensors), resume and export like the default layout's."""
    root, csv = generated_dataset
    # Without the demo's whole-body step: it makes per-pixel choices at thresholds of the flow
    # estimate, which the two layouts round differently (~1e-6), so a pixel may flip and the runs
    # part; the TI2V-5B recipe, where channels_last is on, leaves the step off.
    steps = {"optim.max_steps": 4, "data.window.supervised_frames": 3, "run.val_max_windows": 1,
             "heads.rgb_body_reach": 0}
    run_stage1(overrides(root, csv, tmp_path / "default", tmp_path / "cache", **steps))
    nhwc = overrides(root, csv, tmp_path / "nhwc", tmp_path / "cache", **steps, **{"heads.channels_last": "true"})
    default = load_file(tmp_path / "default" / "final" / "heads.safetensors")
    for attempt in ("fresh", "resumed from checkpoint-2"):
        run_stage1(nhwc)
        exported = load_file(tmp_path / "nhwc" / "final" / "heads.safetensors")
        assert default.keys() == exported.keys()
        for key in default:
            torch.testing.assert_close(exported[key], default[key], rtol=1e-4, atol=1e-5, msg=f"{attempt}: {key}")
        shutil.rmtree(tmp_path / "nhwc" / "checkpoint-4")  # the rerun resumes from checkpoint-2
        shutil.rmtree(tmp_path / "nhwc" / "final")
