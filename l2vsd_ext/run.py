"""Command line: python -m l2vsd_ext.run --prompt "a DSLR photo of a hamburger" [--mode l2vsd] ...

Settings come from the defaults (l2vsd_ext.config.RunConfig), then --config FILE.yaml, then the
flags and --set KEY=VALUE overrides; every config field has a flag. The resolved config is saved as
RUN/config.yaml. Bad settings: one line, exit code 2, nothing written. --resume continues the run
in --out with the settings in its checkpoint (see l2vsd_ext.resume). Ctrl-C/SIGTERM: the step is
finished, the checkpoint written, exit code 130/143. After the last step the turntable is rendered
once and, unless --no-export, the video and mesh are exported (this module, not the trainer, calls
export: imports point one way)."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from .cli_errors import one_line
from .config import (CAMERA_INITS, DTYPES, LOGGERS, LOOKAHEAD_DIRECTIONS, LORA_INITS, LORA_TEXTS, MODES,
                     TIMESTEP_SCHEDULES, ConfigError, RunConfig, load_yaml, validate, with_pretrained_defaults)

PROG = "python -m l2vsd_ext.run"
_DEFAULTS = RunConfig()
_CHOICES = {"mode": MODES, "dtype": DTYPES, "logger": LOGGERS, "lora_init": LORA_INITS,
            "camera_init": CAMERA_INITS, "lora_text": LORA_TEXTS, "lookahead_direction": LOOKAHEAD_DIRECTIONS,
            "timestep_schedule": TIMESTEP_SCHEDULES}
# Fields with a flag of another shape than --name VALUE.
_SWITCHES = {"resume": "--resume", "last_layer": "--last-layer", "hifa": "--hifa"}
_METAVARS = {"int": "N", "float": "X", "str": "TEXT", "bool": "BOOL"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, argument_default=argparse.SUPPRESS,
        usage="%(prog)s --prompt TEXT [--mode MODE] [--out RUN] [--config FILE] [--set KEY=VALUE ...] "
              "[options]\n       %(prog)s --out RUN --resume [--steps N] ...",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Text-to-3D by score distillation from a pretrained 2D diffusion model "
                    "(SDS, VSD, L-VSD, L²-VSD).",
        epilog="Precedence: defaults < --config YAML < flags and --set. Every setting below can be "
               "written in the YAML\n(as name: value, underscores or dashes) or on the command line as "
               "--set name=value.\nOn --resume the run keeps its saved settings; only --steps (not below "
               "the checkpoint), --val-every,\n--ckpt-every, --no-export, --turntable-views, --logger, "
               "--max-nonfinite-steps and --device may change.")
    p.add_argument("--stage", choices=("nerf", "geometry", "texture"),
                   help="nerf: stage 1 (default); geometry, texture: stages 2 and 3 on a mesh "
                        "(--stage geometry --help)")
    p.add_argument("--config", metavar="FILE", help="YAML file with any of the settings below")
    p.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE",
                   help="override any setting by its field name, e.g. --set lr=1e-3 lora_rank=8")
    for f in dataclasses.fields(RunConfig):
        meaning, default = f.metadata.get("help", ""), getattr(_DEFAULTS, f.name)
        if f.name == "stop_after":
            p.add_argument("--stop-after", help=argparse.SUPPRESS)  # test hook: simulated kill
        elif f.name in _SWITCHES:
            p.add_argument(_SWITCHES[f.name], action="store_true", help=f"{meaning} (default: off)")
        elif f.name == "export_at_end":
            p.add_argument("--no-export", dest="export_at_end", action="store_false",
                           help="skip the turntable video and mesh export at the end of the run")
        else:
            shown = "" if default in (None, "") else f" (default: {default})"
            p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, choices=_CHOICES.get(f.name),
                           metavar=None if f.name in _CHOICES else _METAVARS.get(f.type.split("|")[0].strip()),
                           help=meaning + shown)
    return p


def parse_overrides(items) -> dict:
    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"--set: expected KEY=VALUE, got '{item}'")
        if key not in RunConfig.field_names():
            raise ConfigError(f"--set: unknown setting '{key}' ({PROG} --help lists them)")
        values[key] = value
    return values


def given_settings(argv=None) -> dict:
    """The settings the user gave (YAML, flags, --set), typed by their fields."""
    from .cli_errors import one_line_parser

    args = vars(one_line_parser(build_parser()).parse_args(argv))
    overrides = parse_overrides(args.pop("set", []))
    values = load_yaml(args.pop("config")) if "config" in args else {}
    for key in set(args) & set(overrides):
        if str(args[key]) != overrides[key]:
            raise ConfigError(f"--set {key}: also given as --{key.replace('_', '-')} with another value")
    values.update(args)
    values.update(overrides)
    # A shipped prior (--pretrained shapes) brings its own defaults for what was not given.
    values = with_pretrained_defaults(values)
    RunConfig.from_dict(values)  # unknown keys and bad types fail here, naming the field
    types = {f.name: f.type for f in dataclasses.fields(RunConfig)}
    from .config import coerce

    return {k: coerce(k, v, types[k]) for k, v in values.items()}


def resolve_config(argv=None) -> RunConfig:
    """The config a new run with these arguments would use (no run folder consulted)."""
    return RunConfig.from_dict(given_settings(argv))


def quiet_libraries() -> None:
    """Our progress bar is the one that matters: silence transformers'/diffusers' loading bars."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        import diffusers.utils.logging as dlog
        import transformers.utils.logging as tlog

        tlog.disable_progress_bar()
        tlog.set_verbosity_error()
        dlog.disable_progress_bar()
        dlog.set_verbosity_error()
    except ImportError:
        pass


def write_final_outputs(renderer, config: RunConfig, logger=None) -> dict:
    """One render of the turntable: its frames go to RUN/turntable/ and (unless --no-export) into
    the video; then the mesh. Returns {name: path} of what was written."""
    from .export import export_at_end_of_run
    from .export.views import render_orbit
    from .run_folder import RunFolder
    from .trainer import save_png

    folder = RunFolder(config.out)
    written = {}
    frames = None
    # A re-export (a finished run resumed) with fewer views leaves no stale frames behind.
    folder.remove_own_files("turntable", "frame_", ".png")
    if config.turntable_views:
        resolution = config.resolution + config.resolution % 2  # even, for H.264
        frames = render_orbit(renderer, config.turntable_views, resolution, progress=True,
                              desc="turntable")
        for i, frame in enumerate(frames):
            save_png(frame[None], folder.claim("turntable", f"frame_{i:03d}.png"))
        written["turntable"] = os.path.join(config.out, "turntable", "frame_NNN.png")
        if logger is not None:
            logger.log_video("turntable", config.steps, frames)
    if config.export_at_end:
        written.update(export_at_end_of_run(renderer, config, frames=frames))
    from .export.diagnostics import plot_lookahead_norms

    diagnostics = plot_lookahead_norms(config.out)
    if diagnostics is not None:
        written["diagnostics"] = diagnostics
    return written


STAGES = ("nerf", "geometry", "texture")


def split_stage(argv: list) -> tuple[str, list]:
    """(--stage value, the other arguments); 'nerf' (stage 1) when not given."""
    rest, stage, i = [], "nerf", 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--stage" or arg.startswith("--stage="):
            if "=" in arg:
                stage = arg.split("=", 1)[1]
            elif i + 1 < len(argv):
                stage, i = argv[i + 1], i + 1
            else:
                raise ConfigError("argument --stage: expected one argument")
            if stage not in STAGES:
                raise ConfigError(f"argument --stage: invalid choice: '{stage}' (choose from "
                                  f"{', '.join(STAGES)})")
        else:
            rest.append(arg)
        i += 1
    return stage, rest


def main(argv=None, prior=None) -> int:
    """`prior`: an already loaded DiffusionPrior for this run's --pretrained/--dtype/--device, used
    instead of loading one (the sweep's per-worker cache); it must not have served another run.
    --stage geometry / texture hands the arguments to the mesh stages (l2vsd_ext.mesh.stage_cli)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        stage, argv = split_stage(argv)
    except ConfigError as err:
        print(f"{PROG}: error: {one_line(err)}", file=sys.stderr)
        return 2
    if stage != "nerf":
        from .mesh.stage_cli import main as stage_main

        return stage_main(stage, argv, prior)
    return _main_nerf(argv, prior)


def _main_nerf(argv, prior=None) -> int:
    from .cli_errors import run_command

    return run_command(PROG, lambda folder: _run_nerf(argv, prior, folder))


def _run_nerf(argv, prior, folder) -> int:
    from .resume import plan_run
    from .memory_check import check_memory
    from .run_lock import lock_folder

    given = given_settings(argv)
    first = RunConfig.from_dict(given)
    if not first.resume:
        validate(first)  # a new run's settings are complete: refuse them before creating --out
        check_memory(first)
    elif not os.path.isdir(first.out):
        raise ConfigError(f"--resume: no run folder at '{first.out}'")
    check_out_writable(first.out)
    # One process per run folder, from before it is read until this command ends.
    folder.hold(lock_folder(first.out, "--out"))
    plan = plan_run(given)
    config = plan.config
    validate(config)
    check_memory(config)
    from .prior.loading import PriorWeightsUnavailable
    from .run_logging import make_logger
    from .run_folder import RunFolder
    from .trainer import TrainingDiverged, run_training

    for note in plan.notes:
        print(note, file=sys.stderr)
    if plan.restart:
        RunFolder(config.out).clear_run_files()
    quiet_libraries()
    logger = make_logger(config.logger, config.out, config)
    try:
        trainer = run_training(config, prior, changes=plan.changes, logger=logger)
        if trainer.step == config.steps:
            written = write_final_outputs(trainer.renderer, config, logger)
            print(f"run finished at step {trainer.step}: '{config.out}'", file=sys.stderr)
            for name, path in written.items():
                print(f"  {name:14s} {path}", file=sys.stderr)
    except PriorWeightsUnavailable as err:
        raise ConfigError(f"--pretrained: {err}") from err
    except TrainingDiverged as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    finally:
        if logger is not None:
            logger.close()
    return 0


def check_out_writable(out: str) -> None:
    from .config import _is_pseudo_fs, _nearest_existing_parent

    parent = _nearest_existing_parent(out)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK) or _is_pseudo_fs(parent):
        raise ConfigError(f"--out: '{out}' is not writable ('{parent}' is not a writable folder)")


if __name__ == "__main__":
    sys.exit(main())
