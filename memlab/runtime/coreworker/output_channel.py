"""The output channel: what a task prints travels to its owner, in order, before its result.

Owns, in every process, the output captured for tasks running here and the routes of tasks
submitted from them. Data flow::

    task thread: print ─► StreamRouter (sys.stdout/err of a worker) ─► the running task's
                 OutputCapture (found through a ContextVar: right per thread, per actor-pool
                 thread and per asyncio task, which copies the context it was created in)
    housekeeping (every 10 ms) and the task's end ─► flush ─► "out" message to the caller
    caller, a worker:  "out" of a nested task ─► the capture of the task that submitted it
                       (forwarded: the chunks go up one more hop, attributed to that task)
    caller, the driver: "out" ─► task_output.deliver ─► the front end's sink, or a prefixed print

Invariants:

* A task's output reaches its caller before its reply: the task's end flushes it (waiting for
  any flush in progress, so an older chunk cannot be overtaken) on the connection the reply
  then takes. Output written after the end (an asyncio task it left behind, a nested task's
  late prints) follows in the next flush, still attributed to it.
* Bounded: at most ``FLUSH_LIMIT`` characters per task wait for a flush; beyond that the
  text is dropped and a ``[… N bytes dropped]`` line says how much.
* Writes outside any task (a thread the task started, the runtime's own threads) go to the
  process's real stdout/stderr, unchanged.
* A task that prints nothing costs a ContextVar set/reset and one small object.
"""

from __future__ import annotations

import contextvars
import os
import sys
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, TextIO

from memlab.exceptions import ConnectionClosedError
from memlab.runtime.coreworker.task_output import TaskOutput, deliver, tag_for_submission

if TYPE_CHECKING:
    from memlab.protocol.transport import Connection
    from memlab.runtime.coreworker.core_worker import CoreWorker

FLUSH_LIMIT = 1 << 20  # characters buffered per task between two flushes
RECENT_ROUTES = 4096  # nested tasks whose route outlives their spec (for their late output)
_ENCODING = ("utf-8", "surrogatepass")  # any str round-trips

# The task running in this thread (or asyncio task); None outside tasks.
current: contextvars.ContextVar[OutputCapture | None] = contextvars.ContextVar(
    "memlab_task_output", default=None
)


class OutputCapture:
    """The output of one task run here, waiting for the next flush to its caller."""

    __slots__ = (
        "caller",
        "channel",
        "chunks",
        "dropped",
        "dropped_stream",
        "name",
        "queued",
        "size",
        "tag",
        "task_id",
        "token",
        "wrote",
    )

    def __init__(
        self, channel: OutputChannel, task_id: bytes, name: str, caller: str, tag: str | None
    ) -> None:
        self.channel = channel
        self.task_id = task_id
        self.name = name
        self.caller = caller
        self.tag = tag
        # [stream, writer's task name, writer's pid, nested, [texts]] in order of writing
        self.chunks: list[list[Any]] = []
        self.size = 0
        self.dropped = 0
        self.dropped_stream = "stdout"
        self.queued = False  # in the channel's dirty list
        self.wrote = False  # anything at all: the task's end must flush
        self.token: contextvars.Token[OutputCapture | None] | None = None

    def write(self, stream: str, text: str) -> None:
        self.channel.add(self, stream, text, self.name, self.channel.pid, False)

    def take(self) -> list[list[Any]]:
        """The chunks since the last flush, the drop notice last; called under the lock."""
        chunks = self.chunks
        if self.dropped:
            chunks.append(
                [
                    self.dropped_stream,
                    self.name,
                    self.channel.pid,
                    False,
                    [f"[… {self.dropped} bytes dropped]\n"],
                ]
            )
        self.chunks, self.size, self.dropped, self.queued = [], 0, 0, False
        return chunks


class StreamRouter:
    """A worker's ``sys.stdout``/``sys.stderr``: writes made in a task go to its capture,
    the rest to the real stream (everything but ``write`` is the real stream's)."""

    def __init__(self, name: str, real: TextIO) -> None:
        self.name = name
        self.real = real

    def write(self, text: str) -> int:
        capture = current.get()
        if capture is None:
            return self.real.write(text)
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        capture.write(self.name, text)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if current.get() is None:
            self.real.flush()

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.real, attr)


def install_stream_routers() -> None:
    """Route this process's ``sys.stdout``/``sys.stderr`` by task (a worker does it once)."""
    if not isinstance(sys.stdout, StreamRouter):
        sys.stdout = StreamRouter("stdout", sys.stdout)
    if not isinstance(sys.stderr, StreamRouter):
        sys.stderr = StreamRouter("stderr", sys.stderr)


class OutputChannel:
    """Captures, flushes and forwards task output for one process (its ``CoreWorker``)."""

    def __init__(self, core: CoreWorker) -> None:
        self.core = core
        self.pid = os.getpid()
        self.lock = threading.Lock()  # the buffers; never held while sending
        self.send_lock = threading.Lock()  # one flush at a time: chunks leave in order
        self.dirty: list[OutputCapture] = []
        self.recent: OrderedDict[bytes, OutputCapture] = OrderedDict()
        core.peers.register("out", self._on_out)

    # -- running tasks ---------------------------------------------------------------------

    def begin(self, task_id: bytes, name: str, caller: str, tag: str | None) -> OutputCapture:
        """Capture what the calling thread (or asyncio task) prints, as task ``task_id``."""
        capture = OutputCapture(self, task_id, name, caller, tag)
        capture.token = current.set(capture)
        return capture

    def end(self, capture: OutputCapture) -> None:
        """The task's code returned: stop capturing, and send what it printed (before its
        reply, which the caller sends next on the same connection)."""
        if capture.token is not None:
            current.reset(capture.token)
            capture.token = None
        if capture.wrote:
            self.flush()

    def route(self, task_id: bytes) -> Any:
        """Where the output of task ``task_id``, being submitted here, goes: the capture of
        the task submitting it (a nested task), or the front end's tag (the driver)."""
        capture = current.get()
        if capture is None:
            return tag_for_submission()
        with self.lock:  # kept past the spec, for output that arrives after the reply
            self.recent[task_id] = capture
            if len(self.recent) > RECENT_ROUTES:
                self.recent.popitem(last=False)
        return capture

    # -- buffering and flushing ------------------------------------------------------------

    def add(
        self, capture: OutputCapture, stream: str, text: str, name: str, pid: int, nested: bool
    ) -> None:
        with self.lock:
            capture.wrote = True
            room = FLUSH_LIMIT - capture.size
            if len(text) > room:
                over = text[max(room, 0) :]
                capture.dropped += len(over.encode(*_ENCODING))
                capture.dropped_stream = stream
                text = text[: max(room, 0)]
            if text:
                capture.size += len(text)
                chunks = capture.chunks
                last = chunks[-1] if chunks else None
                if (
                    last is not None
                    and last[0] == stream
                    and last[1] == name
                    and last[2] == pid
                    and last[3] == nested
                ):
                    last[4].append(text)
                else:
                    chunks.append([stream, name, pid, nested, [text]])
            if not capture.queued:
                capture.queued = True
                self.dirty.append(capture)

    def flush(self) -> None:
        """Send the output gathered since the last flush, one message per caller."""
        if not self.dirty:
            return
        with self.send_lock:
            with self.lock:
                dirty, self.dirty = self.dirty, []
                taken = [(capture, capture.take()) for capture in dirty]
            batches: dict[str, tuple[list[list[Any]], list[bytes]]] = {}
            for capture, chunks in taken:
                heads, parts = batches.setdefault(capture.caller, ([], []))
                for stream, name, pid, nested, texts in chunks:
                    data = "".join(texts).encode(*_ENCODING)
                    heads.append(
                        [capture.task_id, capture.tag, stream, len(data), name, pid, nested]
                    )
                    parts.append(data)
            for caller, (heads, parts) in batches.items():
                try:
                    self.core.conn_to(caller).send({"t": "out", "c": heads}, b"".join(parts))
                except ConnectionClosedError:
                    pass  # the caller is gone, and with it whoever would read this

    # -- receiving -------------------------------------------------------------------------

    def _on_out(self, conn: Connection, h: dict[str, Any], payload: bytes) -> None:
        tasks = self.core.submitter.tasks
        pos = 0
        for task_id, tag, stream, size, name, pid, nested in h["c"]:
            text = payload[pos : pos + size].decode(*_ENCODING)
            pos += size
            spec = tasks.get(task_id)
            if spec is not None:
                route = spec.output
            else:
                with self.lock:
                    route = self.recent.get(task_id)
            if type(route) is OutputCapture:  # a nested task's: it joins its submitter's
                self.add(route, stream, text, name, pid, True)
            else:
                deliver(TaskOutput(task_id, stream, text, name, pid, tag, nested))
