"""Atomic files: write to a temporary file in the same folder, fsync, rename over the target, fsync
the folder. A crash at any point leaves either the old file or the new one, never a torn one."""
from __future__ import annotations

import io
import os
import tempfile

import torch


def atomic_write_bytes(path: str, data: bytes) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_checkpoint(state: dict, path: str) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str) -> dict:
    # Our own checkpoints hold optimiser states and generator states, not only tensors.
    return torch.load(path, map_location="cpu", weights_only=False)
