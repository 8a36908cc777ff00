"""The files of one run folder: config.yaml, metrics.jsonl, changes.jsonl, validation/, turntable/,
export/, logs/ and checkpoints/last.pt. Knows which files make a folder "a run", so that no second
run is ever appended to one."""
from __future__ import annotations

import json
import os
import shutil

CHECKPOINT = "checkpoints/last.pt"
# Anything here means the folder already holds (part of) a run.
RUN_FILES = ("config.yaml", "metrics.jsonl", "changes.jsonl", "diagnostics.png")
RUN_DIRS = ("checkpoints", "validation", "turntable", "export", "logs")


class RunFolder:
    def __init__(self, root: str):
        self.root = root
        self.checkpoint = os.path.join(root, CHECKPOINT)
        self.metrics = os.path.join(root, "metrics.jsonl")
        self.config = os.path.join(root, "config.yaml")
        self.changes = os.path.join(root, "changes.jsonl")

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def has_checkpoint(self) -> bool:
        return os.path.isfile(self.checkpoint)

    def run_files(self) -> list[str]:
        """Names of the run files present (empty: a fresh or unrelated folder)."""
        return [name for name in RUN_FILES + RUN_DIRS if os.path.exists(self.path(name))]

    def saved_settings(self) -> dict | None:
        """config.yaml as a dict, or None when it is missing or unreadable."""
        import yaml

        try:
            with open(self.config, encoding="utf-8") as fh:
                data = yaml.safe_load(fh)
        except (OSError, yaml.YAMLError):
            return None
        return data if isinstance(data, dict) else None

    def clear_run_files(self) -> None:
        """Removes a stopped run's files before it starts again from step 0 (never other files)."""
        for name in RUN_FILES:
            if os.path.exists(self.path(name)):
                os.unlink(self.path(name))
        for name in RUN_DIRS:
            if os.path.isdir(self.path(name)):
                shutil.rmtree(self.path(name))

    def truncate_metrics(self, step: int) -> None:
        """Drops metric lines past `step` (written after the checkpoint we resume from)."""
        if not os.path.exists(self.metrics):
            return
        with open(self.metrics) as fh:
            kept = [line for line in fh if line.strip() and json.loads(line)["step"] <= step]
        with open(self.metrics, "w") as fh:
            fh.writelines(kept)

    def append_metrics(self, record: dict) -> None:
        with open(self.metrics, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def record_changes(self, step: int, changes: dict) -> None:
        """One line per resume that changed settings: {"step": N, "changes": {key: [old, new]}}."""
        with open(self.changes, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"step": step, "changes": changes}, ensure_ascii=False) + "\n")
