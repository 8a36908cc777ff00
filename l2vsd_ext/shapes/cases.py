"""Benchmark cases: a guidance mode plus extra run settings, so that option variants (an η, the
last-layer tangent, a LoRA learning rate) compare like modes.

Two spellings, both giving a case whose label is the spec as typed (also its folder name):
  mode:key=value,key=value     any run setting by its field name, e.g. 'l2vsd:eta=0.1,last_layer=1'
  mode+key=value+key           the older form, e.g. 'l2vsd+eta=0.1+last-layer'
A setting given without '=value' is a switch turned on ('last_layer' = 'last_layer=true'). Dashes and
underscores are the same in keys. The run gets each setting as `--set key=value`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..config import MODES, ConfigError, RunConfig, coerce

# Settings the bench sets itself for every run; a case may not override them.
RESERVED = {"prompt": "the object's prompt", "pretrained": "--pretrained", "seed": "--seeds",
            "out": "the bench folder", "resume": "the bench", "mode": "the case's mode",
            "steps": "--steps", "val_every": "--val-every", "stop_after": "the bench"}


class CaseError(ValueError):
    """A malformed case spec (the bench prints it as one line, exit code 2)."""


@dataclass(frozen=True)
class Case:
    label: str  # the spec as typed: the table row and the folder name
    mode: str
    options: dict = field(default_factory=dict)  # field name -> value string, as given

    def run_flags(self) -> list[str]:
        flags = ["--mode", self.mode]
        if self.options:
            flags += ["--set", *(f"{k}={v}" for k, v in self.options.items())]
        return flags


def _split(spec: str) -> tuple[str, list[str]]:
    if ":" in spec:
        mode, _, rest = spec.partition(":")
        return mode, [item for item in rest.split(",")]
    mode, *items = spec.split("+")
    return mode, items


def parse_case(spec: str, extra: dict | None = None) -> Case:
    """The case a spec names; `extra` (field -> value string) applies to it too, unless the spec
    sets the same field to another value. Raises CaseError naming the spec."""
    if not spec or any(c.isspace() for c in spec) or "/" in spec:
        raise CaseError(f"--modes: case '{spec}' must be non-empty, without spaces or '/' "
                        "(it names a folder)")
    mode, items = _split(spec)
    if mode not in MODES:
        raise CaseError(f"--modes: unknown mode '{mode}' in '{spec}' (choose from {', '.join(MODES)})")
    types = {f.name: f.type for f in dataclasses.fields(RunConfig)}
    options: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not key:
            raise CaseError(f"--modes: empty setting in '{spec}' (write mode:key=value,key=value)")
        if key in RESERVED:
            raise CaseError(f"--modes: '{key}' in '{spec}' is set by {RESERVED[key]}, not per case")
        if key not in types:
            raise CaseError(f"--modes: unknown setting '{key}' in '{spec}' "
                            "(python -m l2vsd_ext.run --help lists the settings)")
        if not sep:
            if not types[key].startswith("bool"):
                raise CaseError(f"--modes: '{key}' in '{spec}' needs a value, e.g. '{mode}:{key}=...'")
            value = "true"
        try:
            coerce(key, value, types[key])
        except ConfigError as err:
            raise CaseError(f"--modes: '{spec}': {err}") from None
        if key in options and options[key] != value:
            raise CaseError(f"--modes: '{key}' given twice in '{spec}'")
        options[key] = value
    for key, value in (extra or {}).items():
        if key in options and coerce(key, options[key], types[key]) != coerce(key, value, types[key]):
            raise CaseError(f"--modes: '{spec}' sets {key}={options[key]} but the bench's "
                            f"--{key.replace('_', '-')} is {value}")
        options.setdefault(key, value)
    return Case(spec, mode, options)


def parse_cases(specs: list[str], extra: dict | None = None) -> dict[str, Case]:
    """{label: case} in the order given, duplicates dropped."""
    return {spec: parse_case(spec, extra) for spec in dict.fromkeys(specs)}
