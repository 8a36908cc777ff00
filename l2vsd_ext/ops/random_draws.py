"""Random draws for tensors on any device from a generator on any device.

torch.rand(..., generator=g, device=d) requires g to live on d: a CPU generator with CUDA tensors
raises. The loop seeds CPU generators (cheap to checkpoint, the same on every machine), so its
draws go through these helpers: drawn on the generator's own device, then moved. A run seeded on
CPU and one on CUDA therefore draw the same numbers. Without a generator the draw happens directly
on `device` from torch's global RNG for that device."""
from __future__ import annotations

from typing import Optional, Sequence

import torch


def _source_device(generator: Optional[torch.Generator], device) -> torch.device:
    return generator.device if generator is not None else torch.device(device)


def uniform(shape: Sequence[int], generator: Optional[torch.Generator], device,
            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """U[0, 1) of `shape` on `device`."""
    src = _source_device(generator, device)
    return torch.rand(tuple(shape), generator=generator, device=src, dtype=dtype).to(device)


def integers(high: int, shape: Sequence[int], generator: Optional[torch.Generator],
             device) -> torch.Tensor:
    """Uniform int64 in [0, high) of `shape` on `device`."""
    src = _source_device(generator, device)
    return torch.randint(int(high), tuple(shape), generator=generator, device=src).to(device)
