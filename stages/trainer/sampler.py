"""A distributed, resumable sampler: a resumed run continues mid-epoch with the batches not yet seen.

Each epoch's order is a permutation drawn from (seed, epoch) alone, padded by wrapping to a
multiple of `num_replicas` and dealt round-robin like `DistributedSampler`. Rank r takes global
positions r, r + R, r + 2R, ... of that list, so the *global* number of consumed samples
(`position`) identifies exactly where every rank stands, even if the number of processes changes
on resume (the permutation prefix does not depend on R).

The sampler cannot count consumption itself: DataLoader workers prefetch indices ahead of the
training loop. The loop reports what it consumed with `advance(batch_size)` after each batch, and
`state_dict()` then records {epoch, position}. Usage:

    for epoch in range(start_epoch, epochs):
        sampler.set_epoch(epoch)          # keeps a loaded mid-epoch position, else starts at 0
        for batch in loader:
            ...; sampler.advance(len(batch))

Do not pass the loader through `accelerator.prepare` (it would re-shard an already sharded sampler).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sized
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

logger = logging.getLogger(__name__)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class ResumableSampler(Sampler[int]):
    """Deterministic per-epoch shuffle, sharded over ranks, that skips what a checkpoint already saw."""

    def __init__(
        self,
        data: Sized | int,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        world, own_rank = _world()
        self.num_replicas = world if num_replicas is None else num_replicas
        self.rank = own_rank if rank is None else rank
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} is outside [0, {self.num_replicas})")
        self.dataset_len = data if isinstance(data, int) else len(data)
        if self.dataset_len < 1:
            raise ValueError("ResumableSampler: the dataset is empty")
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        if drop_last:  # drop the tail so every rank gets the same count without repeats
            self.total_size = (self.dataset_len // self.num_replicas) * self.num_replicas
        else:  # pad by wrapping around, as DistributedSampler does
            self.total_size = math.ceil(self.dataset_len / self.num_replicas) * self.num_replicas
        if self.total_size == 0:
            raise ValueError(f"drop_last with {self.dataset_len} samples and {self.num_replicas} replicas leaves nothing")
        self.num_samples = self.total_size // self.num_replicas
        """Samples per rank in a full epoch (use this, not len(), for steps-per-epoch arithmetic)."""
        self.epoch = 0
        self.position = 0
        """Samples consumed this epoch, summed over all ranks."""
        self._resume_pending = False

    def global_order(self, epoch: int) -> list[int]:
        """The padded/truncated index list of `epoch` shared by all ranks (length total_size)."""
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + epoch)
            order = torch.randperm(self.dataset_len, generator=generator).tolist()
        else:
            order = list(range(self.dataset_len))
        if len(order) < self.total_size:
            repeats = math.ceil(self.total_size / len(order))
            order = (order * repeats)[: self.total_size]
        return order[: self.total_size]

    def plan_run(self, total_samples: int) -> None:
        """Told how many samples (over all ranks) the whole run draws; a plain shuffle ignores it
        (a curriculum measures progress against it: stages.trainer.curriculum)."""

    def _local_skip(self) -> int:
        skip, remainder = divmod(self.position, self.num_replicas)
        if remainder:  # resumed with a different world size: round up, never repeat a sample
            logger.warning("position %d is not a multiple of %d replicas; skipping %d extra", self.position, self.num_replicas, remainder)
            skip += 1
        return min(skip, self.num_samples)

    def __iter__(self) -> Iterator[int]:
        order = self.global_order(self.epoch)
        local = order[self.rank : self.total_size : self.num_replicas]
        return iter(local[self._local_skip():])

    def __len__(self) -> int:
        """Samples this rank will still yield this epoch (fewer than num_samples right after resume)."""
        return self.num_samples - self._local_skip()

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch`; keeps the loaded position if it is the epoch a checkpoint stopped in."""
        if self._resume_pending and epoch == self.epoch:
            logger.info("resuming epoch %d after %d of %d samples", epoch, self.position, self.total_size)
        else:
            self.position = 0
        self.epoch = epoch
        self._resume_pending = False

    def advance(self, local_samples: int) -> None:
        """Report that each rank consumed `local_samples` more samples (call once per batch)."""
        self.position = min(self.position + local_samples * self.num_replicas, self.total_size)

    @property
    def epoch_done(self) -> bool:
        return self.position >= self.total_size

    def state_dict(self) -> dict[str, Any]:
        """{epoch, position, seed, dataset_len}: identical on every rank (position is global)."""
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "dataset_len": self.dataset_len}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore; the next `set_epoch(state["epoch"])` continues after the consumed samples."""
        if int(state.get("dataset_len", self.dataset_len)) != self.dataset_len or int(state.get("seed", self.seed)) != self.seed:
            raise ValueError(
                f"sampler state is for dataset_len={state.get('dataset_len')}, seed={state.get('seed')}; this sampler has "
                f"dataset_len={self.dataset_len}, seed={self.seed}: the data or seed changed, so the saved position is meaningless"
            )
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._resume_pending = True
