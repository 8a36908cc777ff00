"""The grid of a sweep: prompts x modes x seeds x variants, one RunSpec per run, each with a run
folder a person can find (runs/p03-a-dslr-photo-of-a-hamburger/l2vsd-eta0.1-seed1) and the argv
of `python -m l2vsd_ext.run` that makes it."""
from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass, field

from ..config import MODES, ConfigError

# Variant axes and the modes each one changes; other modes get one run with the default, so a
# sweep over --eta does not repeat identical SDS runs (and never passes a flag the run refuses).
VARIANT_MODES = {"eta": ("l2vsd",), "last_layer": ("l2vsd",), "esd_lambda": ("vsd", "l2vsd"),
                 "hifa": ("sds", "vsd", "l2vsd")}
VARIANT_FLAGS = {"eta": "--eta", "last_layer": "--last-layer", "esd_lambda": "--esd-lambda", "hifa": "--hifa"}
VARIANT_LABELS = {"eta": "eta", "last_layer": "last-layer", "esd_lambda": "esd", "hifa": "hifa"}
# On/off axes: False leaves the flag out.
SWITCH_AXES = ("last_layer", "hifa")
RUNS_DIR = "runs"


def read_prompts(path: str, notes: list | None = None) -> list[str]:
    """One prompt per line; blank lines and lines starting with # are skipped. A # anywhere else
    belongs to the prompt ("a C# programmer's desk"). `notes` collects warnings, printed by the caller
    once the sweep is accepted (a refused one is a single line)."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError as err:
        raise ConfigError(f"PROMPTS: cannot read '{path}': {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"PROMPTS: '{path}' is not UTF-8 text") from err
    prompts = [line.strip() for line in lines if not line.lstrip().startswith("#")]
    looks_like_comment = [i + 1 for i, line in enumerate(lines)
                          if not line.lstrip().startswith("#") and re.search(r"\s#", line)]
    if looks_like_comment and notes is not None:  # a trailing "  # note" was cut before; now it is kept: say so
        notes.append(f"warning: PROMPTS: '{path}' line(s) {', '.join(map(str, looks_like_comment[:5]))}: a '#' "
                     "after a space is kept as part of the prompt (only a line starting with # is a comment)")
    return check_prompts(prompts, path)


def check_prompts(prompts, source: str) -> list[str]:
    prompts = [p for p in prompts if p]
    if not prompts:
        raise ConfigError(f"PROMPTS: '{source}' holds no prompts (one per line, # for comments)")
    seen = set()
    for p in prompts:
        if not isinstance(p, str):
            raise ConfigError(f"PROMPTS: every prompt must be text, got {p!r} in '{source}'")
        if p in seen:
            raise ConfigError(f"PROMPTS: '{p}' appears twice in '{source}'")
        seen.add(p)
    return prompts


def check_modes(modes) -> list[str]:
    if not modes:
        raise ConfigError("--modes: at least one mode is required")
    for m in modes:
        if m not in MODES:
            raise ConfigError(f"--modes: unknown mode '{m}' (choose from {', '.join(MODES)})")
    if len(set(modes)) != len(modes):
        raise ConfigError(f"--modes: a mode is listed twice in {' '.join(modes)}")
    return list(modes)


def slug(text: str, limit: int = 40) -> str:
    words = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if len(words) > limit:  # cut at a word boundary where there is one
        cut = words[:limit + 1]
        words = cut.rsplit("-", 1)[0] if "-" in cut else cut[:limit]
    return words or "prompt"


@dataclass(frozen=True)
class RunSpec:
    prompt_index: int
    prompt: str
    mode: str
    seed: int
    variant: tuple = field(default=())  # ((axis, value), ...) in VARIANT_FLAGS order

    @property
    def method(self) -> str:
        """The mode with its variant, e.g. 'l2vsd-eta0.1-last-layer': one column of the report."""
        parts = [self.mode]
        for axis, value in self.variant:
            label = VARIANT_LABELS[axis]
            parts.append(label if value is True else f"{label}{value:g}")
        return "-".join(parts)

    @property
    def name(self) -> str:
        """Path of the run folder below OUT/runs."""
        return f"p{self.prompt_index:02d}-{slug(self.prompt)}/{self.method}-seed{self.seed}"

    def folder(self, sweep_dir: str) -> str:
        return os.path.join(sweep_dir, RUNS_DIR, self.name)

    def run_argv(self, sweep_dir: str, common: list[str]) -> list[str]:
        argv = ["--prompt", self.prompt, "--mode", self.mode, "--seed", str(self.seed),
                "--out", self.folder(sweep_dir)]
        for axis, value in self.variant:
            argv += [VARIANT_FLAGS[axis]] if value is True else [VARIANT_FLAGS[axis], repr(value)]
        return argv + list(common)

    def describe(self) -> dict:
        return {"name": self.name, "prompt": self.prompt, "prompt_index": self.prompt_index,
                "mode": self.mode, "method": self.method, "seed": self.seed,
                "variant": dict(self.variant)}


def variants_for(mode: str, axes: dict) -> list[tuple]:
    """Every combination of the axes that apply to `mode`; `axes` maps axis -> list of values
    (None or [] = not swept). last_layer's values are booleans: False means the flag is left out."""
    chosen = [(axis, values) for axis, values in axes.items() if values and mode in VARIANT_MODES[axis]]
    combos = []
    for values in itertools.product(*(v for _, v in chosen)):
        combos.append(tuple((axis, value) for (axis, _), value in zip(chosen, values)
                            if not (axis in SWITCH_AXES and value is False)))
    return combos or [()]


def expand_grid(prompts: list[str], modes: list[str], seeds: list[int], axes: dict) -> list[RunSpec]:
    """Runs ordered prompt-major, so early results cover every mode of the first prompts."""
    unknown = set(axes) - set(VARIANT_MODES)
    if unknown:
        raise ConfigError(f"unknown variant axes: {', '.join(sorted(unknown))}")
    if not seeds:
        raise ConfigError("--seeds: at least one seed is required")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: a seed is listed twice in {' '.join(map(str, seeds))}")
    return [RunSpec(i, prompt, mode, seed, variant)
            for i, prompt in enumerate(prompts)
            for mode in modes
            for variant in variants_for(mode, axes)
            for seed in seeds]
