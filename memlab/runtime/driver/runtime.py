"""The driver's runtime: starts the collector and the node managers, and shuts it all down.

Owns the session's lifecycle, an explicit state machine::

    STARTING ──► RUNNING ──► STOPPING ──► STOPPED
        └──────── failed start ──────────────┘

Shutdown is idempotent and bounded in time: node managers get a ``shutdown`` message, are
killed if they have not exited within a few seconds, the collector's lifeline is closed, and the
session's directory and arenas are removed whatever happened before.
"""

from __future__ import annotations

import atexit
import contextlib
import enum
import functools
import os
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from memlab.core.events import EventBuffer
from memlab.exceptions import MemlabError
from memlab.protocol.transport import Connection
from memlab.runtime import context
from memlab.runtime.coreworker.core_worker import DEFAULT_INLINE_THRESHOLD, CoreWorker
from memlab.runtime.coreworker.store_client import StoreClient
from memlab.runtime.driver.nodes import HEAD_NODE, Nodes, worker_env
from memlab.runtime.events import collector_main
from memlab.runtime.events.collector_client import CollectorClient
from memlab.runtime.events.shipper import EventShipper
from memlab.runtime.process_tree import labelled_processes
from memlab.runtime.session import (
    kill_point,
    make_session_dir,
    reap_stale_sessions,
    remove_session,
)

START_TIMEOUT = 60.0
STOP_TIMEOUT = 5.0


class RuntimeState(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(frozen=True)
class RuntimeOptions:
    num_workers: int
    num_nodes: int
    object_store_memory: int
    inline_threshold: int = DEFAULT_INLINE_THRESHOLD
    events: bool = True
    lineage_budget: int = 1 << 30
    plasma_directory: str | None = None


class Runtime:
    """A running memlab session (what ``memlab.init`` returns)."""

    def __init__(self, options: RuntimeOptions) -> None:
        self.options = options
        self.state = RuntimeState.STARTING
        self.secret = os.urandom(32)
        # The collector starts first, before the session has any file: from the moment one
        # exists, a process of the session is there to remove it should the driver die.
        self.collector_proc: subprocess.Popen[bytes] | None = (
            collector_main.spawn(
                None, self.secret, worker_env(), plasma_directory=options.plasma_directory
            )
            if options.events
            else None
        )
        kill_point("collector", os.getpid())
        try:
            self.session_dir = make_session_dir()
            if self.collector_proc is not None:
                collector_main.attach(self.collector_proc, self.session_dir)
        except BaseException:
            self._stop_collector(time.monotonic() + STOP_TIMEOUT)
            raise
        kill_point("session_dir", os.getpid())
        self.events = EventBuffer("driver")
        self.events.enabled = options.events
        self._stop_lock = threading.Lock()
        self.core = CoreWorker(
            "driver",
            "driver",
            self.session_dir,
            self.secret,
            HEAD_NODE,
            self.events,
            inline_threshold=options.inline_threshold,
            lineage_budget=options.lineage_budget,
        )
        # The event stream's ends on this side (the collector process runs already).
        self.shipper = EventShipper(self.events, self.session_dir, self.secret)
        self.collector: CollectorClient | None = (
            CollectorClient(self.shipper, before_read=self.core.flush_object_events)
            if options.events
            else None
        )
        self.nodes = Nodes(self)
        # The driver extends two of its core's handlers: it also keeps the session's roster.
        self.core.register("hello", self._on_hello, replace=True)
        self.core.register("worker_died", self._on_worker_died, replace=True)

    def _on_hello(self, conn: Connection, h: dict[str, Any], payload: bytes) -> None:
        self.core.peers.on_hello(conn, h, payload)
        self.nodes.on_hello(conn, h)

    def _on_worker_died(self, conn: Connection, h: dict[str, Any], payload: bytes) -> None:
        self.core.failures.on_worker_died(conn, h, payload)
        # Whatever it owned is gone with it (fate-sharing); front ends drop its objects.
        self.core.events.emit("owner.died", owner=h["worker"])
        with self.nodes.cond:
            self.nodes.workers.pop(h["worker"], None)
        self.nodes.broadcast(h, skip=conn)  # owners and stores on every node must know

    def start(self) -> Runtime:
        reap_stale_sessions(self.options.plasma_directory)
        opts = self.options
        try:
            per_node = [
                opts.num_workers // opts.num_nodes + (k < opts.num_workers % opts.num_nodes)
                for k in range(opts.num_nodes)
            ]
            started = [
                self.nodes.start(n, opts.object_store_memory // opts.num_nodes) for n in per_node
            ]
            kill_point("nodes", os.getpid())
            self.nodes.wait_ready(started, START_TIMEOUT)
            kill_point("ready", os.getpid())
            if opts.events:
                self._connect_collector()
        except BaseException:
            self.shutdown()
            raise
        head = self.nodes.info[HEAD_NODE]
        self.core.attach_store(
            StoreClient(HEAD_NODE, head["arena"], functools.partial(self.core.conn_to, HEAD_NODE))
        )
        self.state = RuntimeState.RUNNING
        context.set_runtime(self)
        atexit.register(self.shutdown)
        return self

    def _connect_collector(self) -> None:
        proc = self.collector_proc
        assert proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while self.shipper.connection(wait=0.05) is None:
            if proc.poll() is not None:
                raise MemlabError(
                    f"the event collector exited with code {proc.returncode} "
                    "during start-up; its error is printed above"
                )
            if time.monotonic() > deadline:
                raise MemlabError(f"the event collector did not start within {START_TIMEOUT} s")
        self.shipper.start()

    def add_node(self, num_workers: int = 1, object_store_memory: int | None = None) -> str:
        """Start one more simulated node; returns its id once it is ready."""
        capacity = object_store_memory or self.options.object_store_memory // self.options.num_nodes
        node_id = self.nodes.start(num_workers, capacity)
        self.nodes.wait_ready([node_id], START_TIMEOUT)
        return node_id

    def shutdown(self) -> None:
        """Stop every process of the session and remove its files; idempotent, bounded."""
        with self._stop_lock:
            if self.state in (RuntimeState.STOPPING, RuntimeState.STOPPED):
                return
            self.state = RuntimeState.STOPPING
        with contextlib.suppress(Exception):
            atexit.unregister(self.shutdown)
        if context.current_runtime() is self:
            context.set_runtime(None)
        for node_id in list(self.nodes.alive):
            with contextlib.suppress(Exception):
                self.core.conn_to(node_id).send({"t": "shutdown"})
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in list(self.nodes.procs.values()):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(2)
            with contextlib.suppress(Exception):
                proc.stdin.close()  # type: ignore[union-attr]
        self.core.close()
        if self.collector is not None:
            self.collector.close()
        self.shipper.close()
        self._stop_collector(deadline)
        # The last sweep: processes that tasks started and no node manager could end (one was
        # killed, or hung) still carry the session's mark.
        for stray in labelled_processes(self.session_dir):
            with contextlib.suppress(Exception):
                stray.kill()
        remove_session(self.session_dir, list(self.nodes.arenas.values()))
        self.state = RuntimeState.STOPPED

    def _stop_collector(self, deadline: float) -> None:
        proc = self.collector_proc
        if proc is None:
            return
        collector_main.stop(proc)  # end of the lifeline: it exits
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(2)

    def describe(self) -> dict[str, Any]:
        return {"state": self.state.value, "session_dir": self.session_dir, **asdict(self.options)}

    def __repr__(self) -> str:
        o = self.options
        return (
            f"<memlab runtime {self.state.value}: {o.num_workers} workers on "
            f"{o.num_nodes} node(s), store {o.object_store_memory >> 20} MiB>"
        )
