"""What tasks print, as the driver receives it, and the hooks a front end sets to route it.

Workers capture what a task writes to ``sys.stdout``/``sys.stderr`` and send it to the task's
owner (``output_channel``); output of nested tasks is forwarded up the chain of owners, so the
driver receives every chunk attributed to the task *it* submitted (the outermost one). Here it
becomes a :class:`TaskOutput` and goes to the sink:

* no front end: :func:`default_sink` prints it to the driver's own stdout/stderr, each line
  prefixed as Ray does, ``(task_name pid=1234) hello``, so plain scripts see worker prints;
* a front end (``memlab.jupyter``) registers its own with :func:`set_task_output_sink`, and a
  tagger (:func:`set_submission_tagger`) that names, on the submitting thread, where the
  task's output belongs (a notebook cell). The tag travels with the task and comes back on
  every chunk, also on chunks that arrive after the task ended.

This layer imports no front end; the sink is called on a connection's reader thread, so it
must be quick and thread-safe, and never block on the kernel's main thread.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from typing import NamedTuple

log = logging.getLogger("memlab.runtime")


class TaskOutput(NamedTuple):
    """One chunk of a task's stdout or stderr, as it reaches the driver.

    Attributes:
        task_id: the task the driver submitted (for a nested task: its outermost ancestor).
        stream: ``"stdout"`` or ``"stderr"``.
        text: what was written, in order; consecutive writes are joined.
        task_name: the name of the task that wrote it (the nested one, if nested).
        pid: the process id of the worker that ran the writing task.
        tag: what the submission tagger returned when ``task_id`` was submitted, or None.
        nested: whether a task submitted by ``task_id`` (not ``task_id`` itself) wrote it.
    """

    task_id: bytes
    stream: str
    text: str
    task_name: str
    pid: int
    tag: str | None
    nested: bool


Sink = Callable[[TaskOutput], None]
Tagger = Callable[[], "str | None"]

_sink: Sink | None = None
_tagger: Tagger | None = None


def set_task_output_sink(sink: Sink | None) -> None:
    """Send task output to ``sink`` instead of :func:`default_sink` (None: back to it).

    ``sink`` runs on a connection's reader thread, once per chunk; exceptions it raises are
    logged and dropped.
    """
    global _sink
    _sink = sink


def set_submission_tagger(tagger: Tagger | None) -> None:
    """Call ``tagger()`` on the submitting thread for each task the driver submits; its
    string result comes back as :attr:`TaskOutput.tag` on that task's output (None: stop)."""
    global _tagger
    _tagger = tagger


def tag_for_submission() -> str | None:
    """The tag of a task being submitted here (the front end's, or None)."""
    tagger = _tagger
    if tagger is None:
        return None
    try:
        return tagger()
    except Exception:  # a broken front-end hook must not fail the submission
        log.exception("the task output tagger failed")
        return None


def deliver(output: TaskOutput) -> None:
    """Hand ``output`` to the sink; called by the channel on a reader thread."""
    sink = _sink or default_sink
    try:
        sink(output)
    except Exception:
        log.exception("the task output sink failed")


class LinePrefixer:
    """Prefixes each line with ``(task_name pid=N)``, as Ray does; a line continued by the
    next chunk of the same task and stream is prefixed once."""

    MAX_OPEN = 1024  # writers whose last chunk ended mid-line (a bound, not a limit of use)

    def __init__(self) -> None:
        self._open: set[tuple[str, int, str]] = set()
        self._lock = threading.Lock()

    def __call__(self, output: TaskOutput) -> str:
        key = (output.task_name, output.pid, output.stream)
        prefix = f"({output.task_name} pid={output.pid}) "
        with self._lock:
            continued = key in self._open
            lines = output.text.splitlines(keepends=True)
            text = "".join(
                line if i == 0 and continued else prefix + line for i, line in enumerate(lines)
            )
            if output.text.endswith("\n"):
                self._open.discard(key)
            elif lines:
                if len(self._open) >= self.MAX_OPEN:
                    self._open.clear()
                self._open.add(key)
        return text


_prefix = LinePrefixer()


def default_sink(output: TaskOutput) -> None:
    """Print ``output`` to this process's stdout or stderr, each line prefixed
    ``(task_name pid=N)``."""
    stream = sys.stderr if output.stream == "stderr" else sys.stdout
    stream.write(_prefix(output))
    stream.flush()
