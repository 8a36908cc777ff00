"""The run's configuration: one dataclass, filled from defaults < --config YAML < command-line flags,
validated before anything is written, and saved resolved into the run folder."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

MODES = ("sds", "vsd", "lvsd", "l2vsd")
DTYPES = ("float32", "float16", "bfloat16")


class ConfigError(ValueError):
    """A bad setting; the CLI prints it as one line and exits with code 2."""


@dataclass
class RunConfig:
    prompt: str = ""
    negative_prompt: str = ""
    mode: str = "l2vsd"
    steps: int = 15000
    resolution: int = 64  # render resolution (ProlificDreamer's first stage: 64)
    encode_resolution: int = 512  # renders are resized to this before the VAE
    batch_size: int = 1
    seed: int = 0
    out: str = "runs/l2vsd"
    resume: bool = False
    device: str | None = None
    dtype: str | None = None
    pretrained: str = "stabilityai/stable-diffusion-2-1-base"
    # guidance
    guidance_scale: float = 7.5
    eta: float = 1e-2
    last_layer: bool = False
    lora_steps: int = 1
    esd_lambda: float = 0.0
    min_step: float = 0.02
    max_step: float = 0.98
    max_step_after: float = 0.5
    anneal_at: float = 0.2  # fraction of training after which t_max = max_step_after
    # optimisation
    lr: float = 1e-2  # NeRF field
    lora_lr: float = 1e-3
    lora_rank: int = 4
    condition_dropout: float = 0.1
    # scene
    log2_hashmap_size: int = 19
    n_levels: int = 16
    occupancy_resolution: int = 64
    max_samples_per_ray: int = 512
    # outputs
    val_every: int = 200
    ckpt_every: int = 500
    turntable_views: int = 30
    export_at_end: bool = True  # turntable video + mesh into RUN/export/ (l2vsd_ext.export)
    stop_after: int | None = None  # stop as if killed after this step's checkpoint (tests)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> set:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        unknown = set(values) - cls.field_names()
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(sorted(unknown))}")
        return cls(**values)


# Defaults a run needs on a given prior, applied only to settings the user did not give.
# 'shapes' (the shipped ground-truth prior): its native 32 px images, and a field, sample budget
# and step count sized for a CPU run of minutes (64 samples per ray reach past an opaque front).
PRETRAINED_DEFAULTS = {
    "shapes": dict(resolution=32, encode_resolution=32, steps=600, n_levels=8, log2_hashmap_size=15,
                   occupancy_resolution=32, max_samples_per_ray=64, val_every=100,
                   ckpt_every=100),
}


def with_pretrained_defaults(values: dict) -> dict:
    """values (the settings given) completed with the defaults of the prior they name."""
    return {**PRETRAINED_DEFAULTS.get(values.get("pretrained"), {}), **values}


def load_yaml(path: str) -> dict:
    import yaml

    try:
        with open(path) as fh:
            data = yaml.safe_load(fh) or {}
    except OSError as err:
        raise ConfigError(f"--config: cannot read '{path}': {err.strerror}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"--config: '{path}' is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"--config: '{path}' must hold a mapping of settings")
    return {k.replace("-", "_"): v for k, v in data.items()}


def save_yaml(config: RunConfig, path: str) -> None:
    import yaml

    from .checkpoint import atomic_write_bytes

    text = yaml.safe_dump(config.to_dict(), sort_keys=False)
    atomic_write_bytes(path, text.encode())


def _nearest_existing_parent(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def validate(config: RunConfig, vae_scale_factor: int = 8) -> None:
    """Raises ConfigError for the first bad setting; checks nothing that needs the model."""
    if not isinstance(config.prompt, str) or not config.prompt.strip():
        raise ConfigError("--prompt: a non-empty prompt is required")
    if config.mode not in MODES:
        raise ConfigError(f"--mode: unknown mode '{config.mode}' (choose from {', '.join(MODES)})")
    if config.steps < 1:
        raise ConfigError(f"--steps: must be >= 1, got {config.steps}")
    if config.resolution < 8:
        raise ConfigError(f"--resolution: must be >= 8, got {config.resolution}")
    if config.encode_resolution < vae_scale_factor or config.encode_resolution % vae_scale_factor:
        raise ConfigError(f"encode_resolution: the VAE needs a multiple of {vae_scale_factor}, "
                          f"got {config.encode_resolution}")
    if config.dtype is not None and config.dtype not in DTYPES:
        raise ConfigError(f"--dtype: must be one of {', '.join(DTYPES)}, got '{config.dtype}'")
    if config.lora_steps < 1:
        raise ConfigError(f"--lora-steps: must be >= 1, got {config.lora_steps}")
    if config.eta < 0:
        raise ConfigError(f"--eta: must be >= 0, got {config.eta}")
    if not 0 <= config.esd_lambda <= 1:
        raise ConfigError(f"--esd-lambda: must be in [0, 1], got {config.esd_lambda}")
    if config.esd_lambda and config.mode not in ("vsd", "l2vsd"):
        raise ConfigError("--esd-lambda: only used with --mode vsd or l2vsd")
    if config.batch_size < 1:
        raise ConfigError(f"batch_size: must be >= 1, got {config.batch_size}")
    for name in ("val_every", "ckpt_every"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name}: must be >= 1, got {getattr(config, name)}")
    parent = _nearest_existing_parent(config.out)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--out: '{config.out}' is not writable ('{parent}' is not a writable folder)")
