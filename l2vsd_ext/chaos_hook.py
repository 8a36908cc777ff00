"""Test hook for the kill tests (python_tests/chaos/): with L2VSD_KILL_AT=PHASE:N in the
environment, the process SIGKILLs itself at the N-th time it reaches PHASE (a named point in
training, checkpoint writing, the metrics trim on resume, the export, the sweep). Without the
variable, point() is a dictionary look-up and nothing else."""
from __future__ import annotations

import os
import signal

_target = os.environ.get("L2VSD_KILL_AT", "")
_phase, _, _count = _target.rpartition(":")
_left = int(_count) if _count.isdigit() and _phase else 0
_seen: dict[str, int] = {}


def point(phase: str) -> None:
    """Marks that the process reached `phase`; killed here when the hook says so."""
    if not _left or phase != _phase:
        return
    _seen[phase] = _seen.get(phase, 0) + 1
    if _seen[phase] == _left:
        os.kill(os.getpid(), signal.SIGKILL)
