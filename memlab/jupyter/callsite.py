"""Call sites in notebook terms: a ref made in a cell records ``Cell In[3], line 5``.

IPython compiles each cell under a file name of its own (ipykernel: a temporary
``…/ipykernel_<pid>/<hash>.py``) and remembers, in ``shell.compile._filename_map``, which
execution number that file belongs to; its tracebacks say ``Cell In[N]`` from that map. This
module lends the same map to ``memlab.runtime.coreworker.task_spec.call_site`` through its
translator hook, so ``memlab.state`` records and events speak the notebook's language.

``%%remote`` cells submit their task from a small function compiled here under a synthetic
file name (``remote_filename(n)``), so their call site is their own cell too.
"""

from __future__ import annotations

import sys
from typing import Any

from memlab.runtime.coreworker import task_spec

_REMOTE_PREFIX = "<memlab remote cell "


def remote_filename(number: int) -> str:
    """The file name a ``%%remote`` cell's submission is compiled under."""
    return f"{_REMOTE_PREFIX}{number}>"


def cell_label(number: int) -> str:
    return f"Cell In[{number}]"


class CellNames:
    """Translates the shell's cell file names to ``Cell In[N]`` (``None`` for other files)."""

    def __init__(self, shell: Any) -> None:
        # The map is read on every call site, so keep the dict itself, not the shell.
        self._map: dict[str, int] = getattr(shell.compile, "_filename_map", {})

    def __call__(self, filename: str) -> str | None:
        number = self._map.get(filename)
        if number is not None:
            return cell_label(number)
        if filename.startswith(_REMOTE_PREFIX):
            return cell_label(int(filename[len(_REMOTE_PREFIX) : -1]))
        return None


def current_cell(shell: Any) -> int:
    """The number of the cell running now (from a magic): the caller frame compiled from a
    cell says, since ``shell.execution_count`` may already count the next one."""
    names: dict[str, int] = getattr(shell.compile, "_filename_map", {})
    frame = sys._getframe(1)
    while frame is not None:
        number = names.get(frame.f_code.co_filename)
        if number is not None:
            return number
        frame = frame.f_back  # type: ignore[assignment]
    return int(shell.execution_count)


def install(shell: Any) -> None:
    task_spec.set_filename_translator(CellNames(shell))


def uninstall() -> None:
    task_spec.set_filename_translator(None)
