"""The files of one run folder: config.yaml, metrics.jsonl, changes.jsonl, validation/, turntable/,
export/, logs/ and checkpoints/last.pt. Knows which files make a folder "a run", so that no second
run is ever appended to one, and keeps RUN/.l2vsd-manifest.jsonl: every file (and folder) the run
itself wrote, recorded before it is written. A run started again from step 0 removes exactly those,
never a file of the user's that happens to sit in --out.

metrics.jsonl is appended to; on resume it is cut back to the checkpoint's step by writing the kept
lines to a temporary file and renaming it over the old one, so a kill at any moment leaves either
file whole. A torn last line (power loss, full disk) is dropped with one warning."""
from __future__ import annotations

import json
import os
import sys

CHECKPOINT = "checkpoints/last.pt"
MANIFEST = ".l2vsd-manifest.jsonl"
# Anything here means the folder already holds (part of) a run.
RUN_FILES = ("config.yaml", "metrics.jsonl", "changes.jsonl", "diagnostics.png")
RUN_DIRS = ("checkpoints", "validation", "turntable", "export", "logs")


def read_metrics(path: str, warn=None) -> list[dict]:
    """The records of a metrics.jsonl; a torn or unreadable last line is dropped (with one warning
    through `warn`, default stderr). A bad line elsewhere is an error: the file is not ours."""
    from .config import ConfigError

    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline, as every whole record does
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            int(record["step"])
        except (ValueError, KeyError, TypeError):
            if i == len(lines) - 1 and not tail.strip():
                tail = line  # a bad final line: treat as torn
                break
            raise ConfigError(f"'{path}': line {i + 1} is not a metrics record") from None
        records.append(record)
    if tail.strip():
        (warn or _warn)(f"warning: '{path}': dropped a torn last line ({len(tail)} bytes) "
                        "left by an interrupted write")
    return records


def _warn(message: str) -> None:
    print(message, file=sys.stderr)


class RunFolder:
    def __init__(self, root: str):
        self.root = root
        self.checkpoint = os.path.join(root, CHECKPOINT)
        self.metrics = os.path.join(root, "metrics.jsonl")
        self.config = os.path.join(root, "config.yaml")
        self.changes = os.path.join(root, "changes.jsonl")
        self.manifest = os.path.join(root, MANIFEST)
        self._claimed: set[str] | None = None

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def has_checkpoint(self) -> bool:
        return os.path.isfile(self.checkpoint)

    def has_manifest(self) -> bool:
        return os.path.isfile(self.manifest)

    def run_files(self) -> list[str]:
        """Names of the run files present (empty: a fresh or unrelated folder)."""
        return [name for name in RUN_FILES + RUN_DIRS if os.path.exists(self.path(name))]

    def saved_settings(self) -> dict | None:
        """config.yaml as a dict, or None when it is missing or unreadable."""
        import yaml

        try:
            with open(self.config, encoding="utf-8") as fh:
                data = yaml.safe_load(fh)
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return None
        return data if isinstance(data, dict) else None

    # -- the manifest -------------------------------------------------------------------------
    def written(self) -> list[dict]:
        """The manifest's entries ({"file": rel} or {"dir": rel}), whole lines only: a line torn by
        a kill never names a file (it could be a prefix of a user's file name)."""
        try:
            with open(self.manifest, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return []
        entries = []
        for line in data.split(b"\n")[:-1]:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and len(entry) == 1 and next(iter(entry)) in ("file", "dir") \
                    and isinstance(next(iter(entry.values())), str):
                entries.append(entry)
        return entries

    def claim(self, *parts: str) -> str:
        """The path RUN/parts, recorded in the manifest (with the folders it needs, which are
        created) before the caller writes it."""
        return self._record(os.path.join(*parts), "file")

    def claim_dir(self, *parts: str) -> str:
        """RUN/parts as a folder of the run's when it does not exist yet (removed again only when empty)."""
        return self._record(os.path.join(*parts), "dir")

    def _record(self, rel: str, kind: str) -> str:
        rel = os.path.normpath(rel)
        if rel.startswith("..") or os.path.isabs(rel) or rel == ".":
            raise ValueError(f"not inside the run folder: {rel}")
        if self._claimed is None:
            self._claimed = {e.get("file") or e.get("dir") for e in self.written()}
        if rel in self._claimed or (kind == "dir" and os.path.isdir(self.path(rel))):
            return self.path(rel)
        missing = []
        parent = rel if kind == "dir" else os.path.dirname(rel)
        while parent and not os.path.isdir(self.path(parent)):
            missing.append(parent)
            parent = os.path.dirname(parent)
        new = [{"dir": d} for d in reversed(missing) if d not in self._claimed]
        if kind == "file":
            new.append({"file": rel})
        if new:
            os.makedirs(self.root, exist_ok=True)
            with open(self.manifest, "a", encoding="utf-8") as fh:
                fh.write("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in new))
                fh.flush()
                os.fsync(fh.fileno())
            self._claimed.update(e.get("file") or e.get("dir") for e in new)
        if missing:
            os.makedirs(self.path(missing[0]), exist_ok=True)
        return self.path(rel)

    def remove_own_files(self, folder: str, prefix: str, suffix: str) -> list[str]:
        """Removes RUN/folder/prefix*suffix files this run wrote (in its manifest), e.g. an earlier
        turntable's frames before a rewrite with fewer views; a user's file there stays."""
        removed = []
        for entry in self.written():
            rel = entry.get("file")
            if rel and os.path.dirname(rel) == os.path.normpath(folder):
                name = os.path.basename(rel)
                path = self.path(rel)
                if name.startswith(prefix) and name.endswith(suffix) and os.path.isfile(path):
                    os.unlink(path)
                    removed.append(path)
        return removed

    def clear_run_files(self) -> list[str]:
        """Removes the files a stopped run wrote (those in its manifest) and the folders it created
        when they are empty, before it starts again from step 0. Never any other file. Returns
        the paths removed."""
        entries = self.written()
        removed = []
        for entry in entries:
            path = self.path(entry["file"]) if "file" in entry else None
            if path and (os.path.isfile(path) or os.path.islink(path)):
                os.unlink(path)
                removed.append(path)
        for entry in reversed(entries):  # deepest first: they were recorded parent first
            if "dir" in entry:
                try:
                    os.rmdir(self.path(entry["dir"]))
                    removed.append(self.path(entry["dir"]))
                except OSError:
                    pass  # holds a file that is not the run's: the folder stays
        if os.path.exists(self.manifest):
            os.unlink(self.manifest)
        self._claimed = None
        return removed

    # -- metrics and changes --------------------------------------------------------------------
    def truncate_metrics(self, step: int) -> None:
        """Drops metric lines past `step` (written after the checkpoint we resume from), and a torn
        last line. The kept lines go to a temporary file renamed over the old one: never a moment
        where the file is empty or half written."""
        from .checkpoint import atomic_write_bytes

        if not os.path.exists(self.metrics):
            return
        records = read_metrics(self.metrics)
        kept = [r for r in records if int(r["step"]) <= step]
        with open(self.metrics, "rb") as fh:
            current = fh.read()
        text = "".join(json.dumps(r) + "\n" for r in kept).encode()
        if text != current:
            atomic_write_bytes(self.metrics, text)

    def append_metrics(self, record: dict) -> None:
        with open(self.claim("metrics.jsonl"), "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def record_changes(self, step: int, changes: dict) -> None:
        """One line per resume that changed settings: {"step": N, "changes": {key: [old, new]}}."""
        with open(self.claim("changes.jsonl"), "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"step": step, "changes": changes}, ensure_ascii=False) + "\n")
