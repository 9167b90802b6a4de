"""heads.compile = reduce-overhead (CUDA graphs) on a GPU: training steps and a no-grad validation
pass give the eager heads' results.  With each head compiled on its own, a no-grad call of the
depth head's graph overwrote the flow head's output ("accessing tensor output of CUDAGraphs that
has been overwritten", seen on an H100 in the GPU check, which called the heads as validation
does); the pair is now one graph.  Skipped without CUDA (the CPU run compiles no graphs;
tests/test_heads_compile.py covers the wiring there)."""

from __future__ import annotations

import copy

import pytest
import torch

from heads.losses import depth_loss, flow_loss
from stages.model import build_heads, validate
from stages.trainer.sections import HeadsConfig
from world_model.presets import get_preset

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")

FRAMES, SIZE = 9, 64


def _batch(preset, seed: int, device: torch.device) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    grid = preset.token_grid(FRAMES, SIZE, SIZE)
    taps = [torch.randn(1, preset.hidden_dim, *grid, generator=gen) for _ in preset.default_taps]
    batch = {"taps": taps, "rgb": torch.rand(1, FRAMES, 3, SIZE, SIZE, generator=gen),
             "flow": 3 * torch.randn(1, FRAMES, 2, SIZE, SIZE, generator=gen),
             "depth": 1 + 4 * torch.rand(1, FRAMES, SIZE, SIZE, generator=gen)}
    batch = {k: ([t.to(device) for t in v] if k == "taps" else v.to(device)) for k, v in batch.items()}
    batch["flow_valid"] = batch["depth_valid"] = torch.ones(1, FRAMES, SIZE, SIZE, dtype=torch.bool, device=device)
    return batch


def _train(heads, batches) -> None:
    optimizer = torch.optim.AdamW(heads.parameters(), lr=1e-4)
    for batch in batches:
        flow, log_depth = heads(batch["taps"], batch["rgb"])
        loss = flow_loss(flow, batch["flow"], batch["flow_valid"])[0] + \
            depth_loss(log_depth, batch["depth"], batch["depth_valid"])[0]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def test_cuda_graph_heads_train_and_validate_like_eager_ones():
    device, preset = torch.device("cuda"), get_preset("tiny")
    torch.manual_seed(0)
    eager = build_heads(HeadsConfig(features=16), preset, len(preset.default_taps)).to(device)
    graphed = build_heads(HeadsConfig(features=16, compile="reduce-overhead"), preset,
                          len(preset.default_taps)).to(device)
    graphed.load_state_dict(copy.deepcopy(eager.state_dict()))
    train = [_batch(preset, seed, device) for seed in range(4)]
    val = [_batch(preset, seed, device) for seed in (10, 11, 12)]
    for heads in (eager, graphed):
        _train(heads, train)
    metrics = [validate(heads, val, lambda b: b["taps"], moving_threshold=0.5, far=100.0) for heads in (eager, graphed)]
    assert metrics[0].keys() == metrics[1].keys()
    for key in metrics[0]:
        assert metrics[1][key] == pytest.approx(metrics[0][key], rel=1e-3, abs=1e-4), key
    for name, value in eager.state_dict().items():
        torch.testing.assert_close(graphed.state_dict()[name], value, rtol=1e-3, atol=1e-3, msg=name)
