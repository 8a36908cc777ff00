"""argparse, made to report a bad flag the way every other bad input is reported: one line
(prog: error: ...) and exit code 2, raised as ConfigError so the caller prints it."""
from __future__ import annotations

import argparse
import sys

from .config import ConfigError


def _error(message: str):
    raise ConfigError(message)


def one_line_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`parser`, raising ConfigError on a bad command line instead of printing its usage."""
    parser.error = _error  # --help still prints and exits 0
    return parser


def one_line(message) -> str:
    """`message` with line breaks and other unprintable characters escaped (a value echoed from the
    command line may hold a newline, \\r or \\x1e): the error stays one line."""
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for c in str(message))


class FolderLock:
    """The --out lock a run command holds, set once taken (run_lock.lock_folder)."""

    def __init__(self):
        self.lock = None

    def hold(self, lock):
        self.lock = lock
        return lock


def run_command(prog: str, body, resume_hint=lambda message: message) -> int:
    """Runs body(folder_lock) -> exit code (None: 0) with the exit codes every run command shares:
    a refused setting (ConfigError) prints one line and exits 2, removing the folder the command
    created; a signal (RunInterrupted) prints its resume line (through resume_hint) and exits
    128 + signal; Ctrl-C exits 130 keeping the last checkpoint; the --out lock is always released."""
    from .interrupts import RunInterrupted

    folder = FolderLock()
    try:
        return body(folder) or 0
    except ConfigError as err:
        if folder.lock is not None:
            folder.lock.discard()  # a refused run leaves no folder behind
            folder.lock = None
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        return 2
    except RunInterrupted as stop:
        print(f"{prog}: {resume_hint(str(stop))}", file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; the last checkpoint written (if any) is kept", file=sys.stderr)
        return 130
    finally:
        if folder.lock is not None:
            folder.lock.release()
