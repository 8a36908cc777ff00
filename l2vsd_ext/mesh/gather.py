"""Row gathers whose backward is deterministic on CPU.

x[index] with repeated rows backpropagates through index_put(accumulate=True), which on a
multithreaded CPU sums the repeats in an order that depends on the threads: two identical runs
then differ in the last bits, and a resumed mesh stage no longer reproduces the uninterrupted one.
index_select's backward is index_add, which sums them in index order (and is faster here)."""
from __future__ import annotations

import torch


def take_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x[index] along dim 0, for an integer index of any shape."""
    return x.index_select(0, index.reshape(-1).long()).reshape(*index.shape, *x.shape[1:])
