"""Opens a run folder for export and evaluation: every way a folder can be missing or unreadable
becomes one ConfigError naming the folder (the CLIs print it as one line and exit with code 2)."""
from __future__ import annotations

import os
import pickle
import zipfile

from ..config import ConfigError


def check_run_dir(run_dir: str) -> None:
    """A folder holding a checkpoint, checked before the folder is locked (a lock file is never
    created in a folder that is not a run)."""
    from ..run_folder import CHECKPOINT

    if not os.path.isdir(run_dir):
        raise ConfigError(f"RUN_DIR: '{run_dir}' is not a folder")
    if not os.path.isfile(os.path.join(run_dir, CHECKPOINT)):
        raise ConfigError(f"'{run_dir}' is not a run folder: no {CHECKPOINT} in it")


def open_run(run_dir: str, device="cpu"):
    """(renderer in eval mode, config, step) of the run in `run_dir`; no diffusion prior loaded."""
    from ..trainer import load_scene

    if not os.path.isdir(run_dir):
        raise ConfigError(f"RUN_DIR: '{run_dir}' is not a folder")
    try:
        return load_scene(run_dir, device)
    except ConfigError:
        raise
    except (pickle.UnpicklingError, zipfile.BadZipFile, OSError, TypeError, AttributeError,
            IndexError) as err:  # a truncated or foreign file fails in torch.load in many ways
        raise ConfigError(f"'{run_dir}': checkpoint is not readable ({type(err).__name__}: {err})") from err
