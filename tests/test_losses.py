"""Flow and depth losses: zero at GT, monotone in error, safe on invalid targets, hand-checked values."""

from __future__ import annotations

import math

import pytest
import torch

from heads.losses import (
    HeadLoss,
    LossConfig,
    align_scale_shift,
    depth_loss,
    flow_loss,
    gradient_matching,
    temporal_gradient_matching,
)


def flow_target(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 3.0 * torch.randn(2, 4, 2, 8, 8, generator=g)


def depth_target(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 1.0 + 4.0 * torch.rand(2, 4, 8, 8, generator=g)


def poison(x: torch.Tensor, channel_dim: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Put inf, -inf, NaN and 0 into a few pixels; returns (poisoned target, bool mask of them)."""
    x = x.clone()
    bad = torch.zeros(x.shape[0], x.shape[1], x.shape[-2], x.shape[-1], dtype=torch.bool)
    for (b, t, i, j), v in zip([(0, 1, 0, 0), (0, 2, 3, 4), (1, 3, 7, 7), (1, 1, 5, 2)], [math.inf, -math.inf, math.nan, 0.0]):
        bad[b, t, i, j] = True
        if channel_dim:
            x[b, t, 0, i, j] = v if v != 0.0 else math.nan
        else:
            x[b, t, i, j] = v
    return x, bad


# ------------------------------------------------------------------------------------------ flow


def test_flow_loss_zero_at_ground_truth_and_monotone() -> None:
    tgt = flow_target()
    noise = torch.randn_like(tgt)
    loss0, m0 = flow_loss(tgt.clone(), tgt, None)
    assert loss0.item() == 0.0 and m0["flow_epe"].item() == 0.0
    values = [flow_loss(tgt + a * noise, tgt, None)[0].item() for a in (0.1, 0.5, 1.0, 2.0, 4.0)]
    assert all(b > a for a, b in zip(values, values[1:]))


def test_flow_loss_gradient_at_ground_truth_is_finite() -> None:
    tgt = flow_target()
    pred = tgt.clone().requires_grad_(True)
    flow_loss(pred, tgt, None)[0].backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().max() == 0


def test_flow_invalid_targets_give_finite_loss_and_gradients_and_are_ignored() -> None:
    tgt = flow_target()
    bad_tgt, bad = poison(tgt, channel_dim=True)
    pred = (tgt + torch.randn_like(tgt)).requires_grad_(True)
    loss, metrics = flow_loss(pred, bad_tgt, None)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()
    assert all(torch.isfinite(v) for v in metrics.values())
    assert (pred.grad.abs().sum(dim=2)[bad] == 0).all()
    # Same loss as explicitly masking those pixels out of a clean target; pred there is irrelevant.
    ref, _ = flow_loss(pred.detach(), tgt, ~bad)
    wild = pred.detach().clone()
    wild.permute(0, 1, 3, 4, 2)[bad] = 1e6
    torch.testing.assert_close(loss.detach(), ref)
    torch.testing.assert_close(flow_loss(wild, bad_tgt, None)[0], ref)


def test_flow_mask_and_first_frame_are_excluded() -> None:
    tgt = flow_target()
    pred = tgt.clone()
    pred[:, 0] += 100.0  # frame 0 has no previous frame: ignored by default
    pred[:, 2, :, :4] += 50.0
    mask = torch.ones(2, 4, 8, 8, dtype=torch.bool)
    mask[:, 2, :4] = False
    assert flow_loss(pred, tgt, mask)[0].item() == 0.0
    assert flow_loss(pred, tgt, mask, skip_first_frame=False)[0].item() > 0.0


def test_flow_moving_pixels_are_up_weighted() -> None:
    """4 valid pixels (frame 1): one moving (|gt| = 2 px), three static. Hand-computed weighted means."""
    tgt = torch.zeros(1, 2, 2, 2, 2)
    tgt[0, 1, 0, 0, 0] = 2.0
    err_on_moving, err_on_static = tgt.clone(), tgt.clone()
    err_on_moving[0, 1, 1, 0, 0] = 1.0  # 1 px error on the moving pixel
    err_on_static[0, 1, 1, 1, 1] = 1.0  # 1 px error on a static pixel
    lm, m = flow_loss(err_on_moving, tgt, None, moving_weight=5.0, moving_threshold=0.5)
    ls, _ = flow_loss(err_on_static, tgt, None, moving_weight=5.0, moving_threshold=0.5)
    assert lm.item() == pytest.approx(5.0 / 8.0)  # weights 5 + 1 + 1 + 1
    assert ls.item() == pytest.approx(1.0 / 8.0)
    assert m["flow_epe_moving"].item() == pytest.approx(1.0)
    assert m["flow_epe"].item() == pytest.approx(0.25)
    assert m["flow_frac_moving"].item() == pytest.approx(0.25)
    lu, _ = flow_loss(err_on_moving, tgt, None, moving_weight=1.0)
    assert lu.item() == pytest.approx(0.25)  # unweighted mean EPE


def test_flow_all_invalid_gives_zero_connected_loss() -> None:
    pred = torch.randn(1, 2, 2, 4, 4, requires_grad=True)
    loss, _ = flow_loss(pred, torch.full((1, 2, 2, 4, 4), math.nan), None)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(pred.grad).all()


# ----------------------------------------------------------------------------------------- depth


def test_depth_loss_zero_at_ground_truth_and_monotone() -> None:
    tgt = depth_target()
    log_t = tgt.log()
    noise = torch.randn_like(tgt)
    loss0, metrics = depth_loss(log_t.clone(), tgt, None, ssi_weight=1.0)
    assert loss0.item() == pytest.approx(0.0, abs=1e-6)
    assert set(metrics) == {"depth_l1_log", "depth_ssi_l1", "depth_grad", "depth_tgm"}
    values = [depth_loss(log_t + a * noise, tgt, None)[0].item() for a in (0.05, 0.2, 0.5, 1.0, 2.0)]
    assert all(b > a for a, b in zip(values, values[1:]))


def test_depth_invalid_targets_give_finite_loss_and_gradients_and_are_ignored() -> None:
    tgt = depth_target()
    bad_tgt, bad = poison(tgt, channel_dim=False)
    pred = (tgt.log() + 0.3 * torch.randn_like(tgt)).requires_grad_(True)
    loss, metrics = depth_loss(pred, bad_tgt, None, ssi_weight=1.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()
    assert all(torch.isfinite(v) for v in metrics.values())
    assert (pred.grad[bad] == 0).all()
    ref, _ = depth_loss(pred.detach(), tgt, ~bad, ssi_weight=1.0)
    torch.testing.assert_close(loss.detach(), ref)
    far, _ = depth_loss(pred.detach(), torch.where(bad, torch.full_like(tgt, 1e4), tgt), None, ssi_weight=1.0, far=100.0)
    torch.testing.assert_close(far, ref)  # beyond the far clip counts as invalid too


def test_depth_l1_hand_computed() -> None:
    """One frame 1x2: log residuals 0.5 and -0.25 -> L1 0.375."""
    tgt = torch.tensor([[[[2.0, 4.0]]]])
    pred = tgt.log() + torch.tensor([[[[0.5, -0.25]]]])
    loss, m = depth_loss(pred, tgt, None, grad_weight=0.0, tgm_weight=0.0)
    assert loss.item() == pytest.approx(0.375)
    assert m["depth_l1_log"].item() == pytest.approx(0.375)


def test_constant_log_offset_has_zero_gradient_and_tgm_terms() -> None:
    tgt = depth_target()
    pred = tgt.log() + 0.7  # a global scale error in depth
    _, m = depth_loss(pred, tgt, None)
    assert m["depth_l1_log"].item() == pytest.approx(0.7)
    assert m["depth_grad"].item() == pytest.approx(0.0, abs=1e-6)
    assert m["depth_tgm"].item() == pytest.approx(0.0, abs=1e-6)


def test_ssi_term_ignores_affine_error_in_log_space() -> None:
    tgt = depth_target()
    pred = 2.0 * tgt.log() - 1.0
    _, m = depth_loss(pred, tgt, None, ssi_weight=1.0)
    assert m["depth_ssi_l1"].item() == pytest.approx(0.0, abs=1e-5)
    assert m["depth_l1_log"].item() > 0.1
    valid = torch.ones_like(tgt, dtype=torch.bool)
    torch.testing.assert_close(align_scale_shift(pred, tgt.log(), valid), tgt.log(), atol=1e-5, rtol=1e-5)


def test_temporal_gradient_matching_hand_computed() -> None:
    """Residual per frame (1 pixel): 0, 1, 1, 3 -> |changes| 1, 0, 2 -> mean 1. Invalid frame 2 drops pairs (1,2),(2,3)."""
    residual = torch.tensor([0.0, 1.0, 1.0, 3.0]).reshape(1, 4, 1, 1)
    valid = torch.ones_like(residual, dtype=torch.bool)
    assert temporal_gradient_matching(residual, valid).item() == pytest.approx(1.0)
    valid[0, 2] = False
    assert temporal_gradient_matching(residual * valid, valid).item() == pytest.approx(1.0)  # only pair (0,1)
    target = torch.tensor([0.0, 0.0, 5.0, 5.0]).reshape(1, 4, 1, 1)
    valid[0, 2] = True
    # max_change drops the pair (1, 2) whose GT jumps by 5: remaining |changes| 1 and 2 -> 1.5
    assert temporal_gradient_matching(residual, valid, 1.0, target).item() == pytest.approx(1.5)


def test_temporal_gradient_matching_differences_only_adjacent_window_frames() -> None:
    """Residuals 0, 5, 6, 10 at window frames 0, 2, 3, 7: only (2, 3) are one frame apart -> |6 - 5|."""
    residual = torch.tensor([0.0, 5.0, 6.0, 10.0]).reshape(1, 4, 1, 1)
    valid = torch.ones_like(residual, dtype=torch.bool)
    index = torch.tensor([[0, 2, 3, 7]])
    assert temporal_gradient_matching(residual, valid, frame_index=index).item() == pytest.approx(1.0)
    assert temporal_gradient_matching(residual, valid).item() == pytest.approx(10.0 / 3)
    no_pair = temporal_gradient_matching(residual, valid, frame_index=torch.tensor([[0, 2, 4, 7]]))
    assert no_pair.item() == 0.0


def test_gradient_matching_hand_computed() -> None:
    """1x1x2x2 residual [[0, 1], [0, 0]], one scale: |gx| = 1, 0; |gy| = 0, 1 -> 2 / 4."""
    residual = torch.tensor([[0.0, 1.0], [0.0, 0.0]]).reshape(1, 1, 2, 2)
    valid = torch.ones_like(residual, dtype=torch.bool)
    assert gradient_matching(residual, valid, scales=1).item() == pytest.approx(0.5)
    valid[0, 0, 0, 1] = False  # the only non-zero pixel: every gradient touching it is dropped
    assert gradient_matching(residual * valid, valid, scales=1).item() == pytest.approx(0.0)


# ---------------------------------------------------------------------------------------- combined


def test_head_loss_combines_weighted_parts() -> None:
    ft, dt = flow_target(), depth_target()
    fp, dp = ft + torch.randn_like(ft), dt.log() + 0.1 * torch.randn_like(dt)
    cfg = LossConfig(flow_weight=2.0, depth_weight=0.5)
    total, m = HeadLoss(cfg)(fp, ft, None, dp, dt, None)
    lf, _ = flow_loss(fp, ft, None, cfg.moving_weight, cfg.moving_threshold)
    ld, _ = depth_loss(dp, dt, None, grad_weight=cfg.depth_grad_weight, tgm_weight=cfg.depth_tgm_weight)
    torch.testing.assert_close(total, 2.0 * lf + 0.5 * ld)
    torch.testing.assert_close(m["loss_flow"], lf)
    only_depth, m2 = HeadLoss(cfg)(depth_pred_log=dp, depth_target=dt)
    torch.testing.assert_close(only_depth, 0.5 * ld)
    assert "loss_flow" not in m2
    with pytest.raises(ValueError):
        HeadLoss(cfg)()


def test_depth_moving_weight_weighs_the_log_depth_l1_on_moving_pixels() -> None:
    """Moving pixels (GT flow > moving_threshold) weigh depth_moving_weight in the log-depth L1;
    1 leaves the loss as it was, and a perfect depth is still free whatever the weight."""
    ft = torch.zeros(1, 2, 2, 4, 4)
    ft[:, :, 0, :2, :2] = 3.0  # 4 of 16 pixels move
    dt = torch.full((1, 2, 4, 4), 2.0)
    dp = dt.log().clone()
    dp[:, :, :2, :2] += 0.4  # error only on the moving pixels
    cfg = dict(depth_grad_weight=0.0, depth_tgm_weight=0.0)
    plain, m1 = HeadLoss(LossConfig(**cfg))(None, ft, None, dp, dt, None)
    torch.testing.assert_close(plain, torch.tensor(0.4 * 4 / 16))
    heavy, m2 = HeadLoss(LossConfig(depth_moving_weight=5.0, **cfg))(None, ft, None, dp, dt, None)
    torch.testing.assert_close(heavy, torch.tensor(0.4 * 20 / (20 + 12)))
    torch.testing.assert_close(m1["depth_l1_log"], m2["depth_l1_log"])  # the metric stays unweighted
    exact, _ = HeadLoss(LossConfig(depth_moving_weight=5.0, **cfg))(None, ft, None, dt.log(), dt, None)
    assert exact.item() == 0.0


def _moving_ball(frames: int = 4, step: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """A 4x4 body moving `step` px right a frame over a wall at 4 m, itself at 2 m + 0.1 m a frame:
    (distance (1, T, 16, 16), backward flow target (1, T, 2, 16, 16))."""
    depth = torch.full((1, frames, 16, 16), 4.0)
    flow = torch.zeros(1, frames, 2, 16, 16)
    for t in range(frames):
        x = 2 + step * t
        depth[0, t, 6:10, x:x + 4] = 2.0 + 0.1 * t
        if t:
            flow[0, t, 0, 6:10, x:x + 4] = -float(step)  # the point at p was at p - step one frame earlier
    return depth, flow


def test_track_term_sees_a_body_whose_distance_jumps_and_not_one_steadily_off() -> None:
    """Along the ground-truth tracks of the moving body: 1.3x its distance in every frame is free
    (the L1 term deals with it); 1.3x in every other frame costs |log 1.3| per pixel; the wall and
    a per-pixel TGM that would compare a body pixel with the wall it uncovered do not count."""
    from heads.losses import track_gradient_matching

    depth, flow = _moving_ball()
    valid = torch.ones(1, 4, 16, 16, dtype=torch.bool)
    moving = flow.norm(dim=2) > 0.5
    body = depth < 3.9

    def term(factor: torch.Tensor) -> float:
        residual = torch.where(body, factor.view(1, -1, 1, 1).log(), torch.zeros_like(depth))
        return float(track_gradient_matching(residual, valid, flow, moving))

    assert term(torch.full((4,), 1.3)) == pytest.approx(0.0, abs=1e-6)
    steady = torch.where(body, torch.tensor(1.3).log(), torch.zeros_like(depth))
    assert temporal_gradient_matching(steady, valid).item() > 0.01  # per pixel, the body's edges count
    assert term(torch.tensor([1.3, 1.0, 1.3, 1.0])) == pytest.approx(math.log(1.3), rel=1e-5)
    # Through HeadLoss: off by default; on, it is part of the depth loss and logged.
    pred = torch.where(body, depth * torch.tensor([1.3, 1.0, 1.3, 1.0]).view(1, -1, 1, 1), depth).log()
    cfg = {"depth_grad_weight": 0.0, "depth_tgm_weight": 0.0, "depth_l1_weight": 0.0}
    off, m_off = HeadLoss(LossConfig(**cfg))(None, flow, None, pred, depth, None)
    on, m_on = HeadLoss(LossConfig(depth_track_weight=2.0, **cfg))(None, flow, None, pred, depth, None)
    assert off.item() == 0.0 and "depth_track" not in m_off
    assert on.item() == pytest.approx(2.0 * math.log(1.3), rel=1e-5)
    assert m_on["depth_track"].item() == pytest.approx(math.log(1.3), rel=1e-5)


def test_track_term_counts_only_adjacent_window_frames() -> None:
    from heads.losses import track_gradient_matching

    depth, flow = _moving_ball()
    valid = torch.ones(1, 4, 16, 16, dtype=torch.bool)
    moving = flow.norm(dim=2) > 0.5
    residual = torch.where(depth < 3.9, torch.tensor([0.3, 0.0, 0.3, 0.0]).view(1, -1, 1, 1), torch.zeros_like(depth))
    gapped = torch.tensor([[0, 2, 3, 5]])  # only the pair (2, 3) is one window frame apart
    pair = track_gradient_matching(residual, valid, flow, moving, gapped)
    assert pair.item() == pytest.approx(0.3, rel=1e-5)
    assert track_gradient_matching(residual, valid, flow, moving, torch.tensor([[0, 2, 4, 6]])).item() == 0.0


def test_track_term_drops_tracks_that_come_from_outside_the_frame() -> None:
    from heads.losses import track_gradient_matching

    depth, flow = _moving_ball()
    valid = torch.ones(1, 4, 16, 16, dtype=torch.bool)
    moving = flow.norm(dim=2) > 0.5
    residual = torch.where(depth < 3.9, torch.tensor([0.3, 0.0, 0.3, 0.0]).view(1, -1, 1, 1), torch.zeros_like(depth))
    entering = flow.clone()
    entering[0, 1, 0] = torch.where(moving[0, 1], torch.tensor(-20.0), torch.tensor(0.0))  # from left of the image
    kept = track_gradient_matching(residual, valid, flow, moving)
    assert track_gradient_matching(residual, valid, entering, moving).item() == pytest.approx(kept.item())
