"""Head checkpoints: safetensors + JSON round trip, strict loading with clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from heads import DepthHead, HeadConfig, HeadLoadError, MotionVectorHead, load_heads, save_heads
from heads.io import CONFIG_NAME, WEIGHTS_NAME


def _cfg(**kw) -> HeadConfig:
    base = dict(in_channels=32, num_taps=2, features=16, temporal_heads=2, temporal_levels=1)
    base.update(kw)
    return HeadConfig(**base)


def _inputs(cfg: HeadConfig) -> tuple[list[torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    taps = [torch.randn(1, cfg.in_channels, 2, 2, 2, generator=g) for _ in range(cfg.num_taps)]
    return taps, torch.rand(1, 5, 3, 64, 64, generator=g)


def _perturbed(head: torch.nn.Module) -> torch.nn.Module:
    """Non-default weights everywhere (zero-init layers included), so the round trip is meaningful."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return head.eval()


def test_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    cfg_f, cfg_d = _cfg(), _cfg(rgb_refine=False, features=8)
    flow, depth = _perturbed(MotionVectorHead(cfg_f)), _perturbed(DepthHead(cfg_d))
    save_heads(tmp_path, flow, depth)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CONFIG_NAME, WEIGHTS_NAME])  # no temp files left
    flow2, depth2 = load_heads(tmp_path)
    assert flow2.cfg == cfg_f and depth2.cfg == cfg_d
    taps, frames = _inputs(cfg_f)
    with torch.no_grad():
        assert torch.equal(flow(taps, frames), flow2(taps, frames))
        assert torch.equal(depth(taps), depth2(taps))


def test_single_head_round_trip(tmp_path: Path) -> None:
    save_heads(tmp_path, None, DepthHead(_cfg()))
    flow, depth = load_heads(tmp_path)
    assert flow is None and isinstance(depth, DepthHead)


def test_config_that_does_not_match_weights_is_a_clear_error(tmp_path: Path) -> None:
    save_heads(tmp_path, MotionVectorHead(_cfg()), None)
    meta = json.loads((tmp_path / CONFIG_NAME).read_text())
    meta["flow"]["in_channels"] = 64
    (tmp_path / CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(HeadLoadError, match=r"flow head weights .* shape_mismatch=.*neck\.project\.0\.weight"):
        load_heads(tmp_path)
    meta["flow"]["in_channels"] = 32
    meta["flow"]["num_taps"] = 3
    meta["flow"]["tap_channels"] = [8, 16, 32]
    (tmp_path / CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(HeadLoadError, match=r"missing=\['neck\.fusion\.2"):
        load_heads(tmp_path)


def test_expected_config_mismatch_names_the_fields(tmp_path: Path) -> None:
    save_heads(tmp_path, MotionVectorHead(_cfg()), None)
    with pytest.raises(HeadLoadError, match=r"in_channels: saved 32 != expected 3072"):
        load_heads(tmp_path, expected={"flow": HeadConfig()})
    flow, _ = load_heads(tmp_path, expected={"flow": _cfg()})
    assert flow is not None


def test_unknown_config_field_and_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(HeadLoadError, match="not a head directory"):
        load_heads(tmp_path / "nothing")
    save_heads(tmp_path, MotionVectorHead(_cfg()), None)
    meta = json.loads((tmp_path / CONFIG_NAME).read_text())
    meta["flow"]["hidden_size"] = 7
    (tmp_path / CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(HeadLoadError, match="unknown HeadConfig fields \\['hidden_size'\\]"):
        load_heads(tmp_path)


def test_weights_without_config_entry_are_rejected(tmp_path: Path) -> None:
    save_heads(tmp_path, MotionVectorHead(_cfg()), None)
    meta = json.loads((tmp_path / CONFIG_NAME).read_text())
    meta["depth"], meta["flow"] = meta["flow"], None
    (tmp_path / CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(HeadLoadError, match="holds flow weights but .* has no flow config"):
        load_heads(tmp_path)
