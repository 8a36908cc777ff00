"""Command line: python -m l2vsd_ext.sweep PROMPTS.txt|SWEEP.yaml --modes sds vsd lvsd l2vsd
--seeds 0 1 --out sweeps/NAME [--eta 0.01 0.1] [--last-layer [on off]] [--esd-lambda 0 0.5]
[--address ADDR] [--eval-args "..."] [any flag of python -m l2vsd_ext.run]

Every setting is checked before anything starts (bad input: one line, exit code 2). Restarting with
the same command skips finished runs and resumes interrupted ones from their checkpoints."""
from __future__ import annotations

import argparse
import os
import shlex
import sys

from ..config import MODES, ConfigError, load_yaml
from . import spec as grid
from .state import SweepState

# Run flags the sweep sets itself, per run.
OWNED = {"prompt": "PROMPTS", "mode": "--modes", "seed": "--seeds", "out": "--out", "resume": "the sweep",
         "eta": "the sweep's --eta", "last_layer": "the sweep's --last-layer",
         "esd_lambda": "the sweep's --esd-lambda", "hifa": "the sweep's --hifa"}
DEFAULTS = {"modes": list(MODES), "seeds": [0], "max_retries": 2, "cpus_per_run": 1, "eval_args": "",
            "no_eval": False}
YAML_KEYS = {"prompts", "prompts_file", "run", "modes", "seeds", "out", "eta", "last_layer", "esd_lambda",
             "hifa", "address", "num_cpus", "cpus_per_run", "max_retries", "eval_args", "no_eval"}


class _OneLineParser(argparse.ArgumentParser):
    """argparse that raises ConfigError instead of printing usage and exiting."""

    def error(self, message):
        raise ConfigError(message)


def _on_off(text: str) -> bool:
    value = {"on": True, "true": True, "yes": True, "off": False, "false": False, "no": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected on or off, got '{text}'")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _OneLineParser(
        prog="python -m l2vsd_ext.sweep", argument_default=argparse.SUPPRESS, allow_abbrev=False,
        description="Many runs (prompts x modes x seeds x variants) as Ray tasks, then their Table-1 report. "
                    "Flags not listed here are passed to every run (see python -m l2vsd_ext.run --help).")
    p.add_argument("spec", metavar="PROMPTS", help="prompts file (one per line, # comments) or a sweep YAML")
    p.add_argument("--modes", nargs="+", help=f"guidance modes (default: {' '.join(MODES)})")
    p.add_argument("--seeds", nargs="+", type=int, help="seeds (default: 0)")
    p.add_argument("--out", help="sweep folder: sweep.json, runs/, logs/, report/ (required)")
    p.add_argument("--eta", nargs="+", type=float, help="L²-VSD η values, one variant each")
    p.add_argument("--last-layer", nargs="*", type=_on_off,
                   help="L²-VSD last-layer approximation; bare: on; 'off on': both variants")
    p.add_argument("--esd-lambda", nargs="+", type=float, help="ESD λ values for vsd/l2vsd, one variant each")
    p.add_argument("--hifa", nargs="*", type=_on_off,
                   help="HiFA's preset for sds/vsd/l2vsd (vsd: HiFA, l2vsd: L²-HiFA); bare: on; 'off on': both")
    p.add_argument("--address", help="join this Ray cluster (default: start a local one; 'auto' finds a running one)")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local cluster (default: all)")
    p.add_argument("--cpus-per-run", type=int, help="CPU slots per run where there is no GPU (default: 1)")
    p.add_argument("--max-retries", type=int, help="retries of a run whose worker dies or that fails (default: 2)")
    p.add_argument("--eval-args", help="flags for python -m l2vsd_ext.eval after each run, in one string, "
                                       "e.g. \"--n-views 30 --clip-model DIR\"")
    p.add_argument("--no-eval", action="store_true", help="skip evaluation after each run")
    p.add_argument("--test-pause-after", type=int, help=argparse.SUPPRESS)  # test hook: see task.py
    return p


def _run_parser() -> argparse.ArgumentParser:
    from ..run import build_parser as run_build_parser

    p = run_build_parser()
    p.__class__ = _OneLineParser
    return p


def _pop_config(extras: list[str]) -> tuple[list[str], str | None]:
    """(extras without --config FILE, FILE)."""
    rest, config, i = [], None, 0
    while i < len(extras):
        if extras[i] == "--config" and i + 1 < len(extras):
            config, i = extras[i + 1], i + 2
        elif extras[i].startswith("--config="):
            config, i = extras[i].split("=", 1)[1], i + 1
        else:
            rest.append(extras[i])
            i += 1
    return rest, config


def resolve(argv) -> tuple[dict, list[str]]:
    """(sweep settings: defaults < sweep YAML < flags, run flags)."""
    args, extras = build_parser().parse_known_args(argv)
    settings = dict(DEFAULTS)
    path = args.spec
    if path.endswith((".yaml", ".yml")):
        values = load_yaml(path)
        unknown = set(values) - YAML_KEYS
        if unknown:
            raise ConfigError(f"PROMPTS: '{path}' has unknown keys: {', '.join(sorted(unknown))}")
        settings.update(values)
        if "prompts" in values and "prompts_file" in values:
            raise ConfigError(f"PROMPTS: '{path}' gives both prompts and prompts_file")
        if "prompts_file" in values:
            if not isinstance(values["prompts_file"], str):
                raise ConfigError(f"PROMPTS: '{path}': prompts_file must be a file path, got {values['prompts_file']!r}")
            settings["prompts_file"] = os.path.join(os.path.dirname(path), values["prompts_file"])
        elif "prompts" not in values:
            raise ConfigError(f"PROMPTS: '{path}' needs a prompts list or a prompts_file")
        if not isinstance(settings.get("run", {}), dict):
            raise ConfigError(f"PROMPTS: '{path}': run must be a mapping of run settings")
    else:
        settings["prompts_file"] = path
    settings.update(vars(args))
    for switch in grid.SWITCH_AXES:
        if settings.get(switch) == []:
            settings[switch] = [True]
    return _normalise(settings), extras


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _normalise(s: dict) -> dict:
    """YAML may give one value where flags give lists, and any type at all: check them here."""
    for key, kinds, what in (("out", (str,), "a folder path"), ("address", (str,), "an address"),
                             ("prompts_file", (str,), "a file path"), ("eval_args", (str, list, tuple), "flags"),
                             ("no_eval", (bool,), "true or false"), ("run", (dict,), "a mapping"),
                             ("num_cpus", (int,), "an integer"), ("cpus_per_run", (int,), "an integer"),
                             ("max_retries", (int,), "an integer")):
        value = s.get(key)
        if value is not None and (not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool))):
            raise ConfigError(f"--{key.replace('_', '-')}: expected {what}, got {value!r}")
    s["modes"] = [str(m) for m in _as_list(s["modes"])]
    seeds = _as_list(s["seeds"])
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in seeds):
        raise ConfigError(f"--seeds: seeds must be integers, got {seeds}")
    s["seeds"] = seeds
    for axis, kind in (("eta", (int, float)), ("esd_lambda", (int, float)), ("last_layer", bool), ("hifa", bool)):
        if s.get(axis) is None:
            continue
        values = _as_list(s[axis])
        if not all(isinstance(v, kind) and (kind is bool or not isinstance(v, bool)) for v in values):
            raise ConfigError(f"--{axis.replace('_', '-')}: expected {'on/off' if kind is bool else 'numbers'}, "
                              f"got {values}")
        s[axis] = [v if kind is bool else float(v) for v in values]
    if isinstance(s.get("eval_args"), (list, tuple)):
        s["eval_args"] = shlex.join(str(a) for a in s["eval_args"])
    if "prompts" in s:
        s["prompts"] = [p.strip() if isinstance(p, str) else p for p in _as_list(s["prompts"])]
    return s


def check_run_flags(extras: list[str]) -> None:
    given = vars(_run_parser().parse_args(extras))
    for key, owner in OWNED.items():
        if key in given:
            raise ConfigError(f"--{key.replace('_', '-')}: set per run by {owner}")


def build_plan(argv) -> dict:
    """Everything the sweep will do, checked; raises ConfigError before anything is written."""
    from ..run import resolve_config
    from ..config import validate

    s, extras = resolve(argv)
    notes = []
    if "prompts" in s:
        prompts = grid.check_prompts(list(s["prompts"]), s["spec"])
    else:
        prompts = grid.read_prompts(s["prompts_file"], notes)
    modes = grid.check_modes(list(s["modes"]))
    if not s.get("out"):
        raise ConfigError("--out: the sweep folder is required")
    if s.get("address") and s.get("num_cpus"):
        raise ConfigError("--num-cpus: only for the local cluster; an existing cluster (--address) has its own")
    for name in ("max_retries", "cpus_per_run", "num_cpus"):
        if s.get(name) is not None and (not isinstance(s[name], int) or s[name] < (0 if name == "max_retries" else 1)):
            raise ConfigError(f"--{name.replace('_', '-')}: must be an integer >= "
                              f"{0 if name == 'max_retries' else 1}, got {s[name]!r}")
    axes = {axis: s.get(axis) for axis in grid.VARIANT_MODES}
    specs = grid.expand_grid(prompts, modes, s["seeds"], axes)
    sweep_dir = os.path.abspath(s["out"])
    check_run_flags(extras)
    extras, user_config = _pop_config(extras)
    run_settings = load_yaml(user_config) if user_config else {}
    run_settings.update({k.replace("-", "_"): v for k, v in (s.get("run") or {}).items()})
    run_config_path = os.path.join(sweep_dir, "run_config.yaml") if run_settings else None
    common = (["--config", run_config_path] if run_config_path else []) + extras
    eval_argv = None if s.get("no_eval") else shlex.split(s.get("eval_args") or "")
    if eval_argv is not None:
        _check_eval_args(eval_argv)
    plan = {"settings": s, "prompts": prompts, "modes": modes, "specs": specs, "sweep_dir": sweep_dir,
            "run_settings": run_settings, "run_config_path": run_config_path, "common": common,
            "eval_argv": eval_argv, "notes": notes}
    _check_runs(plan, resolve_config, validate)
    return plan


def _check_runs(plan, resolve_config, validate) -> None:
    """Every run's settings as the run itself will see them; the run config file is written to a
    scratch folder for the check, so a refused sweep leaves nothing behind."""
    import tempfile

    from ..config import RunConfig
    from ..memory_check import check_memory

    with tempfile.TemporaryDirectory() as scratch:
        common = list(plan["common"])
        if plan["run_config_path"]:
            unknown = set(plan["run_settings"]) - RunConfig.field_names()
            if unknown:
                raise ConfigError(f"run settings: unknown keys: {', '.join(sorted(unknown))}")
            path = os.path.join(scratch, "run_config.yaml")
            _write_yaml(plan["run_settings"], path)
            common[1] = path
        for spec in plan["specs"]:
            config = resolve_config(spec.run_argv(plan["sweep_dir"], common))
            try:
                validate(config)
                check_memory(config)
            except ConfigError as err:
                raise ConfigError(f"run {spec.name}: {err}") from err
            except TypeError as err:  # e.g. a number given as text in a YAML file
                raise ConfigError(f"run {spec.name}: a setting has the wrong type ({err})") from err


def _check_eval_args(eval_argv: list[str]) -> None:
    from ..eval.cli import build_parser as eval_parser
    from ..eval.cli import check_arguments

    p = eval_parser()
    p.__class__ = _OneLineParser
    try:
        args = p.parse_args(["RUN_DIR", *eval_argv])
        check_arguments(args)
    except ConfigError as err:
        raise ConfigError(f"--eval-args: {err}") from err


def _write_yaml(values: dict, path: str) -> None:
    import yaml

    from ..checkpoint import atomic_write_bytes

    atomic_write_bytes(path, yaml.safe_dump(values, sort_keys=False).encode())


def grid_record(plan, argv) -> dict:
    s = plan["settings"]
    return {"version": 1, "command": ["python", "-m", "l2vsd_ext.sweep", *argv],
            "prompts": plan["prompts"], "modes": plan["modes"], "seeds": s["seeds"],
            "variants": {axis: s.get(axis) for axis in grid.VARIANT_MODES if s.get(axis)},
            "run_args": plan["common"], "run_settings": plan["run_settings"],
            "eval_args": plan["eval_argv"], "max_retries": s["max_retries"]}


def run_sweep(argv, stream=None) -> int:
    from . import scheduler
    from .report import write_report
    from .task import is_finished, read_result

    stream = stream or sys.stderr
    argv = list(sys.argv[1:] if argv is None else argv)
    plan = build_plan(argv)
    scheduler.import_ray()  # one line on how to install it, before anything is written
    if plan["settings"].get("address"):
        scheduler.check_reachable(plan["settings"]["address"])
    s, sweep_dir, specs = plan["settings"], plan["sweep_dir"], plan["specs"]
    from ..run_lock import lock_folder

    # One driver per sweep folder for as long as it runs (each run's folder is locked by its worker).
    lock = lock_folder(sweep_dir, "--out")
    try:
        state = SweepState(sweep_dir, grid_record(plan, argv), specs)
        for spec in specs:
            if is_finished(spec.folder(sweep_dir), spec.run_argv(sweep_dir, plan["common"])):
                state.runs[spec.name].update(status="done", result=read_result(spec.folder(sweep_dir)))
        todo = state.counts()["queued"]
        # Join or start Ray before writing anything: a failed --address leaves no sweep.json behind.
        started = scheduler.connect(s.get("address"), s.get("num_cpus")) if todo else False
    except ConfigError:
        lock.discard()
        raise
    try:
        if plan["run_config_path"]:
            _write_yaml(plan["run_settings"], plan["run_config_path"])
        state.save()
        name = os.path.basename(sweep_dir)
        for note in plan["notes"]:
            print(note, file=stream)
        print(f"sweep {name}: {len(specs)} runs, {len(specs) - todo} already done, {todo} to run", file=stream)
        if todo:
            try:
                scheduler.run_grid(specs, state, sweep_dir, plan["common"], plan["eval_argv"], s["cpus_per_run"],
                                   s["max_retries"], s.get("test_pause_after"), stream)
            finally:
                if started:
                    scheduler.shutdown()
        written = write_report(sweep_dir)
    finally:
        lock.release()
    counts = state.counts()
    print(f"sweep {name}: {counts['done']} done, {counts['failed']} failed -> {written['table_md']}", file=stream)
    return 1 if counts["failed"] else 0


def main(argv=None) -> int:
    try:
        return run_sweep(argv)
    except ConfigError as err:
        from ..cli_errors import one_line

        print(f"l2vsd_ext.sweep: error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nl2vsd_ext.sweep: interrupted; run the same command again to continue "
              "(finished runs are kept, interrupted ones resume from their checkpoints)", file=sys.stderr)
        return 130
