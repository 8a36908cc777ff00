"""OUT/sweep.json: the grid (what was asked) and each run's status, attempts and errors. Written
only by the driver, atomically after every change, so it is always a readable picture."""
from __future__ import annotations

import json
import os
import time

SWEEP_FILE = "sweep.json"
STATUSES = ("queued", "running", "done", "failed")


class SweepState:
    def __init__(self, sweep_dir: str, grid: dict, specs):
        self.sweep_dir = sweep_dir
        self.path = os.path.join(sweep_dir, SWEEP_FILE)
        previous = {r["name"]: r for r in load_sweep(sweep_dir).get("runs", [])}
        self.grid = grid
        self.runs = {}
        for spec in specs:
            old = previous.get(spec.name, {})
            self.runs[spec.name] = {**spec.describe(), "folder": os.path.join("runs", spec.name),
                                    "status": "queued", "attempts": old.get("attempts", 0),
                                    "errors": old.get("errors", []), "result": None}

    def set(self, name: str, **fields) -> None:
        self.runs[name].update(fields)
        self.save()

    def add_error(self, name: str, error: str) -> None:
        run = self.runs[name]
        run["errors"] = (run["errors"] + [{"attempt": run["attempts"], "error": error,
                                           "time": time.strftime("%Y-%m-%dT%H:%M:%S")}])[-10:]
        self.save()

    def counts(self) -> dict:
        counts = dict.fromkeys(STATUSES, 0)
        for run in self.runs.values():
            counts[run["status"]] += 1
        return counts

    def save(self) -> None:
        from ..checkpoint import atomic_write_bytes

        data = {**self.grid, "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), "counts": self.counts(),
                "runs": list(self.runs.values())}
        atomic_write_bytes(self.path, json.dumps(data, indent=2).encode())


def load_sweep(sweep_dir: str) -> dict:
    try:
        with open(os.path.join(sweep_dir, SWEEP_FILE)) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}
