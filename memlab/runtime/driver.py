"""The driver's runtime: starts the node managers, holds the collector, and shuts it all down.

Owns the session's lifecycle, an explicit state machine::

    STARTING ──► RUNNING ──► STOPPING ──► STOPPED
        └──────── failed start ──────────────┘

Shutdown is idempotent and bounded in time: node managers get a ``shutdown`` message, are
killed if they have not exited within a few seconds, and the session's directory and arenas are
removed whatever happened before.
"""

from __future__ import annotations

import atexit
import contextlib
import enum
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from memlab.exceptions import MemlabError
from memlab.runtime import global_state
from memlab.runtime.collector import Collector
from memlab.runtime.core import DEFAULT_INLINE_THRESHOLD, CoreWorker
from memlab.runtime.session import (
    arena_path,
    make_session_dir,
    reap_stale_sessions,
    remove_session,
)
from memlab.runtime.store_client import StoreClient

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


class Runtime:
    """A running memlab session (what ``memlab.init`` returns)."""

    def __init__(self, options: RuntimeOptions) -> None:
        self.options = options
        self.state = RuntimeState.STARTING
        self.session_dir = make_session_dir()
        self.secret = os.urandom(32)
        self.collector = Collector()
        self.collector.local.enabled = options.events
        self.nodes: dict[str, dict[str, Any]] = {}
        self.node_procs: dict[str, subprocess.Popen[bytes]] = {}
        self._arenas: list[str] = []
        self._nodes_ready = threading.Condition()
        self._stop_lock = threading.Lock()
        self.core = CoreWorker("driver", "driver", self.session_dir, self.secret, "node-0",
                               self.collector.local, inline_threshold=options.inline_threshold)
        hello = self.core.handlers["hello"]

        def on_hello(conn: Any, h: dict[str, Any], payload: bytes) -> None:
            hello(conn, h, payload)
            if h.get("kind") == "node":
                with self._nodes_ready:
                    self.nodes[h["proc"]] = {"arena": h["arena"], "capacity": h["capacity"],
                                             "pid": h["pid"]}
                    self._nodes_ready.notify_all()

        self.core.handlers["hello"] = on_hello
        self.collector.before_snapshot = self.core.flush_holder_events
        self.core.handlers["events"] = lambda conn, h, p: self.collector.ingest(h["batch"])

    def start(self) -> Runtime:
        reap_stale_sessions()
        try:
            self._start_nodes()
        except BaseException:
            self.shutdown()
            raise
        node0 = self.nodes["node-0"]
        self.core.store = StoreClient("node-0", node0["arena"],
                                      lambda: self.core.conn_to("node-0"))
        self.core.submitter.max_leases = self.options.num_workers
        self.state = RuntimeState.RUNNING
        global_state.set_runtime(self)
        atexit.register(self.shutdown)
        return self

    def _start_nodes(self) -> None:
        opts = self.options
        per_node = [opts.num_workers // opts.num_nodes + (k < opts.num_workers % opts.num_nodes)
                    for k in range(opts.num_nodes)]
        capacity = opts.object_store_memory // opts.num_nodes
        for k in range(opts.num_nodes):
            node_id = f"node-{k}"
            path = arena_path(self.session_dir, node_id)
            self._arenas.append(path)
            config = {
                "node_id": node_id, "session_dir": self.session_dir, "num_workers": per_node[k],
                "total_workers": opts.num_workers, "capacity": capacity, "driver": "driver",
                "inline_threshold": opts.inline_threshold, "arena_path": path,
                "spill_dir": os.path.join(self.session_dir, f"spill-{node_id}"),
            }
            proc = subprocess.Popen(
                [sys.executable, "-m", "memlab.runtime.node_main", json.dumps(config)],
                stdin=subprocess.PIPE, close_fds=True, env=self._worker_env(),
                # Own session: a kernel restart SIGKILLs the kernel's process group and ipykernel's
                # shutdown SIGTERMs it; the node manager must outlive both to clean up after them.
                start_new_session=True,
            )
            assert proc.stdin is not None
            proc.stdin.write(self.secret.hex().encode() + b"\n")
            proc.stdin.flush()  # stays open: the node manager's lifeline to this process
            self.node_procs[node_id] = proc
        deadline = time.monotonic() + START_TIMEOUT
        with self._nodes_ready:
            while len(self.nodes) < opts.num_nodes:
                for node_id, proc in self.node_procs.items():
                    if proc.poll() is not None:
                        raise MemlabError(
                            f"the node manager {node_id} exited with code {proc.returncode} "
                            "during start-up; its error is printed above"
                        )
                if time.monotonic() > deadline:
                    raise MemlabError(f"node managers did not start within {START_TIMEOUT} s")
                self._nodes_ready.wait(0.05)

    @staticmethod
    def _worker_env() -> dict[str, str]:
        # Workers import what the driver can import: functions shipped by name resolve there.
        env = dict(os.environ)
        paths = [p for p in sys.path if p and os.path.isdir(p)]
        if os.getcwd() not in paths:
            paths.insert(0, os.getcwd())
        env["PYTHONPATH"] = os.pathsep.join(paths)
        return env

    def shutdown(self) -> None:
        """Stop every process of the session and remove its files; idempotent, bounded."""
        with self._stop_lock:
            if self.state in (RuntimeState.STOPPING, RuntimeState.STOPPED):
                return
            self.state = RuntimeState.STOPPING
        with contextlib.suppress(Exception):
            atexit.unregister(self.shutdown)
        if global_state.current_runtime() is self:
            global_state.set_runtime(None)
        for node_id in self.node_procs:
            with contextlib.suppress(Exception):
                self.core.conn_to(node_id).send({"t": "shutdown"})
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in self.node_procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(2)
            with contextlib.suppress(Exception):
                proc.stdin.close()  # type: ignore[union-attr]
        self.core.close()
        self.collector.close()
        remove_session(self.session_dir, self._arenas)
        self.state = RuntimeState.STOPPED

    def describe(self) -> dict[str, Any]:
        return {"state": self.state.value, "session_dir": self.session_dir,
                **asdict(self.options)}

    def __repr__(self) -> str:
        o = self.options
        return (f"<memlab runtime {self.state.value}: {o.num_workers} workers on "
                f"{o.num_nodes} node(s), store {o.object_store_memory >> 20} MiB>")
