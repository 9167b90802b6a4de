"""Supervising K frames per window (data.window.supervised_frames): the K-frame sample and the
K-frame head outputs must be exactly the whole-window ones at those frames, the subset must
cover frames uniformly, and window frame 0 (not the subset's first frame) is the flow frame
without a previous frame."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from data.dataset import DataConfig, SimPhysicsDataset
from data.sampling import WindowSpec, supervised_subset
from heads import DepthHead, HeadConfig, MotionVectorHead, flow_loss
from heads.losses import HeadLoss, LossConfig, flow_valid_mask

TARGETS = ("flow", "flow_valid", "depth", "depth_valid")


def _config(scene, csv: Path, frames: int = 5, supervised: int = 0, **kw) -> DataConfig:
    return DataConfig(root=str(scene.root), metadata=str(csv), height=64, width=64,
                      window=WindowSpec(num_frames=frames, stride=2, supervised_frames=supervised), **kw)


def test_subset_is_sorted_distinct_and_covers_frames_uniformly():
    rng = np.random.default_rng(0)
    counts = np.zeros(49)
    for _ in range(4000):
        pick = supervised_subset(49, 8, rng)
        assert len(set(pick.tolist())) == 8 and np.all(np.diff(pick) > 0)
        counts[pick] += 1
    expected = 4000 * 8 / 49
    # A random contiguous block would give the end frames 1/6 of the middle's share.
    assert np.abs(counts / expected - 1).max() < 0.15, counts
    assert supervised_subset(5, 0, rng).tolist() == [0, 1, 2, 3, 4]


def test_supervised_frames_is_range_checked():
    with pytest.raises(ValueError, match="supervised_frames"):
        WindowSpec(num_frames=5, supervised_frames=6)


@pytest.mark.parametrize("augment", [False, True])
def test_subset_sample_equals_the_whole_window_at_those_frames(analytic_scene, analytic_csv, augment):
    extra = {"hflip_prob": 0.5} if augment else {}
    whole = SimPhysicsDataset(_config(analytic_scene, analytic_csv, **extra), train=True, seed=4)
    part = SimPhysicsDataset(_config(analytic_scene, analytic_csv, supervised=3, **extra), train=True, seed=4)
    seen = set()
    for epoch in range(4):
        whole.set_epoch(epoch), part.set_epoch(epoch)
        full, sub = whole[0], part[0]
        idx = sub["frame_index"]
        seen.add(tuple(idx.tolist()))
        assert torch.equal(full["steps"], sub["steps"]), "choosing frames must not move the window"
        for key in TARGETS:
            assert torch.equal(sub[key], full[key][idx]), key
        assert torch.equal(sub["frame_rgb"], full["rgb"][idx])
        assert torch.equal(sub["prev_rgb"], full["rgb"][(idx - 1).clamp_min(0)])
    assert len(seen) > 1, "the subset is redrawn every epoch"


def test_cached_training_windows_skip_the_whole_window_rgb(analytic_scene, analytic_csv):
    from data.windows import FixedWindows

    base = SimPhysicsDataset(_config(analytic_scene, analytic_csv, frames=5))
    windows = FixedWindows(base, per_scene=1, repeat=2, supervised_frames=2, seed=1, video=False)
    sample = windows[1]
    assert "rgb" not in sample and sample["frame_rgb"].shape == (2, 3, 64, 64)
    full = windows.load(0)
    for key in TARGETS:
        assert torch.equal(sample[key], full[key][sample["frame_index"]]), key
    again = FixedWindows(base, per_scene=1, repeat=2, supervised_frames=2, seed=1, video=False)
    assert torch.equal(again[1]["frame_index"], sample["frame_index"]), "a function of (seed, epoch, index)"


def _woken(head: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(3)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(0.05 * torch.randn_like(p))  # wake the zero-initialised layers
    return head


@pytest.mark.parametrize("head_cls", [MotionVectorHead, DepthHead])
def test_selected_frames_equal_the_whole_video_prediction(head_cls):
    torch.manual_seed(0)
    cfg = HeadConfig(in_channels=32, num_taps=4, features=16, temporal_heads=2)
    head = _woken(head_cls(cfg)).eval()
    g = torch.Generator().manual_seed(1)
    taps = [torch.randn(2, 32, 3, 2, 2, generator=g) for _ in range(4)]
    frames = torch.rand(2, 9, 3, 64, 64, generator=g)
    index = torch.tensor([[0, 4, 5], [2, 3, 8]])
    rows = torch.arange(2)[:, None]
    full = head(taps, frames)
    extra = [frames[rows, (index - 1).clamp_min(0)]] if head_cls is MotionVectorHead else []
    part = head(taps, frames[rows, index], index, *extra)
    torch.testing.assert_close(part, full[rows, index], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="frame_index must lie in"):
        head(taps, frames[rows, index], index + 6, *extra)


def test_flow_loss_skips_window_frame_zero_wherever_it_sits():
    target = torch.ones(1, 3, 2, 4, 4)
    index = torch.tensor([[3, 5, 7]])
    assert flow_valid_mask(target, None, True, index).all(), "no window frame 0 in the subset"
    valid = flow_valid_mask(target, None, True, torch.tensor([[0, 2, 4]]))
    assert not valid[:, 0].any() and valid[:, 1:].all()
    target = target * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1, 1)  # EPE of frame k: (k+1)*sqrt(2)
    pred = torch.zeros_like(target)
    assert flow_loss(pred, target, None, moving_weight=1.0, frame_index=index)[0].item() == pytest.approx(2 * 2**0.5)
    assert flow_loss(pred, target, None, moving_weight=1.0)[0].item() == pytest.approx(2.5 * 2**0.5)


def test_head_loss_tgm_uses_only_frames_adjacent_in_the_window():
    """K = 4 of 8 window frames (1, 2, 5, 6): TGM is the mean of the whole window's per-frame
    changes at (1, 2) and (5, 6), never the jump from frame 2 to frame 5."""
    g = torch.Generator().manual_seed(0)
    depth = 1.0 + torch.rand(1, 8, 4, 4, generator=g)
    pred = depth.log() + torch.randn(1, 8, 4, 4, generator=g)
    index = torch.tensor([[1, 2, 5, 6]])
    residual = pred - depth.log()
    expected = torch.cat([residual[:, 2] - residual[:, 1], residual[:, 6] - residual[:, 5]]).abs().mean()
    loss = HeadLoss(LossConfig(depth_l1_weight=0.0, depth_grad_weight=0.0))
    total, metrics = loss(depth_pred_log=pred[:, index[0]], depth_target=depth[:, index[0]], frame_index=index)
    torch.testing.assert_close(metrics["depth_tgm"], expected)
    torch.testing.assert_close(total, expected)


def test_stage2_refuses_a_frame_subset():
    from stages.stage2 import Stage2Config

    base = Stage2Config()
    window = dataclasses.replace(base.data.window, supervised_frames=8)
    with pytest.raises(ValueError, match="supervised_frames must be 0"):
        Stage2Config(data=dataclasses.replace(base.data, window=window))


def test_counted_head_cost_is_the_neck_plus_k_frame_decodes():
    """The neck runs on every latent frame whatever K is; each decoded frame adds the same cost,
    so K = T costs exactly what 'all frames' costs and the cost is affine in K."""
    from heads.cost import head_step_cost

    cfg = HeadConfig(in_channels=32, num_taps=4, features=16, temporal_heads=2)
    grid = (3, 2, 2)  # 9 frames of 64x64
    costs = {k: head_step_cost(cfg, grid, k) for k in (0, 1, 2, 3, 9)}
    per_frame = costs[2].flops - costs[1].flops
    assert per_frame > 0 and costs[3].flops - costs[2].flops == pytest.approx(per_frame)
    assert costs[9].flops == pytest.approx(costs[0].flops) and costs[9].saved_gib == pytest.approx(costs[0].saved_gib, rel=1e-4)
    assert costs[1].flops - per_frame > 0, "the neck costs something of its own"
    assert 0 < costs[0].refiner_flops < costs[0].flops
    assert head_step_cost(HeadConfig(in_channels=32, num_taps=4, features=16, temporal_heads=2, rgb_refine=False),
                          grid, 2).refiner_flops == 0


def test_checkpointed_decoder_saves_little_and_recomputes_the_decoder():
    """heads.checkpoint_decoder: the decoder's activations are not kept for the backward pass
    (the neck's still are), at the price of one more decoder forward; the training wiring sets it."""
    from heads.cost import head_step_cost
    from stages.model import build_heads
    from stages.trainer.sections import HeadsConfig
    from world_model.presets import get_preset

    cfg = HeadConfig(in_channels=32, num_taps=4, features=16, temporal_heads=2)
    grid = (3, 2, 2)
    plain, checkpointed = head_step_cost(cfg, grid), head_step_cost(cfg, grid, checkpoint_chunk=3)
    neck_only = head_step_cost(cfg, grid, 1)  # one decoded frame: mostly the neck's activations
    assert checkpointed.saved_gib < neck_only.saved_gib < plain.saved_gib
    # One more forward of the decoder: more than nothing, less than a forward of everything (1/3 of a step).
    assert plain.flops < checkpointed.flops < 1.34 * plain.flops
    knobs = HeadsConfig(features=16, temporal_levels=1, frame_chunk=3, checkpoint_decoder=True)
    pair = build_heads(knobs, get_preset("tiny"), 4)
    assert all(h.gradient_checkpointing and h.frame_chunk == 3 for h in (pair.flow, pair.depth))


def test_head_cost_script_reports_the_5b_geometry():
    from scripts.head_cost import main

    rows = {r["supervised_frames"]: r for r in main(["--supervised-frames", "0", "8"])}
    # TI2V-5B, 49x480^2: all frames cannot reach 10x even at equal efficiency; 8 frames can.
    assert rows[0]["flop_bound_ratio"] < 10 < rows[8]["flop_bound_ratio"]
    assert rows[8]["saved_gib"] < rows[0]["saved_gib"] / 4
    # The heads are memory-bound: counted by bytes, all frames stay below 10x even with ideal
    # kernels, and 8 frames reach it only near the roofline.
    assert rows[0]["memory_bound_share"] > 0.5 and rows[0]["roofline_ratio"] < 10 < rows[8]["roofline_ratio"]


def test_roofline_counts_each_kernel_once_and_views_not_at_all():
    import torch.nn.functional as F

    from heads.roofline import OpCounter, op_seconds
    from world_model.flops import GPUS

    x = torch.empty(2, 8, 16, 16, dtype=torch.bfloat16, device="meta")
    w = torch.empty(4, 8, 3, 3, dtype=torch.bfloat16, device="meta")
    b = torch.empty(4, dtype=torch.bfloat16, device="meta")
    with OpCounter() as counter:
        y = F.conv2d(x, w, b, padding=1)
        y.view(2, 4, 256).permute(0, 2, 1)
    (op,) = counter.ops
    assert op.flops == 2 * 2 * 4 * 8 * 9 * 16 * 16
    assert op.bytes == 2 * (x.numel() + w.numel() + b.numel() + y.numel())
    card = GPUS["h100"]
    assert op_seconds(op, card) == max(op.flops / card.peak_flops, op.bytes / card.bandwidth)


def test_roofline_sees_the_same_flops_as_the_flop_counter():
    from heads.cost import head_step_cost
    from heads.roofline import head_step_roofline
    from world_model.flops import GPUS

    cfg = HeadConfig(in_channels=32, num_taps=4, features=16, temporal_heads=2)
    for k in (0, 3):
        roof = head_step_roofline(cfg, (3, 2, 2), k, GPUS["h100"])
        assert roof.flops == pytest.approx(head_step_cost(cfg, (3, 2, 2), k).flops)
        assert roof.seconds >= (1 - 1e-9) * max(roof.flops / 989e12, roof.bytes / 3.35e12) and roof.ops > 100
