"""LR schedule, EMA, non-finite guard and seeding: known answers and state round trips."""

from __future__ import annotations

import math
import os
import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from stages.trainer.ema import EMA
from stages.trainer.guard import NonFiniteGuard, NonFiniteLossError
from stages.trainer.schedule import WarmupCosine, scheduler_from_config, warmup_cosine
from stages.trainer.sections import OptimConfig
from stages.trainer.rng import make_generator, seed_everything, seed_worker, set_determinism

# ---------------------------------------------------------------- schedule


def _lrs(scheduler: torch.optim.lr_scheduler.LambdaLR, optimizer: torch.optim.Optimizer, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_warmup_cosine_known_values() -> None:
    schedule = WarmupCosine(warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    assert schedule(0) == pytest.approx(0.1)  # (0 + 1) / 10: the first step already trains
    assert schedule(9) == pytest.approx(1.0)  # last warmup step reaches the peak
    assert schedule(10) == pytest.approx(1.0)  # cosine starts at the peak
    assert schedule(60) == pytest.approx(0.55)  # halfway through the decay: (1 + 0.1) / 2
    assert schedule(110) == pytest.approx(0.1)  # end: min_lr_ratio
    assert schedule(500) == pytest.approx(0.1)  # stays at the floor afterwards
    assert WarmupCosine(0, 4, 0.0)(2) == pytest.approx(0.5)


def test_scheduler_applies_lambda_and_resumes_from_state_dict() -> None:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
    scheduler = scheduler_from_config(optimizer, OptimConfig(lr=2.0, warmup_steps=4, min_lr_ratio=0.0), total_steps=20)
    first = _lrs(scheduler, optimizer, 8)
    assert first[0] == pytest.approx(0.5) and first[3] == pytest.approx(2.0)
    opt_state, sched_state = optimizer.state_dict(), scheduler.state_dict()
    rest_uninterrupted = _lrs(scheduler, optimizer, 12)
    assert rest_uninterrupted[-1] == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * 15 / 16)))

    # A resumed run builds a scheduler (here with wrong parameters on purpose) and loads the state.
    resumed_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
    resumed = warmup_cosine(resumed_opt, warmup_steps=1, total_steps=1)
    resumed_opt.load_state_dict(opt_state)
    resumed.load_state_dict(sched_state)
    assert resumed.lr_lambdas[0] == WarmupCosine(4, 20, 0.0)  # the schedule's parameters travel in the state
    assert _lrs(resumed, resumed_opt, 12) == pytest.approx(rest_uninterrupted)


def test_lr_scales_give_a_prefix_its_own_group_that_the_schedule_scales_alike() -> None:
    """Pretrained heads fine-tuned at a fraction of the adapter's lr (stage 2's lora.heads_lr_scale):
    a parameter under the prefix moves by scale x lr at every step of the schedule, the rest by lr,
    and a frozen parameter stays out of both groups."""
    from stages.trainer.assemble import make_optimizer

    model = nn.ModuleDict({"heads": nn.Linear(1, 1, bias=False), "dit": nn.Linear(1, 1, bias=False),
                           "frozen": nn.Linear(1, 1, bias=False)})
    model["frozen"].requires_grad_(False)
    optim = OptimConfig(lr=0.1, warmup_steps=2, min_lr_ratio=0.0, weight_decay=0.0)
    optimizer = make_optimizer(model, optim, torch.device("cpu"), {"heads.": 0.25})
    heads_group, rest_group = optimizer.param_groups
    assert heads_group["params"] == [model["heads"].weight] and rest_group["params"] == [model["dit"].weight]
    scheduler = scheduler_from_config(optimizer, optim, total_steps=6)
    for _ in range(4):
        before = {k: m.weight.item() for k, m in model.items()}
        lr = rest_group["lr"]
        optimizer.zero_grad()
        sum(m.weight.sum() for m in model.values()).backward()
        optimizer.step()
        scheduler.step()
        moved = {k: before[k] - m.weight.item() for k, m in model.items()}  # Adam's first step is lr x sign
        assert moved["dit"] == pytest.approx(lr, rel=1e-4) and moved["heads"] == pytest.approx(0.25 * lr, rel=1e-4)
        assert moved["frozen"] == 0.0
    assert make_optimizer(model, optim, torch.device("cpu")).param_groups[0]["params"] == [
        model["heads"].weight, model["dit"].weight]  # no scales: one group, in module order


# ---------------------------------------------------------------- EMA


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 1)
        self.frozen = nn.Parameter(torch.ones(3), requires_grad=False)
        self.register_buffer("stat", torch.zeros(2))


def test_ema_matches_closed_form_and_ignores_frozen() -> None:
    model = _Tiny()
    w0 = model.lin.weight.detach().clone()
    ema = EMA(model, decay=0.9)
    assert set(ema.params) == {"lin.weight", "lin.bias"}  # frozen parameters are never copied
    values = [1.0, 2.0, 3.0]
    for v in values:
        with torch.no_grad():
            model.lin.weight.fill_(v)
            model.stat.fill_(v)
        ema.update(model)
    d = 0.9  # s_n = d^n s_0 + sum_k (1 - d) d^(n-k) v_k
    expected = d**3 * w0 + (1 - d) * (d**2 * 1.0 + d * 2.0 + 3.0)
    assert torch.allclose(ema.params["lin.weight"], expected, atol=1e-6)
    assert torch.equal(ema.buffers["stat"], torch.full((2,), 3.0))  # buffers copied, not averaged


def test_ema_update_every_and_bf16_model_keeps_fp32_shadow() -> None:
    model = _Tiny().to(torch.bfloat16)
    ema = EMA(model, decay=0.5, update_every=2)
    assert ema.params["lin.bias"].dtype == torch.float32
    with torch.no_grad():
        model.lin.bias.fill_(4.0)
    assert ema.update(model) is False  # 1st call: no update
    before = ema.params["lin.bias"].clone()
    assert ema.update(model) is True
    assert torch.allclose(ema.params["lin.bias"], 0.5 * before + 0.5 * 4.0)


def test_ema_swap_in_restores_and_state_round_trip() -> None:
    model = _Tiny()
    ema = EMA(model, decay=0.0)  # decay 0: the shadow equals the last update exactly
    with torch.no_grad():
        model.lin.weight.fill_(5.0)
    ema.update(model)
    with torch.no_grad():
        model.lin.weight.fill_(-1.0)
    with ema.swap_in(model):
        assert torch.all(model.lin.weight == 5.0)
    assert torch.all(model.lin.weight == -1.0)

    other = EMA(_Tiny(), decay=0.0)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 1
    assert all(torch.equal(other.params[n], ema.params[n]) for n in ema.params)
    target = _Tiny()
    other.copy_to(target)
    assert torch.all(target.lin.weight == 5.0)
    with pytest.raises(KeyError, match="EMA state mismatch"):
        other.load_state_dict({"param.lin.weight": torch.zeros(1, 2)})


def test_ema_restart_from_takes_the_current_weights() -> None:
    model = _Tiny()
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.lin.weight.fill_(3.0)
    ema.update(model)
    ema.restart_from(model)
    assert torch.all(ema.params["lin.weight"] == 3.0) and ema.num_updates == 0


# ---------------------------------------------------------------- guard


def test_guard_skips_counts_and_raises_with_message() -> None:
    guard = NonFiniteGuard(max_consecutive=3)
    assert guard.check(torch.tensor(0.5), step=0)
    assert not guard.check(torch.tensor(float("nan")), step=1)
    assert guard.check(torch.tensor(0.25), step=2)  # a finite loss resets the streak
    assert (guard.consecutive, guard.total_skipped) == (0, 1)
    assert not guard.check(float("inf"), step=3)
    assert not guard.check(torch.tensor([1.0, float("nan")]), step=4)
    message = r"3 consecutive non-finite steps at step 5 \(the last had a non-finite loss\); last finite loss 0.25.*lr"
    with pytest.raises(NonFiniteLossError, match=message):
        guard.check(torch.tensor(float("-inf")), step=5)


def test_guard_skips_a_non_finite_gradient_norm_and_counts_it_with_losses() -> None:
    guard = NonFiniteGuard(max_consecutive=2)
    assert guard.check(torch.tensor(0.5), step=0) and guard.check_grad_norm(1.5, step=0)
    assert guard.check(torch.tensor(0.5), step=1)
    assert not guard.check_grad_norm(float("nan"), step=1)
    assert (guard.consecutive, guard.total_skipped, guard.last_finite_loss) == (1, 1, 0.5)
    message = r"2 consecutive non-finite steps at step 2 \(the last had a non-finite loss\); last finite loss 0.5"
    with pytest.raises(NonFiniteLossError, match=message):
        guard.check(float("nan"), step=2)


def test_guard_follows_other_ranks_and_state_round_trip() -> None:
    # Simulate a world where another rank saw NaN: the reduced flag says "bad" although ours is finite.
    other_rank_bad = NonFiniteGuard(max_consecutive=5, reduce_fn=lambda flag: torch.ones_like(flag))
    assert not other_rank_bad.check(torch.tensor(1.0), step=7)
    state = other_rank_bad.state_dict()
    restored = NonFiniteGuard(max_consecutive=5)
    restored.load_state_dict(state)
    assert (restored.consecutive, restored.total_skipped, restored.checks) == (1, 1, 1)
    assert all(isinstance(v, (int, float, type(None))) for v in state.values())


def _guard_worker(rank: int, world: int, init_file: str, results: dict) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        guard = NonFiniteGuard(max_consecutive=5)
        losses = [1.0, float("nan") if rank == 1 else 2.0, 3.0]
        results[rank] = [guard.check(torch.tensor(v), step=i) for i, v in enumerate(losses)]
    finally:
        dist.destroy_process_group()


def test_guard_decision_identical_across_two_gloo_ranks(tmp_path) -> None:
    import torch.multiprocessing as mp

    manager = mp.get_context("spawn").Manager()
    results = manager.dict()
    mp.spawn(_guard_worker, args=(2, str(tmp_path / "init"), results), nprocs=2, join=True)
    assert results[0] == results[1] == [True, False, True]


# ---------------------------------------------------------------- seeding


def test_seed_everything_reproduces_all_generators() -> None:
    seed_everything(123)
    first = (random.random(), np.random.rand(), torch.rand(3))
    seed_everything(123)
    second = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == second[0] and first[1] == second[1] and torch.equal(first[2], second[2])
    with pytest.raises(ValueError):
        seed_everything(-1)


class _NumpyNoise(Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> float:
        return float(np.random.rand())  # numpy randomness: identical across workers without seed_worker


def test_seed_worker_and_generator_make_workers_distinct_and_repeatable() -> None:
    def draw() -> list[float]:
        loader = DataLoader(_NumpyNoise(), batch_size=1, num_workers=2, worker_init_fn=seed_worker,
                            generator=make_generator(7), multiprocessing_context="fork")
        return [float(b) for b in loader]

    a, b = draw(), draw()
    assert a == b  # same generator seed -> same worker seeds -> same numbers
    worker0, worker1 = a[0::2], a[1::2]  # workers alternate batches
    assert worker0 != worker1  # workers do not repeat each other's numpy stream
    assert make_generator(3).initial_seed() == 3


@pytest.fixture()
def restore_determinism():
    state = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    yield
    torch.use_deterministic_algorithms(state[0], warn_only=state[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = state[2], state[3]
    if state[4] is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = state[4]


def test_set_determinism_toggles_flags(restore_determinism) -> None:
    set_determinism(True, warn_only=True)
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    set_determinism(False)
    assert not torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.deterministic


# ---------------------------------------------------------------- logging over ranks


def test_logged_metrics_are_the_mean_over_ranks(monkeypatch) -> None:
    """Rank 0's loss alone is 1/N of the batch; a term only one rank reports is averaged over it."""
    from stages.trainer import loop

    monkeypatch.setattr(loop, "all_ranks", lambda local: [local, {"loss": 3.0, "lr": 0.1, "phys_fall": 2.0}])
    assert loop.mean_over_ranks({"loss": 1.0, "lr": 0.1}) == {"loss": 2.0, "lr": 0.1, "phys_fall": 2.0}
    monkeypatch.setattr(loop, "all_ranks", lambda local: [local])
    assert loop.mean_over_ranks({"loss": 1.0}) == {"loss": 1.0}
