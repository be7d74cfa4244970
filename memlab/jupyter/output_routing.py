"""Task output in the output area of the cell that submitted the task, however late it comes.

Ray prints a task's output into whichever cell runs when it arrives; here it goes to its own:

* at submission (``memlab.runtime.coreworker.task_output``'s tagger, on the submitting thread)
  the cell's parent header (ipykernel's ``kernel.get_parent()``) is recorded under its
  ``msg_id``, and that id travels with the task as its output tag (nested tasks' output comes
  back under the tag of the task the cell submitted);
* when a chunk arrives (on a runtime reader thread) it is written to the kernel's own stdout or
  stderr with that parent set for the writing thread only (``OutStream.set_thread_parent``):
  it joins that cell's output buffer, in order with the cell's own prints, and ipykernel
  publishes it on iopub as a ``stream`` message whose parent is the cell. Should the stream
  not be ipykernel's, the chunk is published with ``session.send`` (thread-safe: iopub's
  socket queues to its own thread).

A ``%%remote`` cell's prints read as the cell's own output; every other task's lines carry
Ray's prefix, ``(f pid=1234) …``. Outside a kernel (terminal IPython) chunks are printed.
"""

from __future__ import annotations

import re
import sys
import threading
from collections import OrderedDict
from typing import Any

from memlab.runtime.coreworker.task_output import (
    LinePrefixer,
    TaskOutput,
    set_submission_tagger,
    set_task_output_sink,
)

MAX_CELLS = 1024  # parent headers kept (one per cell that submitted tasks); older ones print
_CELL_TASK = re.compile(r"Cell In\[\d+\]\Z")  # a %%remote cell's task is named by its label


class OutputRouting:
    """The kernel's sink and tagger for task output (one per shell with the extension)."""

    def __init__(self, shell: Any) -> None:
        self.kernel = getattr(shell, "kernel", None)
        # The kernel's own streams, kept now: a later cell may capture sys.stdout for itself.
        self.streams = {"stdout": sys.stdout, "stderr": sys.stderr}
        self.parents: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.lock = threading.Lock()
        self.prefix = LinePrefixer()

    def install(self) -> None:
        set_submission_tagger(self.tag)
        set_task_output_sink(self.sink)

    def uninstall(self) -> None:
        set_submission_tagger(None)
        set_task_output_sink(None)

    def tag(self) -> str | None:
        """The msg_id of the request being handled on this thread (the running cell)."""
        kernel = self.kernel
        if kernel is None:
            return None
        parent = kernel.get_parent()
        header = parent.get("header") if parent else None
        msg_id: str | None = header.get("msg_id") if header else None
        if header is None or msg_id is None:
            return None
        if msg_id not in self.parents:
            with self.lock:
                self.parents[msg_id] = header
                if len(self.parents) > MAX_CELLS:
                    self.parents.popitem(last=False)
        return msg_id

    def sink(self, output: TaskOutput) -> None:
        """Write ``output`` into its cell's output area (called on a reader thread)."""
        own = not output.nested and _CELL_TASK.match(output.task_name) is not None
        text = output.text if own else self.prefix(output)
        header = self.parents.get(output.tag) if output.tag is not None else None
        if header is None or self.kernel is None:
            stream = sys.stderr if output.stream == "stderr" else sys.stdout
            stream.write(text)
            stream.flush()
            return
        self.publish(output.stream, text, header)

    def publish(self, name: str, text: str, header: dict[str, Any]) -> None:
        stream: Any = self.streams.get(name)
        if stream is not None and hasattr(stream, "set_thread_parent"):
            token = stream.set_thread_parent({"header": header})
            try:
                stream.write(text)
            finally:
                stream.reset_thread_parent(token)
            return
        kernel = self.kernel
        assert kernel is not None
        kernel.session.send(
            kernel.iopub_socket,
            "stream",
            {"name": name, "text": text},
            parent={"header": header},
            ident=f"stream.{name}".encode(),
        )


_active: OutputRouting | None = None


def install(shell: Any) -> None:
    """Route task output to submitting cells (``%load_ext memlab``)."""
    global _active
    _active = OutputRouting(shell)
    _active.install()


def uninstall() -> None:
    """Back to the runtime's default: prefixed prints on the kernel's stdout."""
    global _active
    if _active is not None:
        _active.uninstall()
        _active = None
