"""Ctrl-C and SIGTERM during training: the first one asks the loop to stop after the step it is
in (the loop then writes the checkpoint and says how to resume); a second Ctrl-C stops at once."""
from __future__ import annotations

import shlex
import signal
import sys
import threading


class RunInterrupted(Exception):
    """Training stopped on a signal after writing its checkpoint; exit code 128 + signal."""

    def __init__(self, signum: int, step: int, checkpoint: str, out: str):
        self.signum, self.step, self.checkpoint, self.out = signum, step, checkpoint, out
        name = signal.Signals(signum).name
        super().__init__(f"{name}: stopped after step {step}; checkpoint written to '{checkpoint}'. "
                         f"Resume with: python -m l2vsd_ext.run --out {shlex.quote(out)} --resume")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopRequests:
    """Context manager: while active, SIGINT/SIGTERM set `signum` instead of killing the process.
    Only the main thread can own signal handlers; elsewhere it does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.signum is not None:  # asked twice: give the signal its usual effect
            self.__exit__()
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.raise_signal(signum)
            return
        self.signum = signum
        print(f"\n{signal.Signals(signum).name} received: finishing this step, then writing the checkpoint "
              "(press Ctrl-C again to stop at once, losing the steps since the last checkpoint)",
              file=sys.stderr, flush=True)

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
