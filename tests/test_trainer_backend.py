"""The loop drives every backend through the same calls, in the same order; only the backend differs.

The real backends are exercised end to end elsewhere (one process and DDP in test_stage1.py and
test_preemption.py, ZeRO-2 in test_zero.py); here a recording stand-in pins down the protocol.
"""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest
import torch

from stages.trainer import NonFiniteGuard, OptimConfig
from stages.trainer.backend import AccelerateBackend, ZeroBackend
from stages.trainer.loop import TrainRun, optimizer_step


class RecordingBackend:
    """Plays the backend's part and writes down every call the loop makes."""

    def __init__(self, norm: float = 1.0) -> None:
        self.calls: list[tuple] = []
        self.norm = norm

    def accumulate(self, last: bool):
        self.calls.append(("accumulate", last))
        return contextlib.nullcontext()

    def autocast(self):
        self.calls.append(("autocast",))
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor, last: bool, total: torch.Tensor) -> None:
        self.calls.append(("backward", round(float(loss), 6), last, round(float(total), 6)))

    def apply_gradients(self, grad_clip: float) -> float:
        self.calls.append(("apply_gradients", grad_clip))
        return self.norm

    def discard_gradients(self) -> None:
        self.calls.append(("discard_gradients",))


def make_run(backend: RecordingBackend) -> TrainRun:
    param = torch.nn.Parameter(torch.zeros(()))
    optimizer = torch.optim.SGD([param], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return TrainRun(accelerator=SimpleNamespace(device=torch.device("cpu")), backend=backend, model=None,
                    optimizer=optimizer, scheduler=scheduler, sampler=None, loader=None,
                    guard=NonFiniteGuard(max_consecutive=3), tracker=None, run_dir=None, total_steps=10, config=None)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")
def test_one_step_calls_the_backend_per_micro_batch_then_applies_once():
    backend = RecordingBackend()
    run = make_run(backend)
    losses = iter([2.0, 4.0])
    seen_micro = []

    def loss_fn(batch: dict, micro: int):
        seen_micro.append(micro)
        return torch.tensor(next(losses)), {"term": torch.tensor(1.0)}

    metrics = optimizer_step(run, iter([{}, {}]), loss_fn, OptimConfig(grad_accum=2, grad_clip=0.5))
    assert backend.calls == [
        ("accumulate", False), ("autocast",), ("backward", 1.0, False, 1.0),
        ("accumulate", True), ("autocast",), ("backward", 2.0, True, 3.0),
        ("apply_gradients", 0.5),
    ]
    assert seen_micro == [0, 1], "the loop, not the recipe, counts micro-batches"
    assert run.step == 1 and metrics["loss"] == pytest.approx(3.0) and metrics["grad_norm"] == 1.0


def test_a_non_finite_loss_discards_the_gradients_instead_of_applying_them():
    backend = RecordingBackend()
    run = make_run(backend)
    metrics = optimizer_step(run, iter([{}]), lambda batch, micro: (torch.tensor(float("nan")), {}),
                             OptimConfig(grad_accum=1))
    assert backend.calls[-1] == ("discard_gradients",) and ("apply_gradients", 1.0) not in backend.calls
    assert run.step == 0 and metrics["skipped"] == 1.0


def test_a_non_finite_gradient_norm_skips_the_step():
    backend = RecordingBackend(norm=float("inf"))
    run = make_run(backend)
    metrics = optimizer_step(run, iter([{}]), lambda batch, micro: (torch.tensor(1.0), {}), OptimConfig(grad_accum=1))
    assert run.step == 0 and metrics["skipped"] == 1.0


def test_the_plain_backend_clips_and_skips_a_non_finite_update():
    """AccelerateBackend against a real (one-process) accelerator: clipping to grad_clip, and no
    update when the gradient is not finite (the norm is still reported, so the guard sees it)."""
    from accelerate import Accelerator

    model = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.ones_(model.weight)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    backend = AccelerateBackend(Accelerator(cpu=True), model, optimizer)
    backend.backward(model(torch.tensor([[3.0, 4.0]])).sum(), last=True, total=torch.tensor(1.0))
    assert backend.apply_gradients(grad_clip=1.0) == pytest.approx(5.0)
    assert torch.allclose(model.weight, torch.tensor([[1 - 0.6, 1 - 0.8]]))
    assert model.weight.grad is None, "gradients are cleared after the update"
    backend.backward(model(torch.tensor([[float("nan"), 1.0]])).sum(), last=True, total=torch.tensor(1.0))
    before = model.weight.detach().clone()
    assert not torch.isfinite(torch.tensor(backend.apply_gradients(grad_clip=0.0)))
    assert torch.equal(model.weight, before)


def test_the_zero_backend_poisons_only_the_last_backward_of_a_non_finite_step():
    """DeepSpeed drops a step only through its own overflow check, so the backend turns the last
    backward of a step whose loss is not finite into NaN gradients, and leaves other steps alone."""
    received = []
    engine = SimpleNamespace(backward=lambda loss, scale_wrt_gas: received.append((float(loss), scale_wrt_gas)))
    backend = ZeroBackend(SimpleNamespace(device=torch.device("cpu")), engine, optimizer=None, dtype=None)
    backend.backward(torch.tensor(1.0), last=False, total=torch.tensor(float("nan")))
    backend.backward(torch.tensor(1.0), last=True, total=torch.tensor(2.0))
    backend.backward(torch.tensor(1.0), last=True, total=torch.tensor(float("inf")))
    assert received[:2] == [(1.0, False), (1.0, False)]
    assert received[2][1] is False and received[2][0] != received[2][0], "NaN on the poisoned backward"
