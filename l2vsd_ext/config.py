"""The run's configuration: one dataclass, filled from defaults < --config YAML < command-line flags,
validated before anything is written, and saved resolved into the run folder."""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field

MODES = ("sds", "vsd", "lvsd", "l2vsd", "hlvsd")
# Modes that linearise the LoRA step (they take --eta, --last-layer, --lookahead-* options).
LOOKAHEAD_MODES = ("l2vsd", "hlvsd")
LORA_INITS = ("gaussian", "kaiming")
CAMERA_INITS = ("default", "zero")
LORA_TEXTS = ("plain", "view")
LOOKAHEAD_DIRECTIONS = ("sgd", "optimizer", "random")
DTYPES = ("float32", "float16", "bfloat16")
LOGGERS = ("none", "tensorboard", "wandb")
BACKGROUNDS = ("mlp", "white")
TIMESTEP_SCHEDULES = ("uniform", "sqrt")
MIN_SEED, MAX_SEED = -2**63, 2**64 - 1 - 100


class ConfigError(ValueError):
    """A bad setting; the CLI prints it as one line and exits with code 2."""


def _f(default, meaning: str):
    """A config field with its meaning, shown by --help and the README."""
    return field(default=default, metadata={"help": meaning})


@dataclass
class RunConfig:
    prompt: str = _f("", "text prompt describing the object (required for a new run)")
    negative_prompt: str = _f("", "negative prompt for classifier-free guidance")
    mode: str = _f("l2vsd", "guidance mode: " + ", ".join(MODES))
    steps: int = _f(15000, "iterations (the default is the paper's coarse stage)")
    resolution: int = _f(64, "render resolution in pixels, >= 8 (paper: 64 coarse, 256 high resolution)")
    encode_resolution: int = _f(512, "renders are resized to this for the VAE (a multiple of 8)")
    batch_size: int = _f(1, "cameras per iteration")
    seed: int = _f(0, "random seed")
    out: str = _f("runs/l2vsd", "run folder")
    resume: bool = _f(False, "continue the run in --out from its checkpoint")
    device: str | None = _f(None, "cpu, cuda or cuda:N (default: cuda if available)")
    dtype: str | None = _f(None, "prior weights: " + ", ".join(DTYPES) + " (default: float16 on CUDA, float32 on CPU)")
    pretrained: str = _f("stabilityai/stable-diffusion-2-1-base",
                         "diffusers model id or local folder; tiny-random: a small random model for smoke tests; "
                         "shapes: the shipped ground-truth prior, with its own defaults")
    # guidance
    guidance_scale: float = _f(7.5, "prior classifier-free guidance scale")
    eta: float = _f(1e-2, "L²-VSD lookahead step η: the tangent is −η·g, g the LoRA loss gradient (l2vsd, hlvsd)")
    eta_relative: float | None = _f(None, "set η each step so that κ = |ε_first|/|ε_φ| equals this value "
                                          "(l2vsd, hlvsd; overrides --eta; see docs/lookahead.md)")
    last_layer: bool = _f(False, "L²-VSD: tangent on the last LoRA layer only (l2vsd, hlvsd)")
    lookahead_camera: bool = _f(True, "the lookahead tangent also covers the score model's camera MLP "
                                      "(l2vsd, hlvsd; false: LoRA factors only)")
    lookahead_direction: str = _f("sgd", "lookahead tangent: sgd (−η·g), optimizer (the LoRA optimiser's "
                                         "actual update, η unused) or random (a control: a random direction "
                                         "of the update's size per tensor) (l2vsd, hlvsd)")
    high_order_diagnostics: bool = _f(False, "log |ε_high| by both definitions (one or two more score-model "
                                             "forwards per step; l2vsd, hlvsd)")
    lora_steps: int = _f(1, "LoRA steps per iteration γ (vsd, lvsd, l2vsd)")
    esd_lambda: float = _f(0.0, "ESD's camera-dropped weight λ in [0, 1] (vsd, l2vsd)")
    min_step: float = _f(0.02, "smallest diffusion timestep, a fraction of T")
    max_step: float = _f(0.98, "largest diffusion timestep before annealing, a fraction of T")
    max_step_after: float = _f(0.98, "largest diffusion timestep after annealing, a fraction of T "
                                     "(threestudio's prolificdreamer.yaml: 0.98, i.e. no annealing)")
    anneal_at: float = _f(0.2, "fraction of training after which the largest timestep is max_step_after")
    anneal_step: int | None = _f(None, "step at which the largest timestep anneals (default: anneal_at × steps; "
                                       "fixed when --resume changes --steps, so the annealing point stays put)")
    timestep_schedule: str = _f("uniform", "timestep schedule: uniform (t ~ U[min_step, max_step·T], with the "
                                           "annealing above) or sqrt (HiFA: one t per step, from max_step to "
                                           "min_step as 1 − √(step/N))")
    sqrt_anneal_steps: int | None = _f(None, "N of the sqrt schedule (default: --steps; fixed when --resume "
                                             "changes --steps, so the schedule stays put)")
    # HiFA (docs/hifa.md)
    hifa: bool = _f(False, "HiFA's preset (threestudio's prolificdreamer-hifa.yaml) for settings not given: "
                           "--lambda-img 0.01, --timestep-schedule sqrt, --min-step 0.3, --max-step 0.98, "
                           "--z-variance-weight 300 (sds: 100), --sparsity-weight 10, --entropy-weight 1000 "
                           "from --entropy-start-step 10000")
    lambda_img: float = _f(0.0, "weight of HiFA's image-space score (both denoised latents decoded; every mode)")
    z_variance_weight: float = _f(0.0, "weight of HiFA's z-variance regulariser (rays with opacity > 0.5)")
    # optimisation
    lr: float = _f(1e-2, "NeRF hash-grid learning rate (the MLP and background get lr/10)")
    lora_lr: float = _f(1e-4, "LoRA and camera-embedding learning rate (threestudio: 1e-4)")
    lora_beta1: float = _f(0.9, "LoRA AdamW β1")
    lora_beta2: float = _f(0.99, "LoRA AdamW β2 (threestudio: 0.99)")
    lora_eps: float = _f(1e-15, "LoRA AdamW ε (threestudio: 1e-15)")
    lora_weight_decay: float = _f(0.01, "LoRA AdamW weight decay (threestudio: AdamW's default 0.01)")
    lora_init: str = _f("gaussian", "LoRA A init: gaussian (N(0, 1/r²), diffusers' and threestudio's) or "
                                    "kaiming (peft's default)")
    camera_init: str = _f("default", "camera MLP output layer init: default (PyTorch's, as threestudio) or zero")
    lora_text: str = _f("plain", "text of the score model: plain (the prompt without view suffix, as "
                                 "threestudio) or view (the view-suffixed prompt the prior sees)")
    background: str = _f("mlp", "behind the object: " + ", ".join(BACKGROUNDS) +
                         " (mlp: learned from the view direction; white: fixed, for priors trained on white)")
    random_background: float = _f(0.5, "probability of a random solid background colour per training step")
    sparsity_weight: float = _f(0.0, "weight of the mean rendered opacity in the loss (clears haze)")
    entropy_weight: float = _f(0.0, "weight of the rendered opacity's binary entropy (crisp silhouettes)")
    entropy_start_step: int = _f(0, "step from which --entropy-weight applies (threestudio's lambda_opaque "
                                    "0 -> 1000 at step 10000 in prolificdreamer-hifa)")
    lora_rank: int = _f(4, "LoRA rank")
    condition_dropout: float = _f(0.1, "probability of dropping the camera condition in LoRA steps")
    # scene
    log2_hashmap_size: int = _f(19, "log2 of the hash-grid table size per level")
    n_levels: int = _f(16, "hash-grid levels")
    occupancy_resolution: int = _f(64, "occupancy-grid cells per side")
    max_samples_per_ray: int = _f(512, "ray-marching samples per ray at most")
    # outputs
    val_every: int = _f(200, "validation images every N steps")
    ckpt_every: int = _f(500, "checkpoint every N steps")
    turntable_views: int = _f(30, "turntable frames written at the end of the run (0: none)")
    export_at_end: bool = _f(True, "turntable video + mesh into RUN/export/ at the end (--no-export: off)")
    max_nonfinite_steps: int = _f(3, "stop the run after this many steps whose gradient is mostly non-finite")
    logger: str = _f("none", "experiment logger: " + ", ".join(LOGGERS))
    stop_after: int | None = _f(None, "stop as if killed after this step's checkpoint (tests)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> set:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        """Values from YAML, flags or --set, each coerced to its field's type (YAML reads `1e-2`
        as a string, a flag's value is always one)."""
        unknown = set(values) - cls.field_names()
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(sorted(unknown))} "
                              "(python -m l2vsd_ext.run --help lists them)")
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        typed = {k: coerce(k, v, types[k]) for k, v in values.items()}
        if typed.get("hifa"):  # the preset fills only what was not given
            typed = {**hifa_preset(typed.get("mode", cls.mode), typed.get("pretrained")), **typed}
        return cls(**typed)

    @classmethod
    def help_of(cls, name: str) -> str:
        return next(f.metadata.get("help", "") for f in dataclasses.fields(cls) if f.name == name)


# Settings a resumed run may change: they alter how the run is watched and how long it goes,
# not what it computes step by step. Anything else differing from the checkpoint is refused.
CHANGEABLE_ON_RESUME = ("steps", "val_every", "ckpt_every", "export_at_end", "turntable_views",
                        "logger", "max_nonfinite_steps", "device")
# Values that runs saved before a setting existed were made with (they are not today's defaults).
LEGACY_VALUES = {"lora_beta1": 0.9, "lora_beta2": 0.999, "lora_eps": 1e-8, "lora_weight_decay": 0.0,
                 "lora_init": "kaiming", "camera_init": "zero", "lora_text": "view",
                 "lookahead_camera": False, "lookahead_direction": "sgd", "eta_relative": None,
                 "high_order_diagnostics": False, "hifa": False, "lambda_img": 0.0,
                 "timestep_schedule": "uniform", "sqrt_anneal_steps": None, "z_variance_weight": 0.0,
                 "entropy_start_step": 0}


# Latent elements per render that threestudio's weights were tuned with: Stable Diffusion's
# 64x64x4 latents (512 px encodes).
SD_LATENT_ELEMENTS = 64 * 64 * 4
# The shapes priors shipped in the package, by --pretrained name: their folder under
# l2vsd_ext/shapes/ (version 3, and version 2, on which the study's phases A-F ran). Here, not in
# prior/loading.py, so that settings and the sweep know the names without importing torch.
SHIPPED_SHAPES_FOLDERS = {"shapes": "weights", "shapes-v2": "weights_v2"}
# The same count for the priors with defaults here (render at their default encode resolution).
PRIOR_LATENT_ELEMENTS = {name: 8 * 8 * 4 for name in SHIPPED_SHAPES_FOLDERS}


def shapes_prior_args(pretrained) -> dict | None:
    """The training settings of a prior folder written by `python -m l2vsd_ext.shapes.train` (its
    training_args.json), or None for anything else. Such a folder is run like the shipped shapes
    prior: the same run defaults, its own latent size."""
    if not isinstance(pretrained, str) or not os.path.isfile(os.path.join(pretrained, "training_args.json")):
        return None
    import json

    try:
        with open(os.path.join(pretrained, "training_args.json")) as fh:
            args = json.load(fh)
    except (OSError, ValueError):
        return None
    needed = {"views_per_object", "unet_channels", "vae_channels", "resolution"}
    return args if isinstance(args, dict) and needed <= args.keys() else None


def latent_elements(pretrained) -> int | None:
    """Latent elements per render of a prior with defaults here: the shipped shapes prior, or a
    folder shapes.train wrote (pixel space: the image itself; else the VAE's 4 channels at its
    downsampling). None for other priors."""
    if isinstance(pretrained, str) and pretrained in PRIOR_LATENT_ELEMENTS:
        return PRIOR_LATENT_ELEMENTS[pretrained]
    args = shapes_prior_args(pretrained)
    if args is None:
        return None
    size = int(args["resolution"])
    if args.get("pixel_space"):
        return size * size * 3
    size //= 2 ** (len(args["vae_channels"]) - 1)
    return size * size * 4


def regularizer_scale(pretrained) -> float:
    """The guidance gradient is a per-element sum over the latents (threestudio's MSE trick, sum
    reduction), while sparsity, entropy and z-variance are means over rays: on a prior with fewer
    latent elements per render the same weights would outweigh the guidance by SD's count over
    its own (64x on the shapes prior, where threestudio's sparsity 10 emptied the field)."""
    elements = latent_elements(pretrained)
    return 1.0 if elements is None else elements / SD_LATENT_ELEMENTS


def hifa_preset(mode: str, pretrained=None) -> dict:
    """threestudio's configs/prolificdreamer-hifa.yaml in our settings (z-variance: 100 for SDS as
    in HiFA's paper). Its max_step annealing to 0.5 at 5000 is unused under the sqrt schedule. The
    mean-type regularisers' weights are scaled by regularizer_scale for priors other than SD."""
    scale = regularizer_scale(pretrained)
    return {"lambda_img": 0.01, "timestep_schedule": "sqrt", "min_step": 0.3, "max_step": 0.98,
            "z_variance_weight": scale * (100.0 if mode == "sds" else 300.0),
            "sparsity_weight": scale * 10.0, "entropy_weight": scale * 1000.0,
            "entropy_start_step": 10000}


def from_saved(values: dict) -> "RunConfig":
    """The config of a saved run (checkpoint or config.yaml): settings it predates take the value the
    run was made with, not today's default."""
    return RunConfig.from_dict({**{k: v for k, v in LEGACY_VALUES.items() if k not in values}, **values})


# Bookkeeping, never compared with the saved run.
NOT_COMPARED = ("resume", "out", "stop_after")

def flag_of(key: str) -> str:
    """The command-line flag of a config field."""
    return "--no-export" if key == "export_at_end" else "--" + key.replace("_", "-")


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def coerce(name: str, value, type_name: str):
    """`value` as the field's type ('int', 'float', 'bool', 'str', optionally '| None'), or a
    ConfigError naming the field."""
    name = flag_of(name)
    optional = type_name.endswith("| None")
    base = type_name.split("|")[0].strip()
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
        if optional:
            return None
        raise ConfigError(f"{name}: a value is required (expected {base})")
    bad = ConfigError(f"{name}: expected {'an integer' if base == 'int' else 'a ' + base}, got {value!r}")
    if base == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise bad
    if base == "int":
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        try:
            number = float(value) if isinstance(value, (str, float)) else None
        except ValueError:
            raise bad from None
        if number is None or not math.isfinite(number) or number != int(number):
            raise bad
        return int(number)
    if base == "float":
        if isinstance(value, bool):
            raise bad
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad from None
    if isinstance(value, (dict, list)):
        raise bad
    return str(value)


# Defaults a run needs on a given prior, applied only to settings the user did not give.
# 'shapes' (the shipped ground-truth prior): its native 32 px images, and a field, sample budget
# and step count sized for a CPU run of minutes (64 samples per ray reach past an opaque front).
# A fixed white background: the prior also saw uniform random backgrounds, so with random or
# learned ones it accepts a haze of the object's colour around it (measured on the pumpkin, SDS,
# 600 steps: IoU 0.62 -> 0.75); guidance 3 scored better than 7.5 there (IoU 0.77).
_SHAPES_DEFAULTS = dict(resolution=32, encode_resolution=32, steps=600, n_levels=8, log2_hashmap_size=15,
                        occupancy_resolution=32, max_samples_per_ray=64, val_every=100,
                        ckpt_every=100, background="white", random_background=0.0, guidance_scale=3.0)
PRETRAINED_DEFAULTS = {name: _SHAPES_DEFAULTS for name in SHIPPED_SHAPES_FOLDERS}


def with_pretrained_defaults(values: dict) -> dict:
    """values (the settings given) completed with the defaults of the prior they name."""
    name = values.get("pretrained")  # a YAML list or mapping here is refused later, naming --pretrained
    if not isinstance(name, str):
        return dict(values)
    defaults = PRETRAINED_DEFAULTS.get(name)
    if defaults is None and shapes_prior_args(name) is not None:
        defaults = PRETRAINED_DEFAULTS["shapes"]  # a shapes prior the user trained
    return {**(defaults or {}), **values}


def load_yaml(path: str) -> dict:
    import yaml

    from .strict_yaml import safe_load_unique

    try:
        with open(path, encoding="utf-8") as fh:
            data = safe_load_unique(fh) or {}
    except OSError as err:
        raise ConfigError(f"--config: cannot read '{path}': {err.strerror}") from err
    except UnicodeDecodeError:
        raise ConfigError(f"--config: '{path}' is not UTF-8 text") from None
    except (ValueError, OverflowError) as err:  # e.g. a date PyYAML cannot build
        raise ConfigError(f"--config: '{path}' is not valid YAML: {err}") from None
    except yaml.YAMLError as err:
        detail = " ".join(str(err).split())  # PyYAML's message spans lines
        raise ConfigError(f"--config: '{path}' is not valid YAML: {detail}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"--config: '{path}' must hold a mapping of settings")
    if not all(isinstance(k, str) for k in data):
        raise ConfigError(f"--config: '{path}': every setting's name must be text")
    return {k.replace("-", "_"): v for k, v in data.items()}


def save_yaml(config: RunConfig, path: str) -> None:
    import yaml

    from .checkpoint import atomic_write_bytes

    text = yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True)
    atomic_write_bytes(path, text.encode())


def _is_pseudo_fs(path: str) -> bool:
    """/proc and /sys say writable to root but refuse new folders."""
    real = os.path.realpath(path)
    return any(real == top or real.startswith(top + os.sep) for top in ("/proc", "/sys", "/dev"))


def _nearest_existing_parent(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _check_device(name: str) -> None:
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device: '{name}' is not a device (use cpu, cuda or cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device: '{name}' is not supported (cpu, cuda or cuda:N)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device: '{name}' requested but no CUDA device is visible")


def validate(config: RunConfig, vae_scale_factor: int = 8) -> None:
    """Raises ConfigError for the first bad setting; checks nothing that needs the model."""
    if not isinstance(config.prompt, str) or not config.prompt.strip():
        raise ConfigError("--prompt: a non-empty prompt is required")
    if config.mode not in MODES:
        raise ConfigError(f"--mode: unknown mode '{config.mode}' (choose from {', '.join(MODES)})")
    for f in dataclasses.fields(config):  # nan/inf would silently zero every gradient
        value = getattr(config, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"--{f.name.replace('_', '-')}: must be a finite number, got {value}")
    if not MIN_SEED <= config.seed <= MAX_SEED:  # torch's generators take 64-bit seeds (seed + 20 is used)
        raise ConfigError(f"--seed: must be in [{MIN_SEED}, {MAX_SEED}], got {config.seed}")
    if config.steps < 1:
        raise ConfigError(f"--steps: must be >= 1, got {config.steps}")
    if config.resolution < 8:
        raise ConfigError(f"--resolution: must be >= 8, got {config.resolution}")
    if config.encode_resolution < vae_scale_factor or config.encode_resolution % vae_scale_factor:
        raise ConfigError(f"encode_resolution: the VAE needs a multiple of {vae_scale_factor}, "
                          f"got {config.encode_resolution}")
    if config.dtype is not None and config.dtype not in DTYPES:
        raise ConfigError(f"--dtype: must be one of {', '.join(DTYPES)}, got '{config.dtype}'")
    if config.background not in BACKGROUNDS:
        raise ConfigError(f"--background: must be one of {', '.join(BACKGROUNDS)}, got '{config.background}'")
    if not 0 <= config.random_background <= 1:
        raise ConfigError(f"--random-background: must be in [0, 1], got {config.random_background}")
    if config.logger not in LOGGERS:
        raise ConfigError(f"--logger: must be one of {', '.join(LOGGERS)}, got '{config.logger}'")
    if config.device is not None:
        _check_device(config.device)
    if config.lora_steps < 1:
        raise ConfigError(f"--lora-steps: must be >= 1, got {config.lora_steps}")
    if config.eta < 0:
        raise ConfigError(f"--eta: must be >= 0, got {config.eta}")
    for name in ("sparsity_weight", "entropy_weight", "lambda_img", "z_variance_weight"):
        if not getattr(config, name) >= 0:
            raise ConfigError(f"--{name.replace('_', '-')}: must be >= 0, got {getattr(config, name)}")
    if not 0 <= config.esd_lambda <= 1:
        raise ConfigError(f"--esd-lambda: must be in [0, 1], got {config.esd_lambda}")
    if config.esd_lambda and config.mode not in ("vsd", "l2vsd"):
        raise ConfigError("--esd-lambda: only used with --mode vsd or l2vsd")
    for name, choices in (("lora_init", LORA_INITS), ("camera_init", CAMERA_INITS),
                          ("lora_text", LORA_TEXTS), ("lookahead_direction", LOOKAHEAD_DIRECTIONS)):
        if getattr(config, name) not in choices:
            raise ConfigError(f"--{name.replace('_', '-')}: must be one of {', '.join(choices)}, "
                              f"got '{getattr(config, name)}'")
    if config.last_layer and config.mode not in LOOKAHEAD_MODES:
        raise ConfigError("--last-layer: only used with --mode l2vsd or hlvsd")
    if config.eta_relative is not None:
        if config.mode not in LOOKAHEAD_MODES:
            raise ConfigError("--eta-relative: only used with --mode l2vsd or hlvsd")
        if not config.eta_relative > 0:
            raise ConfigError(f"--eta-relative: must be > 0, got {config.eta_relative}")
    if config.high_order_diagnostics and config.mode not in LOOKAHEAD_MODES:
        raise ConfigError("--high-order-diagnostics: only used with --mode l2vsd or hlvsd")
    for name in ("lora_beta1", "lora_beta2"):
        if not 0 <= getattr(config, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')}: must be in [0, 1), got {getattr(config, name)}")
    if not config.lora_eps > 0:
        raise ConfigError(f"--lora-eps: must be > 0, got {config.lora_eps}")
    if config.lora_weight_decay < 0:
        raise ConfigError(f"--lora-weight-decay: must be >= 0, got {config.lora_weight_decay}")
    for name in ("min_step", "max_step", "max_step_after", "anneal_at", "condition_dropout"):
        if not 0 <= getattr(config, name) <= 1:
            raise ConfigError(f"--{name.replace('_', '-')}: must be in [0, 1], got {getattr(config, name)}")
    if config.min_step > config.max_step:
        raise ConfigError(f"--min-step: must not exceed --max-step ({config.min_step} > {config.max_step})")
    for name in ("lr", "lora_lr"):
        if getattr(config, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')}: must be > 0, got {getattr(config, name)}")
    for name in ("lora_rank", "n_levels", "log2_hashmap_size", "occupancy_resolution",
                 "max_samples_per_ray", "max_nonfinite_steps"):
        if getattr(config, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(config, name)}")
    if config.timestep_schedule not in TIMESTEP_SCHEDULES:
        raise ConfigError(f"--timestep-schedule: must be one of {', '.join(TIMESTEP_SCHEDULES)}, "
                          f"got '{config.timestep_schedule}'")
    if config.sqrt_anneal_steps is not None:
        if config.timestep_schedule != "sqrt":
            raise ConfigError("--sqrt-anneal-steps: only used with --timestep-schedule sqrt")
        if config.sqrt_anneal_steps < 1:
            raise ConfigError(f"--sqrt-anneal-steps: must be >= 1, got {config.sqrt_anneal_steps}")
    if config.entropy_start_step < 0:
        raise ConfigError(f"--entropy-start-step: must be >= 0, got {config.entropy_start_step}")
    if config.anneal_step is not None and config.anneal_step < 0:
        raise ConfigError(f"--anneal-step: must be >= 0, got {config.anneal_step}")
    if config.turntable_views < 0:
        raise ConfigError(f"--turntable-views: must be >= 0, got {config.turntable_views}")
    if config.batch_size < 1:
        raise ConfigError(f"batch_size: must be >= 1, got {config.batch_size}")
    for name in ("val_every", "ckpt_every"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name}: must be >= 1, got {getattr(config, name)}")
    parent = _nearest_existing_parent(config.out)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK) or _is_pseudo_fs(parent):
        raise ConfigError(f"--out: '{config.out}' is not writable ('{parent}' is not a writable folder)")
