"""A lower bound on the GPU time of one heads step, counted on the ``meta`` device.

Eager PyTorch runs one kernel per aten op, each reading its inputs from and writing its outputs to
GPU memory.  An op therefore takes at least max(FLOPs / peak FLOP/s, bytes / memory bandwidth),
and a step at least the sum of that over its ops: the time the step would take if every kernel
ran at the card's roofline.  Measured time far above it means the kernels are inefficient or
launch-bound (fusion, channels-last layouts or torch.compile can help); close to it means only
less work can help.  The count runs the heads in bf16, as bf16 autocast does on a GPU (the few
ops autocast keeps in fp32 are counted at 2 bytes too, so the bound errs low).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

from heads.config import HeadConfig
from heads.cost import run_head_step


class Card(Protocol):
    """What the bound needs of a GPU: dense bf16 FLOP/s and memory bytes/s (the table of real
    cards is world_model.flops.GPUS; heads take any object with these two fields)."""

    peak_flops: float
    bandwidth: float


@dataclass(frozen=True)
class OpCost:
    op: str
    flops: float
    bytes: float


FREE_OPS = frozenset({"aten._unsafe_view", "aten.empty", "aten.empty_like", "aten.empty_strided",
                      "aten.new_empty", "aten.new_empty_strided"})
"""Not views by torch's flag, but they move no bytes either (a reshape, an allocation)."""


class OpCounter(TorchDispatchMode):
    """Records FLOPs (torch's own formulas) and bytes read + written by every op; views and
    allocations move nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[OpCost] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        if func.is_view or str(packet) in FREE_OPS:
            return out
        flops = flop_registry[packet](*args, **kwargs, out_val=out) if packet in flop_registry else 0
        tensors = [t for t in tree_flatten((args, kwargs, out))[0] if isinstance(t, torch.Tensor)]
        self.ops.append(OpCost(str(packet), float(flops), float(sum(t.numel() * t.element_size() for t in tensors))))
        return out


@dataclass(frozen=True)
class Roofline:
    ops: int
    flops: float
    bytes: float
    seconds: float
    """Sum over ops of max(flops / peak, bytes / bandwidth)."""
    memory_bound_share: float
    """Share of ``seconds`` spent in ops whose bytes, not FLOPs, set their time."""
    top: list[tuple[str, float]]
    """The op types with the largest bound, (name, seconds)."""


def op_seconds(op: OpCost, card: Card) -> float:
    return max(op.flops / card.peak_flops, op.bytes / card.bandwidth)


def head_step_roofline(cfg: HeadConfig, latent_grid: tuple[int, int, int], supervised_frames: int, card: Card,
                       top: int = 5) -> Roofline:
    """Bound one bf16 step of a flow + depth head pair on ``card``."""
    counter = OpCounter()
    with counter:
        run_head_step(cfg, latent_grid, supervised_frames, dtype=torch.bfloat16)
    per_type: dict[str, float] = {}
    memory_bound = 0.0
    for op in counter.ops:
        seconds = op_seconds(op, card)
        per_type[op.op] = per_type.get(op.op, 0.0) + seconds
        if op.bytes / card.bandwidth >= op.flops / card.peak_flops:
            memory_bound += seconds
    total = sum(per_type.values())
    ranked = sorted(per_type.items(), key=lambda item: item[1], reverse=True)[:top]
    return Roofline(len(counter.ops), sum(o.flops for o in counter.ops), sum(o.bytes for o in counter.ops), total,
                    memory_bound / total if total else 0.0, ranked)


__all__ = ["Card", "OpCounter", "Roofline", "head_step_roofline"]
