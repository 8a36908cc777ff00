"""Atomic files: write to a temporary file in the same folder, fsync, rename over the target, fsync
the folder. A crash at any point leaves either the old file or the new one, never a torn one.
Checkpoints are read with torch.load(weights_only=True): tensors and plain containers only, so a
run folder from someone else cannot run code through its pickle."""
from __future__ import annotations

import io
import os
import tempfile

import torch

from .chaos_hook import point as chaos_point


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str, data: bytes) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        # mkstemp creates 0600; give the file the mode any other file of the run gets.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        chaos_point("write:" + os.path.basename(path))
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
    """The checkpoint at `path` as a dict; any unreadable, truncated, foreign or unsafe file is one
    ConfigError naming it. Nothing in the file is executed."""
    import pickle
    import warnings
    import zipfile

    from .config import ConfigError

    try:
        with warnings.catch_warnings():
            # A foreign file starting with a PROTO opcode makes torch warn about the pickle protocol
            # on stderr; the one-line error below says all there is to say.
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message is a paragraph; keep its one line that says what the file holds.
        lines = [line.strip() for line in str(err).splitlines()]
        culprit = next((line for line in lines if "GLOBAL" in line), None)
        if culprit:
            raise ConfigError(f"'{path}': refused to load: the checkpoint holds code, not only tensors and "
                              f"plain containers ({culprit.rstrip('.')}); nothing was executed") from None
        detail = next((line for line in lines if line.startswith("Unsupported")), type(err).__name__)
        raise ConfigError(f"'{path}': not a readable checkpoint ({detail})") from None
    except (OSError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile, TypeError, AttributeError,
            IndexError, KeyError) as err:  # truncated or foreign files fail in torch.load in many ways
        text = str(err).strip().split(". ")[0] if str(err).strip() else "empty or cut short"
        raise ConfigError(f"'{path}': not a readable checkpoint ({type(err).__name__}: {text})") from None
    if not isinstance(state, dict):
        raise ConfigError(f"'{path}': not an l2vsd_ext checkpoint (holds a {type(state).__name__})")
    step = state.get("step", 0)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ConfigError(f"'{path}': not a readable checkpoint (its step is {step!r}, not a count)")
    return state
