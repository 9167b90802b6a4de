"""Resumable sampler: an interrupted and resumed run sees exactly the uninterrupted sequence."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from stages.trainer.sampler import ResumableSampler

N, BATCH, EPOCHS = 11, 2, 2


def _run(
    samplers: list[ResumableSampler], stop_after: int | None = None, start_epoch: int = 0
) -> tuple[list[list[int]], dict | None]:
    """Simulate a training loop on every rank; returns per-rank index streams and, if stopped, the state."""
    streams: list[list[int]] = [[] for _ in samplers]
    batches_done = 0
    for epoch in range(start_epoch, EPOCHS):
        for sampler in samplers:
            sampler.set_epoch(epoch)
        loaders = [DataLoader(list(range(N)), batch_size=BATCH, sampler=s) for s in samplers]
        for rank_batches in zip(*loaders):  # ranks step in lockstep, as DDP does
            if stop_after is not None and batches_done == stop_after:
                return streams, samplers[0].state_dict()
            for rank, (sampler, batch) in enumerate(zip(samplers, rank_batches)):
                streams[rank].extend(batch.tolist())
                sampler.advance(len(batch))
            batches_done += 1
    return streams, None


def _samplers(replicas: int) -> list[ResumableSampler]:
    return [ResumableSampler(N, num_replicas=replicas, rank=r, seed=5) for r in range(replicas)]


@pytest.mark.parametrize("replicas", [1, 2])
def test_interrupted_run_resumes_to_the_same_sequence(replicas: int) -> None:
    full, _ = _run(_samplers(replicas))
    per_epoch = len(_samplers(replicas)[0]) // BATCH + (len(_samplers(replicas)[0]) % BATCH > 0)
    for stop in range(1, 2 * per_epoch):  # every interruption point, including the epoch boundary
        head, state = _run(_samplers(replicas), stop_after=stop)
        assert state is not None
        resumed = _samplers(replicas)
        for sampler in resumed:
            sampler.load_state_dict(state)
        tail, _ = _run(resumed, start_epoch=state["epoch"])
        for rank in range(replicas):
            assert head[rank] + tail[rank] == full[rank], (replicas, stop, rank)


def test_checkpoint_at_epoch_end_resumes_into_next_epoch() -> None:
    full, _ = _run(_samplers(2))
    samplers = _samplers(2)
    for s in samplers:
        s.set_epoch(0)
        for _ in s:
            pass
        s.advance(s.num_samples)  # the whole epoch was consumed; checkpoint before set_epoch(1)
    state = samplers[0].state_dict()
    assert state == {"epoch": 0, "position": 12, "seed": 5, "dataset_len": N} and samplers[0].epoch_done
    resumed = _samplers(2)
    for s in resumed:
        s.load_state_dict(state)
    tail, _ = _run(resumed, start_epoch=0)  # epoch 0 yields nothing, epoch 1 runs in full
    assert all(full[r][6:] == tail[r] for r in range(2))


def test_shards_match_distributed_sampler_coverage_and_padding() -> None:
    samplers = _samplers(2)
    for s in samplers:
        s.set_epoch(3)
    shards = [list(s) for s in samplers]
    assert len(shards[0]) == len(shards[1]) == 6  # 11 samples padded to 12
    assert sorted(set(shards[0]) | set(shards[1])) == list(range(N))
    assert shards[0] != sorted(shards[0])  # shuffled
    reference = DistributedSampler(list(range(N)), num_replicas=2, rank=0, seed=5)
    reference.set_epoch(3)
    assert shards[0] == list(reference)  # same permutation and dealing as torch's sampler


def test_epochs_differ_and_repeat_for_the_same_seed() -> None:
    a, b = ResumableSampler(N, 1, 0, seed=1), ResumableSampler(N, 1, 0, seed=1)
    a.set_epoch(0)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    b.set_epoch(0)
    assert list(b) == first
    unshuffled = ResumableSampler(N, 1, 0, shuffle=False)
    assert list(unshuffled) == list(range(N))


def test_drop_last_and_len_after_resume() -> None:
    sampler = ResumableSampler(N, num_replicas=2, rank=1, drop_last=True)
    assert sampler.num_samples == 5 and len(list(sampler)) == 5
    sampler.load_state_dict({"epoch": 0, "position": 4, "seed": 0, "dataset_len": N})
    sampler.set_epoch(0)
    assert len(sampler) == 3 and len(list(sampler)) == 3
    sampler.set_epoch(1)  # a new epoch starts from its beginning
    assert len(sampler) == 5


def test_state_from_other_data_is_rejected() -> None:
    sampler = ResumableSampler(N, 1, 0, seed=0)
    with pytest.raises(ValueError, match="data or seed changed"):
        sampler.load_state_dict({"epoch": 0, "position": 2, "seed": 0, "dataset_len": N + 1})


def test_resume_with_a_different_world_size_continues_the_global_order() -> None:
    one = ResumableSampler(N, 1, 0, seed=2)
    one.set_epoch(0)
    order = list(one)
    one.advance(4)  # 4 samples consumed by a single process
    two = [ResumableSampler(N, 2, r, seed=2) for r in range(2)]
    for s in two:
        s.load_state_dict(one.state_dict())
        s.set_epoch(0)
    rest = [list(s) for s in two]
    assert sorted(rest[0] + rest[1]) == sorted(order[4:] + order[: 12 - N])  # remaining + 1 pad sample
    assert torch.tensor(rest[0][:1]).item() == order[4]
