"""physics.flow_only: the physics terms judge the predicted flow on the ground truth's distance, so
no depth (jittery, shrunk, far) can move them, depth gets no gradient from them, and a wrong
motion still costs what it cost before."""

from __future__ import annotations

import math

import torch

from heads.physics import PhysicsLoss, PhysicsLossConfig
from tests.test_physics import EXACT, G15, render


def test_flow_only_terms_ignore_the_depth_and_still_judge_the_motion() -> None:
    r = render(EXACT)
    args = (r["distance"], r["valid"], r["flow"], r["flow_valid"], r["intrinsics"], EXACT.dt)
    judged = PhysicsLoss(PhysicsLossConfig(warp_weight=0.0, flow_only=True))
    plain = PhysicsLoss(PhysicsLossConfig(warp_weight=0.0))
    jitter = 0.05 * torch.randn(r["distance"].shape, generator=torch.Generator().manual_seed(5))
    depths = {"exact": r["distance"].log(), "jittery": r["distance"].log() + jitter,
              "shrunk": r["distance"].log() + math.log(0.5), "far": torch.full_like(r["distance"], math.log(50.0))}
    exact = judged(depths["exact"], r["flow"], *args)[0].item()
    for name, log_depth in depths.items():
        pred_log = log_depth.clone().requires_grad_(True)
        loss = judged(pred_log, r["flow"], *args)[0]
        assert loss.item() == exact, name  # plain judging moves by the depth (below)
        assert not loss.requires_grad, name  # the depth is the only input that asks for a gradient
    assert plain(depths["jittery"], r["flow"], *args)[0].item() > 10 * exact
    wrong = render(G15)  # the ball falls at 15 m/s^2: its flow is wrong whatever the depth
    assert judged(depths["exact"], wrong["flow"], *args)[0].item() > 10 * exact
    flow = r["flow"].clone().requires_grad_(True)
    judged(depths["jittery"], flow, *args)[0].backward()
    assert flow.grad.abs().sum() > 0
