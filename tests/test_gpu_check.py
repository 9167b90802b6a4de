"""The GPU check's CPU path: every item runs on the tiny preset and reports its numbers, so
the first GPU run is the first run of tested code, not of new code."""

from __future__ import annotations

import json

import pytest
import torch

from scripts import gpu_check


@pytest.fixture(scope="module")
def cpu_args():
    return gpu_check.parse(["--device", "cpu", "--quick"])


def _lora_params(dit: torch.nn.Module, rank: int) -> int:
    """rank * (in + out) for every Linear whose dotted name ends in one of the LoRA targets."""
    from world_model.lora import DEFAULT_LORA_TARGETS

    return sum(rank * (m.in_features + m.out_features) for name, m in dit.named_modules()
               if isinstance(m, torch.nn.Linear) and any(name == t or name.endswith("." + t) for t in DEFAULT_LORA_TARGETS))


@pytest.mark.parametrize("name", gpu_check.ITEMS)
def test_every_item_runs_on_cpu_and_reports_its_settings(cpu_args, name):
    from world_model.flops import dit_forward_flops, dit_train_step_flops
    from world_model.models import build_dit, count_parameters
    from world_model.presets import get_preset

    assert (cpu_args.preset, cpu_args.frames, cpu_args.height, cpu_args.width) == ("tiny", 9, 64, 64)
    result = gpu_check.run_item(name, cpu_args)
    if name == "dit_forward":
        # 9x64x64 -> latents (3, 4, 4) -> 2x2 patches: 3 x 2 x 2 tokens; FLOPs from the formula, and
        # TFLOP/s from FLOPs and the median time (no bf16 peak on a CPU, so no MFU).
        assert result["preset"] == "tiny" and result["tokens"] == 3 * 2 * 2 and result["median_s"] > 0
        assert result["flops"] == dit_forward_flops("tiny", 9, 64, 64)
        assert result["params"] == count_parameters(build_dit("tiny"))
        assert result["tflops"] == pytest.approx(result["flops"] / result["median_s"] / 1e12)
        assert result["mfu"] is None and result["peak_tflops"] is None
    elif name == "dit_forward_variants":
        rows = {v["name"]: v for v in result["variants"]}
        # On a CPU torch's SDPA has its flash and math kernels; cuDNN and memory-efficient cannot run
        # there and must say so rather than fall back to another kernel behind the name.
        assert rows["sdpa cudnn"]["status"] == rows["sdpa efficient"]["status"] == "unavailable"
        assert "backend" in rows["sdpa cudnn"]["error"].lower()
        for name_ok in ("sdpa, torch's choice", "sdpa flash", "sdpa math", "sdpa, blocks compiled (aot_eager)"):
            row = rows[name_ok]
            assert row["status"] == "ok" and row["median_s"] > 0 and row["first_s"] > 0, row
            assert row["max_abs_diff"] <= 1e-4 * max(1.0, row["reference_abs_max"]), row
        assert result["best"] in rows and rows[result["best"]]["median_s"] == result["best_median_s"]
        import torch.backends.cuda as switches
        assert switches.flash_sdp_enabled() and switches.math_sdp_enabled(), "kernel choice must be reset"
    elif name == "stage1_step":
        assert result["online_backbone_ms"] > 0 and result["cached_read_features_ms"] > 0
        # Both paths time the trainer's own step (stages.trainer.loop.optimizer_step) and its phases.
        for path in ("online", "cached"):
            assert result[f"{path}_forward_backward_ms"] > 0 and result[f"{path}_optimizer_ms"] > 0, path
        assert result["speedup"] == pytest.approx(result["online_step_ms"] / result["cached_step_ms"])
        assert result["speedup_prefetched"] > result["speedup"], "reading ahead can only shorten the step"
    elif name == "stage1_variants":
        variants = {v["name"]: v for v in result["variants"]}
        assert len(variants) == 7 and result["backbone_ms"] > 0 and result["h2d_features_ms"] >= 0
        for v in variants.values():
            assert v["speedup"] == pytest.approx(v["online_step_ms"] / v["cached_step_ms"])
        # Fewer decoded frames can only shrink the heads' share of a step (CPU timing noise aside,
        # 8 of 9 frames is close to all, so only the bookkeeping is checked here).
        assert variants["8 frames, full-res RGB"]["supervised_frames"] == 8
        assert variants["all frames, no RGB"]["rgb_refine_stride"] == 0
        assert [v["name"] for v in variants.values() if v["channels_last"]] == ["all frames, full-res RGB, channels-last"]
        assert [v["checkpoint_chunk"] for v in variants.values() if v["checkpoint_chunk"]] == [7]
    elif name == "stage1_compiled":
        assert result["backend"] == "aot_eager" and result["forward_backward_ms"] > 0 and result["compile_s"] > 0
        assert result["max_abs_diff_vs_eager"] < 1e-4 and result["backbone_ms"] > 0
        assert result["speedup"] == pytest.approx(result["online_step_ms"] / result["cached_step_ms"])
    elif name == "prefetch":
        # Off CUDA the prefetcher copies in line, so only the bookkeeping and the checksums count here.
        assert result["intact_serial"] and result["intact_prefetched"] and result["batch_mb"] > 0
        assert result["serial_step_ms"] > 0 and result["prefetched_step_ms"] > 0 and result["copy_ms"] > 0
    elif name.startswith("stage2"):
        # Regression: 'stage2_step_no_gc' ends with '_gc' and once ran with checkpointing on.
        assert result["gradient_checkpointing"] is not name.endswith("_no_gc")
        assert result["heads_frames"] == (4 if "_subset" in name else 0)  # max(4, 9 // 4 + 1)
        assert result["lora_rank"] == 32 and result["lora_params"] == _lora_params(build_dit("tiny"), 32)
        phases = {k: v for k, v in result.items() if k in ("data_ms", "forward_backward_ms", "optimizer_ms")}
        assert len(phases) == 3 and phases["forward_backward_ms"] > 0 and phases["optimizer_ms"] > 0, result
        assert result["step_ms"] == pytest.approx(sum(phases.values()))
        # MFU counts the DiT's LoRA-step FLOPs (world_model.flops) over the step; no peak on a CPU.
        counted = dit_train_step_flops("tiny", 9, 64, 64, result["gradient_checkpointing"])["total"]
        assert result["dit_step_tflop"] == pytest.approx(counted / 1e12)
        assert result["tflops"] == pytest.approx(counted / (result["step_ms"] / 1000) / 1e12)
        assert result["mfu"] is None and result["peak_tflops"] is None
        assert result["heads_ms"] > 0 and result["heads_share"] == pytest.approx(result["heads_ms"] / result["step_ms"])
        # The timed step is stage 2's own objective: flow matching, head losses and physics terms.
        assert {"loss_fm", "loss_heads", "depth_tgm", "phys_accel", "phys_free_fall", "phys_jerk",
                "phys_warp", "phys_loss"} <= set(result["loss_terms"]), result["loss_terms"]
    elif name == "best_of_rollouts":
        # Four generations of one conditioning with the evaluation's sampler, each scored.
        assert result["n"] == 4 and result["video_shape"] == [9, 3, 64, 64] and result["steps"] == 2
        assert result["rollout_s"] > 0 and result["score_s"] > 0 and result["distinct_rollouts"] == 4
        assert result["best_of_s"] >= 4 * result["rollout_s"] * 0.5 and 0 <= result["chosen"] < 4
    else:
        assert result["tiled"] is (name == "vae_encode_tiled")
        assert result["latent_shape"] == [1, *get_preset("tiny").latent_shape(9, 64, 64)] == [1, 48, 3, 4, 4]
        assert result["median_ms"] > 0


def test_stage1_item_decodes_a_frame_subset_and_profiles(cpu_args):
    args = type(cpu_args)(**{**vars(cpu_args), "supervised_frames": 3, "profile": True})
    result = gpu_check.run_item("stage1_step", args)
    assert result["supervised_frames"] == 3 and result["cached_step_ms"] > 0
    for path in ("online", "cached"):  # three supervised frames a window, not the window's nine
        assert result[f"{path}_supervised_frames_per_s"] == pytest.approx(3 * result[f"{path}_samples_per_s"])
    profile = result["cached_profile"]
    top = profile["top"]
    assert len(top) == 15 and top[0]["self_ms"] >= top[-1]["self_ms"] > 0
    assert any("conv" in row["op"] for row in top), [row["op"] for row in top]
    assert 0 < profile["busy_ms"] and profile["wall_ms"] > 0 and profile["ops"] > 100


def test_compiled_item_takes_the_heads_variant(cpu_args):
    """The 10x question is about a variant (K decoded frames, RGB path) compiled, not only the
    default heads."""
    args = type(cpu_args)(**{**vars(cpu_args), "supervised_frames": 3, "rgb_refine_stride": 2})
    result = gpu_check.run_item("stage1_compiled", args)
    assert (result["supervised_frames"], result["rgb_refine_stride"]) == (3, 2)
    assert result["max_abs_diff_vs_eager"] < 1e-4 and result["cached_step_ms"] > 0
    no_rgb = type(cpu_args)(**{**vars(cpu_args), "no_rgb_refine": True, "channels_last": True})
    result = gpu_check.run_item("stage1_compiled", no_rgb)
    assert result["rgb_refine_stride"] == 0 and result["channels_last"] is True
    assert result["max_abs_diff_vs_eager"] < 1e-4


def test_compiling_runs_only_when_named(cpu_args):
    assert "stage1_compiled" not in cpu_args.items and "stage1_variants" in cpu_args.items
    assert gpu_check.parse(["--device", "cpu", "--items", "stage1_compiled"]).items == ["stage1_compiled"]


def test_driver_writes_the_results_file(tmp_path):
    path = gpu_check.main(["--device", "cpu", "--quick", "--items", "dit_forward", "--out-dir", str(tmp_path)])
    payload = json.loads(path.read_text())
    assert path.name.startswith("cpu-") and payload["preset"] == "tiny"
    assert payload["environment"]["torch"] and payload["results"]["dit_forward"]["status"] == "ok"


def test_stage2_item_reports_mfu_against_a_given_peak():
    """With a peak (a card the table lacks, or here a made-up CPU figure) MFU is the counted step
    FLOPs over the step time over the peak; a decoded-frame subset is what the item runs (how much
    it saves is the GPU check's measurement, not a test's: a timed comparison failed under load)."""
    from scripts.gpu_item_stage2 import item_stage2_step
    from world_model.flops import dit_train_step_flops

    common = dict(preset="tiny", device=torch.device("cpu"), frames=9, height=64, width=64, runs=1, warmup=1,
                  gradient_checkpointing=True, peak_tflops=0.5)
    full = item_stage2_step(**common)
    flops = dit_train_step_flops("tiny", 9, 64, 64, True)["total"]
    assert full["peak_tflops"] == 0.5
    assert full["mfu"] == pytest.approx(flops / (full["step_ms"] / 1000) / 0.5e12)
    subset = item_stage2_step(**common, heads_frames=2)
    assert subset["heads_frames"] == 2 and full["heads_frames"] == 0 and subset["heads_ms"] > 0
