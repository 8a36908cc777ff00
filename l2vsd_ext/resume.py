"""What a run in an existing folder may do: a resumed run keeps the settings in its checkpoint
(only those in CHANGEABLE_ON_RESUME may differ, each change printed and recorded); a folder with a
run's files but no checkpoint starts again from step 0 only when its settings match."""
from __future__ import annotations

import dataclasses
import math
import os

from .checkpoint import load_checkpoint
from .config import CHANGEABLE_ON_RESUME, NOT_COMPARED, ConfigError, RunConfig, from_saved
from .run_folder import MANIFEST, RUN_FILES, RunFolder


@dataclasses.dataclass
class Plan:
    config: RunConfig
    changes: dict  # key -> [old, new], printed and recorded in RUN/changes.jsonl
    restart: bool = False  # a stopped run without checkpoint: its files are cleared first
    notes: list = dataclasses.field(default_factory=list)  # lines printed before the run starts


def _flag(key: str) -> str:
    from .config import flag_of

    return flag_of(key)


def _differing(given: dict, saved: RunConfig, skip=()) -> list[str]:
    return [k for k, v in given.items()
            if k not in NOT_COMPARED and k not in skip and v != getattr(saved, k)]


def _change_line(key: str, old, new) -> str:
    if key == "export_at_end":  # the field reads backwards as its flag (--no-export: True -> False)
        return f"  export at the end: {'on' if old else 'off'} -> {'on' if new else 'off'}"
    return f"  {_flag(key)}: {old!r} -> {new!r}"


def plan_run(given: dict) -> Plan:
    """`given`: the settings the user gave (YAML, flags, --set), already typed."""
    config = RunConfig.from_dict(given)
    folder = RunFolder(config.out)
    if folder.has_checkpoint():
        if not config.resume:
            raise ConfigError(f"--out: '{config.out}' already holds a run; pass --resume to continue it "
                              "or choose another folder")
        return _resume(given, config, folder)
    ours = {e["file"] for e in folder.written() if "file" in e}
    foreign = [name for name in RUN_FILES if os.path.exists(folder.path(name)) and name not in ours]
    if foreign:  # a run would overwrite them, and no run of ours wrote them: not ours to touch
        raise ConfigError(f"--out: '{config.out}' holds {', '.join(foreign)} that no run wrote "
                          f"(no {MANIFEST} lists it); choose another --out, or move those files away")
    if not ours:
        if config.resume:
            raise ConfigError(f"--resume: no checkpoint at '{folder.checkpoint}'")
        return Plan(config, {})
    # A run stopped before its first checkpoint: same settings -> again from step 0; else refuse.
    present = folder.run_files()
    saved_values = folder.saved_settings()
    what = f"--out: '{config.out}' holds files of a run that stopped before its first checkpoint " \
           f"({', '.join(present)})"
    if saved_values is None:  # killed before its config.yaml was written: nothing to compare, nothing kept
        config.resume = False
        return Plan(config, {}, restart=True, notes=[f"'{config.out}' holds a run that stopped before "
                                                     "writing its settings: starting it again from step 0"])
    try:
        saved = from_saved(saved_values)
    except ConfigError as err:
        raise ConfigError(f"{what} whose config.yaml is not valid ({err}); choose another --out") from None
    if config.resume:  # nothing to resume from: the saved settings are the truth, as on resume
        differing = _differing(given, saved, skip=CHANGEABLE_ON_RESUME)
        config = dataclasses.replace(saved, **{k: v for k, v in given.items()
                                               if k in CHANGEABLE_ON_RESUME or k in NOT_COMPARED})
    else:
        differing = _differing(dataclasses.asdict(config), saved, skip=CHANGEABLE_ON_RESUME)
    if differing:
        raise ConfigError(f"{what} with different settings ({', '.join(map(_flag, differing))}); "
                          "choose another --out, or delete the folder to start it anew")
    config.resume = False
    return Plan(config, {}, restart=True,
                notes=[f"'{config.out}' holds a run with the same settings that stopped before its first "
                       "checkpoint: starting it again from step 0 (its metrics and images are replaced)"])


def _resume(given: dict, config: RunConfig, folder: RunFolder) -> Plan:
    state = load_checkpoint(folder.checkpoint)
    try:
        saved = from_saved(state["config"])
    except (ConfigError, TypeError, KeyError) as err:
        raise ConfigError(f"--resume: '{folder.checkpoint}' holds an unreadable config: {err}") from None
    refused = _differing(given, saved, skip=CHANGEABLE_ON_RESUME)
    if refused:
        names = ", ".join(f"{_flag(k)} (saved {getattr(saved, k)!r}, given {given[k]!r})" for k in refused)
        raise ConfigError(f"--resume: the run keeps the settings it was started with; these differ: {names}. "
                          f"Only {', '.join(map(_flag, CHANGEABLE_ON_RESUME))} may change on resume; "
                          "start a new run in another --out to change the others")
    step = state.get("step", 0)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ConfigError(f"--resume: '{folder.checkpoint}' holds no valid step (got {step!r})")
    changes = {k: [getattr(saved, k), given[k]] for k in CHANGEABLE_ON_RESUME
               if k in given and given[k] != getattr(saved, k)}
    notes = []
    if "steps" in changes:
        new_steps = changes["steps"][1]
        if new_steps < step:
            raise ConfigError(f"--steps: the checkpoint is at step {step}; give --steps >= {step} "
                              f"(the run was configured for {saved.steps})")
        if saved.anneal_step is None:  # keep the annealing step where it was, and say so
            anneal_step = math.ceil(saved.anneal_at * saved.steps - 1e-9)
            changes["anneal_step"] = [None, anneal_step]
        notes.append(f"the largest timestep still anneals at step "
                     f"{changes.get('anneal_step', [None, saved.anneal_step])[1]} "
                     f"(anneal_at {saved.anneal_at} of the original {saved.steps} steps)")
        if saved.timestep_schedule == "sqrt" and saved.sqrt_anneal_steps is None:  # likewise HiFA's sqrt
            changes["sqrt_anneal_steps"] = [None, saved.steps]
            notes.append(f"the sqrt timestep schedule still anneals over the original {saved.steps} steps")
    values = {**dataclasses.asdict(saved), **{k: new for k, (_, new) in changes.items()},
              "resume": True, "out": config.out, "stop_after": config.stop_after}
    resumed = RunConfig.from_dict(values)
    if step >= resumed.steps:
        notes.append("the run is already at its last step: only its final outputs are written again")
    notes = [f"resuming '{config.out}' from step {step} of {resumed.steps}"] + \
            [_change_line(k, old, new) for k, (old, new) in changes.items()] + \
            [f"  {n}" for n in notes]
    return Plan(resumed, changes, notes=notes)
