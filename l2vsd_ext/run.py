"""Command line: python -m l2vsd_ext.run --prompt "a DSLR photo of a hamburger" [--mode l2vsd] ...

Settings come from the defaults (l2vsd_ext.config.RunConfig), then --config FILE.yaml, then the
flags given; the resolved config is saved as RUN/config.yaml. Bad settings: one line, exit code 2,
nothing written."""
from __future__ import annotations

import argparse
import sys

from .config import (DTYPES, MODES, ConfigError, RunConfig, load_yaml, validate,
                     with_pretrained_defaults)

_DEFAULTS = RunConfig()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m l2vsd_ext.run", argument_default=argparse.SUPPRESS,
        description="Text-to-3D by score distillation from a pretrained 2D diffusion model "
                    "(SDS, VSD, L-VSD, L²-VSD). Every flag can also be set in --config.")
    p.add_argument("--prompt", help="text prompt describing the object (required)")
    p.add_argument("--negative-prompt", help="negative prompt for classifier-free guidance")
    p.add_argument("--mode", choices=MODES, help=f"guidance mode (default: {_DEFAULTS.mode})")
    p.add_argument("--steps", type=int, help=f"iterations (default: {_DEFAULTS.steps}, the paper's coarse stage)")
    p.add_argument("--resolution", type=int, help=f"render resolution, 64 or 256 (default: {_DEFAULTS.resolution})")
    p.add_argument("--encode-resolution", type=int,
                   help=f"renders are resized to this for the VAE (default: {_DEFAULTS.encode_resolution})")
    p.add_argument("--batch-size", type=int, help=f"cameras per iteration (default: {_DEFAULTS.batch_size})")
    p.add_argument("--seed", type=int, help=f"random seed (default: {_DEFAULTS.seed})")
    p.add_argument("--out", help=f"run folder (default: {_DEFAULTS.out})")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--device", help="cuda, cuda:1 or cpu (default: cuda if available)")
    p.add_argument("--dtype", choices=DTYPES, help="prior weights (default: float16 on CUDA, float32 on CPU)")
    p.add_argument("--pretrained", help=f"diffusers model id or local folder; 'shapes': the shipped "
                   f"ground-truth prior, with its own defaults (default: {_DEFAULTS.pretrained})")
    p.add_argument("--guidance-scale", type=float, help=f"prior CFG scale (default: {_DEFAULTS.guidance_scale})")
    p.add_argument("--eta", type=float, help=f"L²-VSD lookahead step η (default: {_DEFAULTS.eta})")
    p.add_argument("--last-layer", action="store_true", help="L²-VSD: tangent on the last LoRA layer only")
    p.add_argument("--lora-steps", type=int, help=f"LoRA steps per iteration γ (default: {_DEFAULTS.lora_steps})")
    p.add_argument("--esd-lambda", type=float, help="ESD's camera-dropped weight λ (vsd, l2vsd; default 0)")
    p.add_argument("--val-every", type=int, help=f"validation images every N steps (default: {_DEFAULTS.val_every})")
    p.add_argument("--ckpt-every", type=int, help=f"checkpoint every N steps (default: {_DEFAULTS.ckpt_every})")
    p.add_argument("--no-export", dest="export_at_end", action="store_false",
                   help="skip the turntable video and mesh export at the end of the run")
    p.add_argument("--config", help="YAML file with any of these settings (flags override it)")
    p.add_argument("--stop-after", type=int, help=argparse.SUPPRESS)  # test hook: simulated kill
    return p


def resolve_config(argv=None) -> RunConfig:
    args = vars(build_parser().parse_args(argv))
    values = load_yaml(args.pop("config")) if "config" in args else {}
    values.update(args)
    try:
        return RunConfig.from_dict(with_pretrained_defaults(values))
    except TypeError as err:
        raise ConfigError(str(err)) from err


def main(argv=None) -> int:
    try:
        config = resolve_config(argv)
        validate(config)
        from .prior.loading import PriorWeightsUnavailable
        from .trainer import run_training

        try:
            run_training(config)
        except PriorWeightsUnavailable as err:
            raise ConfigError(f"--pretrained: {err}") from err
    except ConfigError as err:
        print(f"l2vsd_ext.run: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
