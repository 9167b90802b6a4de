"""Randomness in one place: seeding, and capturing and restoring every RNG a step draws from.

`seed_everything` seeds Python, numpy and torch (CPU + all CUDA devices). DataLoader workers get
`seed_worker` plus a `make_generator(seed)` generator: torch seeds each worker from the generator,
and `seed_worker` forwards that per-worker seed to numpy and `random`, which torch does not seed
(without it every worker's numpy augmentations repeat). `set_determinism` is opt-in because
deterministic kernels are slower (torchtitan `set_determinism`).

RNG states are kept in a pickle-free form.

Python's `random`, numpy's global generator, torch CPU and torch CUDA states become tensors and
Python primitives only, so checkpoints load with `torch.load(weights_only=True)` (no
pickle). Each process has its own RNG streams (dropout, noise, augmentation differ per rank), so
a multi-process run saves one state per rank: see `capture_rng_all_ranks` / `rng_for_rank`.
"""

from __future__ import annotations

import logging
import os
import random
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

CUBLAS_WORKSPACE = ":4096:8"


def seed_everything(seed: int) -> None:
    """Seed `random`, numpy's global generator and torch on CPU and every CUDA device."""
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds all CUDA devices (lazily if CUDA is not initialised yet)
    logger.info("seeded python/numpy/torch with %d", seed)


def seed_worker(worker_id: int) -> None:
    """`DataLoader(worker_init_fn=seed_worker)`: derive numpy/random seeds from torch's worker seed."""
    worker_seed = torch.initial_seed() % 2**32  # torch already set base_seed + worker_id here
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def make_generator(seed: int) -> torch.Generator:
    """CPU generator for `DataLoader(generator=...)`, so shuffles and worker seeds follow `seed`."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def set_determinism(enabled: bool, warn_only: bool = True) -> None:
    """Switch deterministic algorithms on (slower, reproducible) or back off.

    warn_only=True warns instead of failing on ops without a deterministic kernel (some attention
    backward passes), so a run does not die late on an unexpected op. CUBLAS_WORKSPACE_CONFIG
    only takes effect if set before the first cuBLAS call: call this before building models.
    """
    if enabled:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
        torch.use_deterministic_algorithms(True, warn_only=warn_only)
    else:
        torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = False if enabled else torch.backends.cudnn.benchmark
    logger.info("deterministic algorithms %s (warn_only=%s)", "on" if enabled else "off", warn_only)



def capture_rng() -> dict[str, Any]:
    """This process's RNG states: {"python", "numpy", "torch", "cuda"} of tensors/primitives."""
    version, internal, gauss_next = random.getstate()
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next},
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": [s.cpu() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng`; the next random numbers equal those drawn after the capture."""
    py = state["python"]
    gauss = py["gauss_next"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"].tolist()), None if gauss is None else float(gauss)))
    npd = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": npd["bit_generator"],
            "state": {"key": npd["key"].numpy().astype(np.uint32), "pos": int(npd["pos"])},
            "has_gauss": int(npd["has_gauss"]),
            "gauss": float(npd["gauss"]),
        }
    )
    torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        if len(cuda) != torch.cuda.device_count():
            logger.warning("saved %d CUDA RNG states but %d devices are visible; restoring the overlap", len(cuda), torch.cuda.device_count())
        for index, cuda_state in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.to(torch.uint8), index)
    elif cuda:
        logger.warning("checkpoint holds CUDA RNG states but CUDA is not available; they are not restored")


def capture_rng_all_ranks() -> list[dict[str, Any]]:
    """RNG state of every rank, gathered on all ranks (one entry when not distributed).

    Collective: call it on every rank. Use the result as `save_checkpoint(..., rng={"ranks": ...})`.
    """
    return all_ranks(capture_rng())


def all_ranks(local: Any) -> list[Any]:
    """``local`` of every rank, in rank order, on all ranks (collective). Tensors must be on the CPU:
    a gathered CUDA tensor would land on the sender's device index."""
    if not (dist.is_available() and dist.is_initialized()):
        return [local]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, local)
    return gathered


def rng_for_rank(saved: list[dict[str, Any]], rank: int) -> dict[str, Any] | None:
    """The saved state of `rank`, or None (with a warning) when the run had fewer processes."""
    if rank < len(saved):
        return saved[rank]
    logger.warning("checkpoint has RNG states for %d ranks; rank %d keeps its fresh seed", len(saved), rank)
    return None
