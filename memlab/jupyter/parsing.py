"""Argument parsing for the magics: bad input prints the usage, never a traceback.

``MagicParser`` is an ``argparse.ArgumentParser`` whose errors raise IPython's
``UsageError`` (shown as one message) with the usage appended, and which never exits the
kernel on ``-h``.
"""

from __future__ import annotations

import argparse
import re
import shlex
from typing import Any, NoReturn

from IPython.core.error import UsageError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "m": 1000**2,
    "g": 1000**3,
    "t": 1000**4,
    "ki": 1 << 10,
    "mi": 1 << 20,
    "gi": 1 << 30,
    "ti": 1 << 40,
}


class MagicParser(argparse.ArgumentParser):
    """An argument parser for one magic (or subcommand) that raises ``UsageError``."""

    def __init__(self, prog: str, description: str = "", **kwargs: Any) -> None:
        super().__init__(
            prog=prog, description=description, add_help=False, exit_on_error=False, **kwargs
        )

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}\n\n{self.format_usage().rstrip()}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise UsageError(message or self.format_usage())

    def parse_line(self, line: str) -> argparse.Namespace:
        try:
            words = shlex.split(line)
        except ValueError as exc:
            self.error(f"cannot split the arguments: {exc}")
        try:
            return self.parse_args(words)
        except argparse.ArgumentError as exc:
            self.error(str(exc))


def parse_size(text: str) -> int:
    """Bytes from ``"2GB"``, ``"512MiB"``, ``"1.5g"`` or ``"1000000"``."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size; write it like 2GB, 512MiB or 1000000 (bytes)"
        )
    unit = (match.group(2) or "").lower().rstrip("b")
    return int(float(match.group(1)) * _UNITS[unit])


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0")
    return value


def format_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
