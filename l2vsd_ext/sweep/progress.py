"""The sweep's one live progress line: runs done/running/failed/queued and an ETA from the runs
finished so far. Redrawn in place on a terminal; elsewhere (logs, CI) a new line only when a count
changes, so a log holds a short history instead of thousands of redraws."""
from __future__ import annotations

import sys


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def eta_seconds(durations: list[float], remaining: int, slots: int) -> float | None:
    """Remaining runs at the mean duration of the runs finished so far, `slots` at a time."""
    if not durations or remaining <= 0:
        return None if remaining > 0 else 0.0
    mean = sum(durations) / len(durations)
    return -(-remaining // max(slots, 1)) * mean


class ProgressLine:
    def __init__(self, name: str, total: int, stream=None):
        self.name, self.total = name, total
        self.stream = stream or sys.stderr
        self.live = getattr(self.stream, "isatty", lambda: False)()
        self.last_counts = None
        self.width = 0

    def text(self, counts: dict, eta: float | None) -> str:
        eta_text = "ETA --" if eta is None else f"ETA {format_seconds(eta)}"
        running = f"{counts['running']} running"
        if counts.get("evaluating"):  # the runs past training, in their evaluation
            running += f" ({counts['evaluating']} evaluating)"
        return (f"sweep {self.name}: {counts['done']}/{self.total} done, {running}, "
                f"{counts['failed']} failed, {counts['queued']} queued, {eta_text}")

    def update(self, counts: dict, eta: float | None) -> None:
        line = self.text(counts, eta)
        if self.live:
            self.stream.write("\r" + line.ljust(self.width))
            self.width = len(line)
        elif counts != self.last_counts:
            self.stream.write(line + "\n")
        self.last_counts = dict(counts)
        self.stream.flush()

    def close(self) -> None:
        if self.live and self.width:
            self.stream.write("\n")
            self.stream.flush()

