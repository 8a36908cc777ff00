"""argparse, made to report a bad flag the way every other bad input is reported: one line
(prog: error: ...) and exit code 2, raised as ConfigError so the caller prints it."""
from __future__ import annotations

import argparse

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
