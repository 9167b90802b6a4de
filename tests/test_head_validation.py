"""One validation path: training validation (stages.model.validate) and the evaluation
(stages.evaluation.perception) score the same heads on the same window identically, log depth
clamped once (heads.metrics.depth_from_log), classical flow baselines included; the evaluation's
verdict on the baselines; and the printed table."""

from __future__ import annotations

import math

import pytest
import torch

from heads.metrics import (
    CLASSICAL_FLOW_LABELS,
    HEAD_METRIC_ROWS,
    LOG_DEPTH_LIMIT,
    classical_flow_key,
    depth_from_log,
)
from stages.evaluation import perception
from stages.model import build_heads, print_validation, validate
from stages.trainer.sections import HeadsConfig
from world_model.presets import get_preset

FRAMES, SIZE = 5, 64


class FarDepth(torch.nn.Module):
    """The heads with frame 1's log depth pushed 100 past its value: beyond LOG_DEPTH_LIMIT, where an
    unclamped exp overflows float32 to inf (an untrained or diverging head can do this)."""

    def __init__(self, pair: torch.nn.Module) -> None:
        super().__init__()
        self.pair = pair

    def forward(self, taps: list[torch.Tensor], rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flow, log_depth = self.pair(taps, rgb)
        return flow, log_depth + torch.tensor([0.0, 100.0, 0.0, 0.0, 0.0]).view(1, FRAMES, 1, 1)


class FixedTaps:
    """A FeatureSource stand-in: the same backbone taps whatever the input."""

    def __init__(self, taps: list[torch.Tensor]) -> None:
        self.taps = taps

    def extract(self, rgb: torch.Tensor, prompts: list[str]) -> list[torch.Tensor]:
        return self.taps


def _window(preset, seed: int) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    grid = preset.token_grid(FRAMES, SIZE, SIZE)
    taps = [torch.randn(1, preset.hidden_dim, *grid, generator=gen) for _ in preset.default_taps]
    valid = torch.rand(FRAMES, SIZE, SIZE, generator=gen) > 0.1
    sample = {"rgb": torch.rand(FRAMES, 3, SIZE, SIZE, generator=gen),
              "flow": 3 * torch.randn(FRAMES, 2, SIZE, SIZE, generator=gen), "flow_valid": valid,
              "depth": 1 + 4 * torch.rand(FRAMES, SIZE, SIZE, generator=gen), "depth_valid": valid}
    return sample, taps


def test_training_validation_and_evaluation_give_identical_metrics():
    preset = get_preset("tiny")
    torch.manual_seed(0)
    heads = FarDepth(build_heads(HeadsConfig(features=16), preset, len(preset.default_taps)))
    sample, taps = _window(preset, seed=1)
    trained = validate(heads, [{k: v[None] for k, v in sample.items()}], lambda batch: taps,
                       moving_threshold=0.5, far=100.0, flow_baselines=True)
    flow, log_depth = perception.predict(heads, FixedTaps(taps), sample["rgb"], "a prompt")
    accumulator = perception.new_accumulator(0.5, 100.0)
    perception.add([accumulator], flow, log_depth, sample, flow_baselines=True)
    evaluated = accumulator.compute()
    assert trained == evaluated
    for _, ours, base, _ in HEAD_METRIC_ROWS:
        assert math.isfinite(trained[ours]) and math.isfinite(trained[base]), (ours, trained[ours], trained[base])
        for method in CLASSICAL_FLOW_LABELS:
            key = classical_flow_key(method, ours)
            assert key is None or math.isfinite(trained[key]), key
    # Frame 1 predicts e^10 m against 1..5 m: AbsRel is dominated by it (about (e^10 - 3) / 3 / 5).
    assert trained["depth_abs_rel"] > 0.1 * math.exp(LOG_DEPTH_LIMIT) / 5


def test_log_depth_is_clamped_before_exp():
    log_depth = torch.tensor([-200.0, -1.0, 0.0, 2.0, 200.0], dtype=torch.bfloat16)
    depth = depth_from_log(log_depth)
    assert depth.dtype == torch.float32
    expected = torch.tensor([-LOG_DEPTH_LIMIT, -1.0, 0.0, 2.0, LOG_DEPTH_LIMIT]).exp()
    assert torch.equal(depth, expected)


def _overall(metrics: dict[str, float]) -> dict:
    no_physics = {"g_rel_error": 0.01}
    return {"perception": metrics, "beats_baseline": perception.beats_baseline(metrics),
            "physics_heads": no_physics, "physics_generated": no_physics,
            "coherence_generated": {"coherent_frames": 1.0}}


@pytest.mark.parametrize("flow_epe, passes", [(0.5, False), (0.05, True)])
def test_heads_beat_baselines_needs_flow_epe_on_all_pixels_too(flow_epe, passes):
    """Better than zero flow on moving pixels but worse on all pixels (zero flow: 0.1 px) fails."""
    from stages.evaluation.evaluate import _verdicts

    metrics = {"depth_scale_abs_rel": 0.1, "median_depth_scale_abs_rel": 0.2, "flow_epe_moving": 1.0,
               "zero_flow_epe_moving": 2.0, "flow_epe": flow_epe, "zero_flow_epe": 0.1}
    verdict = _verdicts(_overall(metrics))["heads_beat_baselines"]
    assert verdict["pass"] is passes
    assert "flow EPE (all)" in verdict["rule"]


@pytest.mark.parametrize("scale_aligned, metric, passes", [(0.1, 0.5, True), (0.3, 0.1, False)])
def test_heads_beat_baselines_judges_depth_scale_aligned(scale_aligned, metric, passes):
    """A head with the right shape and the wrong scale passes; one that wins only in metric depth
    fails. The metric row is reported, and the verdict quotes the scale-aligned AbsRel."""
    from stages.evaluation.evaluate import _verdicts

    metrics = {"depth_abs_rel": metric, "median_depth_abs_rel": 0.2, "depth_scale_abs_rel": scale_aligned,
               "median_depth_scale_abs_rel": 0.2, "flow_epe_moving": 1.0, "zero_flow_epe_moving": 2.0,
               "flow_epe": 0.05, "zero_flow_epe": 0.1}
    overall = _overall(metrics)
    verdict = _verdicts(overall)["heads_beat_baselines"]
    assert verdict["pass"] is passes and verdict["value"] == scale_aligned
    assert "scale-aligned" in verdict["rule"]
    assert overall["beats_baseline"]["depth_abs_rel"] is (metric < 0.2)


def test_evaluation_defaults_to_the_held_out_families_with_flow_baselines():
    from scripts.evaluate_physics import parse_args

    required = ["--stage1", "s1", "--root", "r", "--metadata", "m.csv"]
    config = parse_args(required)
    assert config.split == "holdout" and config.flow_baselines is True
    assert parse_args([*required, "--no-flow-baselines"]).flow_baselines is False


def test_printed_validation_says_what_the_split_holds(capsys):
    metrics = {"flow_epe": 1.0, "zero_flow_epe": 2.0, "dis_flow_epe": 0.5, "farneback_flow_epe": 0.75,
               "depth_abs_rel": 0.1, "median_depth_abs_rel": 0.3, "depth_scale_abs_rel": 0.05,
               "median_depth_scale_abs_rel": 0.3}
    print_validation(metrics, "unseen scenes of seen families (split val, 2 scenes)")
    out = capsys.readouterr().out
    assert "validation: unseen scenes of seen families (split val, 2 scenes)" in out
    rows = {line[:34].strip(): line[34:].split() for line in out.splitlines()
            if line.startswith(("depth AbsRel", "flow EPE all"))}
    assert rows == {"depth AbsRel, metric": ["0.1000", "0.3000"], "depth AbsRel, scale-aligned": ["0.0500", "0.3000"],
                    "flow EPE all (px)": ["1.0000", "2.0000", "0.5000", "0.7500"]}
    header = next(line for line in out.splitlines() if line.startswith("validation "))
    assert header.split() == ["validation", "heads", "baseline", "DIS", "Farneback"]


def test_printed_validation_without_flow_baselines_has_no_classical_columns(capsys):
    print_validation({"flow_epe": 1.0, "zero_flow_epe": 2.0})
    out = capsys.readouterr().out
    assert "DIS" not in next(line for line in out.splitlines() if line.startswith("validation "))
    assert [line.split()[-2:] for line in out.splitlines() if line.startswith("flow EPE all")] == [["1.0000", "2.0000"]]
