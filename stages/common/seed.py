"""Seeding in one place (STYLE item 14): process RNGs, DataLoader workers, and determinism.

`seed_everything` seeds Python, numpy and torch (CPU + all CUDA devices). DataLoader workers get
`seed_worker` plus a `make_generator(seed)` generator: torch seeds each worker from the generator,
and `seed_worker` forwards that per-worker seed to numpy and `random`, which torch does not seed
(without it every worker's numpy augmentations repeat). `set_determinism` is opt-in because
deterministic kernels are slower (torchtitan `set_determinism`).
"""

from __future__ import annotations

import logging
import os
import random

import numpy as np
import torch

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
