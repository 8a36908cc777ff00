"""Per-step statistics kept on the device and read back in one transfer per logging interval.

Reading a CUDA scalar (float(t), t.item(), bool(t.any())) waits for the GPU to finish everything
queued before it; doing that for every statistic of every step serialises the loop. The loop's
stats dicts hold 0-d tensors (or plain numbers) instead, and to_host() turns a batch of them into
plain Python numbers with one stack + tolist per device."""
from __future__ import annotations

from typing import Iterable

import torch


def to_host(records: Iterable[dict]) -> list[dict]:
    """Copies of `records` with every 0-d tensor replaced by its Python number."""
    records = [dict(r) for r in records]
    slots: dict[torch.device, list[tuple[dict, str, torch.Tensor]]] = {}
    for record in records:
        for key, value in record.items():
            if isinstance(value, torch.Tensor):
                if value.numel() != 1:
                    raise ValueError(f"step stats: '{key}' must be a scalar, got shape "
                                     f"{tuple(value.shape)}")
                slots.setdefault(value.device, []).append((record, key, value))
    for entries in slots.values():
        stacked = torch.stack([v.detach().reshape(()).double() for _, _, v in entries])
        for (record, key, value), number in zip(entries, stacked.tolist()):
            is_int = not value.is_floating_point() and not value.is_complex()
            record[key] = int(number) if is_int else number
    return records


class StatsBuffer:
    """Collects step stats; flush() returns them as plain numbers (one read per device)."""

    def __init__(self):
        self._pending: list[dict] = []

    def add(self, record: dict) -> None:
        self._pending.append(record)

    def __len__(self) -> int:
        return len(self._pending)

    def flush(self) -> list[dict]:
        pending, self._pending = self._pending, []
        return to_host(pending)
