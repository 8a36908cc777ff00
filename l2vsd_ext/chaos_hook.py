"""Test hook for the kill tests (python_tests/chaos/): with L2VSD_KILL_AT=PHASE:N in the
environment (or arm(PHASE, N)), the process SIGKILLs itself at the N-th time it reaches PHASE (a
named point in training, checkpoint writing, the metrics trim on resume, the export, the sweep).
With L2VSD_KILL_ONCE=FILE as well, only the first process to get there dies (it creates FILE), so
a retried sweep run is not killed again. Without the variables, point() does nothing."""
from __future__ import annotations

import os
import signal

_target = os.environ.get("L2VSD_KILL_AT", "")
_phase, _, _count = _target.rpartition(":")
_left = int(_count) if _count.isdigit() and _phase else 0
_seen: dict[str, int] = {}


_once = os.environ.get("L2VSD_KILL_ONCE", "")


def arm(phase: str | None, count: int = 1) -> None:
    """Sets (phase None: clears) the kill point of this process, as L2VSD_KILL_AT would."""
    global _phase, _left
    _phase, _left = phase or "", count if phase else 0
    _seen.clear()


def point(phase: str) -> None:
    """Marks that the process reached `phase`; killed here when the hook says so."""
    if not _left or phase != _phase:
        return
    _seen[phase] = _seen.get(phase, 0) + 1
    if _seen[phase] == _left:
        if _once:
            try:
                os.close(os.open(_once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return  # another process already died here
        os.kill(os.getpid(), signal.SIGKILL)
