"""The live status line of a ``%%remote`` cell, and its output delivered to its own cell.

One watcher thread serves every cell in flight: every ``POLL`` (0.5) seconds it reads the new task
events (``memlab.state.events(kinds=...)``, only while a cell is in flight) and the readiness of
each cell's output ref, and updates the cell's display (a display handle, so the line updates
in place even after later cells ran): ``queued`` → ``running on worker w-…`` → ``done in
1.2 s`` / ``failed``. The cell's stdout/stderr streams into its output area as the task runs
(``output_routing``); on failure the traceback is written under the cell's own context
(ipykernel routes a thread's output by the parent header in its context), so it lands in that
cell's output area however late it arrives.
"""

from __future__ import annotations

import contextvars
import html
import re
import sys
import threading
import time
from typing import Any

import memlab
import memlab.state as st

POLL = 0.5  # seconds between status reads (each asks the collector once)
_KINDS = ["task.started", "task.finished", "task.failed", "task.retried", "task.cancelled"]
_FRAME = re.compile(r'^(\s*)File "(Cell In\[\d+\])", line (\d+), in (.+)$')


class RemoteCell:
    """One submitted ``%%remote`` cell: its refs, its status and its display."""

    def __init__(
        self,
        label: str,
        value: memlab.ObjectRef[Any],
        output: memlab.ObjectRef[Any],
        outputs: tuple[str, ...],
    ) -> None:
        self.label = label
        self.value = value
        self.output = output
        self.outputs = outputs
        self.task_id = value.hex()[:24]  # an object id is its task's id and an index
        self.submitted = time.monotonic()
        self.state = "queued"
        self.worker: str | None = None
        self.status = ""
        self.done = threading.Event()
        self.context = contextvars.copy_context()
        self.handle: Any = None
        self.elapsed = 0.0
        self.error = ""

    def watch(self) -> None:
        from IPython.display import display

        self.status = self._line()
        self.handle = display(self._bundle(), raw=True, display_id=True)
        _watcher().add(self)

    def _line(self) -> str:
        bound = f" → {', '.join(self.outputs)}, _remote" if self.outputs else " → _remote"
        if self.state == "running":
            return f"{self.label}: running on worker {self.worker}{bound}"
        if self.state == "done":
            return f"{self.label}: done in {_duration(self.elapsed)} on worker {self.worker}{bound}"
        if self.state == "failed":
            return f"{self.label}: failed after {_duration(self.elapsed)} ({self.error})"
        return f"{self.label}: {self.state}{bound}"

    def _bundle(self) -> dict[str, str]:
        colour = {"done": "#2e7d32", "failed": "#c62828", "running": "#1565c0"}.get(
            self.state, "#616161"
        )
        return {
            "text/plain": self.status,
            "text/html": f'<span style="color:{colour}">●</span> '
            f"<code>{html.escape(self.status)}</code>",
        }

    def update(self, state: str, worker: str | None = None) -> None:
        self.state = state
        self.worker = worker or self.worker
        status = self._line()
        if status != self.status:
            self.status = status
            if self.handle is not None:
                self.handle.update(self._bundle(), raw=True)

    def finish(self) -> None:
        """The output ref is ready: show the outcome (the cell's prints are in already: a
        task's output reaches the kernel before its result)."""
        self.elapsed = time.monotonic() - self.submitted
        try:
            memlab.get(self.output)
        except memlab.TaskError as exc:
            self.error = f"{type(exc.cause).__name__ if exc.cause else 'error'}: {exc}"[:200]
            self.update("failed")
            rendered = render_error(exc)
            self.context.run(write_output, [("stderr", _traceback_text(rendered))])
        except memlab.MemlabError as exc:  # the worker died, the task was cancelled, …
            self.error = str(exc)[:200]
            self.update("failed")
            self.context.run(write_output, [("stderr", f"{self.label} failed: {exc}\n")])
        else:
            self.update("done")
        self.done.set()


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def write_output(chunks: list[tuple[str, str]]) -> None:
    for stream, text in chunks:
        target = sys.stderr if stream == "stderr" else sys.stdout
        target.write(text)
        target.flush()


def render_error(exc: memlab.TaskError) -> memlab.TaskError:
    """``exc`` with its remote traceback in IPython's words: ``Cell In[7], line 3``."""
    lines = []
    for line in exc.traceback_str.splitlines():
        match = _FRAME.match(line)
        if match:
            indent, cell, number, where = match.groups()
            line = f"{indent}{cell}, line {number}" + (
                "" if where == "<module>" else f", in {where}()"
            )
        lines.append(line)
    exc.traceback_str = "\n".join(lines) + "\n"
    return exc


def _traceback_text(exc: memlab.TaskError) -> str:
    return "\n".join(exc._render_traceback_()) + "\n"


class _Watcher:
    """The one thread that updates every in-flight cell; it exits when none is left."""

    def __init__(self) -> None:
        self.cells: list[RemoteCell] = []
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.seq: int | None = None

    def add(self, cell: RemoteCell) -> None:
        with self.lock:
            self.cells.append(cell)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(
                    target=self._run, name="memlab-remote-status", daemon=True
                )
                self.thread.start()

    def _run(self) -> None:
        while True:
            with self.lock:
                cells = list(self.cells)
                if not cells:
                    self.thread = None
                    self.seq = None  # the next cell may run on a new runtime, counting anew
                    return
            if not memlab.is_initialized():
                for cell in cells:
                    cell.error = "the runtime stopped"
                    cell.elapsed = time.monotonic() - cell.submitted
                    cell.update("failed")
                    cell.done.set()
                self._drop(cells)
                continue
            pending = [c.output for c in cells]
            # returns as soon as one cell is done; otherwise after POLL, to read the events
            try:
                memlab.wait(pending, num_returns=1, timeout=POLL)
                ready, _ = memlab.wait(pending, num_returns=len(pending), timeout=0)
            except memlab.RuntimeNotStartedError:
                continue  # stopped meanwhile: the next round says so
            self._events(cells)  # after the wait: a finished cell's events are in by then
            finished = [c for c in cells if c.output in set(ready)]
            for cell in finished:
                try:
                    cell.finish()
                except Exception as exc:  # never let one cell stop the others' updates
                    cell.error = str(exc)
                    cell.done.set()
            self._drop(finished)

    def _drop(self, cells: list[RemoteCell]) -> None:
        with self.lock:
            self.cells = [c for c in self.cells if c not in cells]

    def _events(self, cells: list[RemoteCell]) -> None:
        try:
            events = st.events(since=self.seq, kinds=_KINDS)
        except memlab.MemlabError:
            return  # started with events=False: the line says queued until done
        if events:
            self.seq = events[-1]["seq"]
        by_task = {c.task_id: c for c in cells}
        for ev in events:
            cell = by_task.get(ev["task_id"])
            if cell is None:
                continue
            if ev["kind"] == "task.started":
                cell.update("running", ev.get("worker"))
            elif ev["kind"] == "task.retried":
                cell.update(f"retrying (attempt {ev.get('attempt')}: {ev.get('reason')})")
            elif ev.get("worker"):
                cell.worker = ev["worker"]


_the_watcher: _Watcher | None = None
_lock = threading.Lock()


def _watcher() -> _Watcher:
    global _the_watcher
    with _lock:
        if _the_watcher is None:
            _the_watcher = _Watcher()
        return _the_watcher
