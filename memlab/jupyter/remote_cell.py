"""``%%remote``: the cell's code runs as a task on a worker (being written)."""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError


def run(shell: Any, line: str, cell: str) -> Any:
    raise UsageError("%%remote is not available yet")
