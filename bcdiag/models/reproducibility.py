"""Repeatable training: the same recipe and seed give the same weights, bit for bit.

A member's training draws from three random number generators: Python's `random`
(fastai's DataLoader takes its shuffling generator from it when it is built),
NumPy's, and torch's (weight initialisation, dropout, batch augmentation). Seeded,
they make the run repeatable only together with a fixed intra-op thread count — a
different count sums in a different order (measured on bcnet16, BreastMNIST, two
epochs: 62 of 74 tensors of a member differ between one and two threads) — and with
algorithms that are deterministic for that count. Weights then depend on the
recipe, the seed, ``torch_threads`` and the kind of machine (CPU instruction set,
GPU model, library versions), nothing else. `tests/test_determinism.py` trains twice
in two processes and compares every tensor.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

# cuBLAS is repeatable only with a fixed workspace; read when its first handle is made.
_CUBLAS_WORKSPACE = ":4096:8"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (every device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def reproducible(seed: int, threads: int) -> Iterator[None]:
    """Within the block, training repeats exactly for this `seed` and thread count.

    Seeds every generator, sets torch's intra-op threads to `threads`, and turns on
    `torch.use_deterministic_algorithms` (an op with no deterministic version raises,
    rather than warns) with cuDNN autotuning off. Build the DataLoaders inside the
    block: their shuffling generator is drawn from the seeded `random` then. The
    previous thread count and algorithm settings are restored on exit; the seeds are not.
    """
    previous = (
        torch.get_num_threads(),
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
    )
    if torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", _CUBLAS_WORKSPACE)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    seed_everything(seed)
    try:
        yield
    finally:
        threads_before, enabled, warn_only, benchmark = previous
        torch.set_num_threads(threads_before)
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark
