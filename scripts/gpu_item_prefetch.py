"""GPU check item 'prefetch': the training loop's one-batch-ahead copy (stages/trainer/prefetch.py)
against copying each batch on the compute stream, around a stand-in step of fixed work.

A batch is sized like a stage-1 cached batch of the geometry (the backbone's taps in bf16, RGB,
flow and depth targets and their masks), pinned as the DataLoader pins it.  The step first sums
every tensor of its batch on the device (a checksum: a step that read its batch before the copy
finished would differ from the host's), then runs matmuls for about as long as the copy takes.
"""

from __future__ import annotations

import math

import torch

from scripts.gpu_items import pinned
from stages.trainer.prefetch import batch_tensors, prefetch_to_device, to_device
from stages.trainer.tracking import PhaseTimer
from world_model.presets import get_preset


def cached_batch(preset: str, frames: int, height: int, width: int, seed: int, device: torch.device) -> dict:
    """Host tensors the size of one cached stage-1 micro-batch (all frames supervised), pinned on
    CUDA machines as the training loader pins them."""
    p = get_preset(preset)
    grid = p.token_grid(frames, height, width)
    g = torch.Generator().manual_seed(seed)
    batch = {"taps": [torch.randn(1, p.hidden_dim, *grid, generator=g).to(torch.bfloat16) for _ in p.default_taps],
             "rgb": torch.rand(1, frames, 3, height, width, generator=g),
             "flow": torch.randn(1, frames, 2, height, width, generator=g),
             "depth": torch.rand(1, frames, height, width, generator=g),
             "flow_valid": torch.rand(1, frames, height, width, generator=g) > 0.1,
             "depth_valid": torch.rand(1, frames, height, width, generator=g) > 0.1}
    return {k: pinned(v, device) if isinstance(v, list) else pinned([v], device)[0] for k, v in batch.items()}


def checksums(batch: dict) -> list[float]:
    return [float(t.double().sum()) for t in batch_tensors(batch)]


class StandInStep:
    """Checksum the batch, then ``matmuls`` products of an n x n matrix (the step's compute)."""

    def __init__(self, device: torch.device, n: int, matmuls: int) -> None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        g = torch.Generator().manual_seed(0)
        self.w = (torch.randn(n, n, generator=g) / math.sqrt(n)).to(device, dtype)
        self.x = torch.randn(n, n, generator=g).to(device, dtype)
        self.matmuls = matmuls

    def __call__(self, batch: dict | None) -> list[torch.Tensor]:
        sums = [t.double().sum() for t in batch_tensors(batch)] if batch is not None else []
        x = self.x
        for _ in range(self.matmuls):
            x = x @ self.w
        return sums


def item_prefetch(preset: str, device: torch.device, frames: int, height: int, width: int, runs: int,
                  warmup: int) -> dict:
    steps = max(runs, 3) + warmup
    cuda = device.type == "cuda"
    host = [cached_batch(preset, frames, height, width, seed=i, device=device) for i in range(steps)]
    expected = [checksums(b) for b in host]
    step = StandInStep(device, n=4096 if cuda else 64, matmuls=1)
    step(to_device(host[0], device))  # warm-up: CUDA context, cuBLAS handle, allocator
    watch = PhaseTimer(device)
    with watch.phase("copy"):
        _ = [to_device(b, device) for b in host]
    with watch.phase("one_matmul"):
        step(None)
    copy_s, one_s = watch.totals["copy"], watch.totals.pop("one_matmul")
    step.matmuls = max(1, round(copy_s / steps / max(one_s, 1e-6)))  # compute about as long as a copy
    with watch.phase("compute"):
        _ = [step(None) for _ in range(steps)]
    with watch.phase("serial_step"):
        serial = [step(to_device(b, device)) for b in host]
    with watch.phase("prefetched_step"):
        prefetched = [step(b) for b in prefetch_to_device(iter(host), device)]

    def intact(sums: list[list[torch.Tensor]]) -> bool:  # every batch, in order, each tensor as on the host
        return len(sums) == len(expected) and all(
            math.isclose(float(got), want, rel_tol=1e-6, abs_tol=1e-6)
            for row, wants in zip(sums, expected) for got, want in zip(row, wants))

    result = watch.per_step_ms(steps)
    batch_mb = sum(t.numel() * t.element_size() for t in batch_tensors(host[0])) / 1e6
    return {"batch_mb": batch_mb, "steps": steps, "matmuls": step.matmuls, **result,
            "saved_ms": result["serial_step_ms"] - result["prefetched_step_ms"],
            "intact_serial": intact(serial), "intact_prefetched": intact(prefetched)}
