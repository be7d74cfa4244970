"""The node manager: one process per (simulated) node, holding its store and its worker pool.

Owns the node's shared-memory arena and object store, the worker processes it spawns (their
leases and their deaths) and the node's event stream. It never runs user code.

Leases: an owner asks for a worker (``lease``); the manager grants an idle one (``granted``) or
queues the request and asks holders of idle leases to give theirs back (``revoke``). A worker
blocked in ``get`` frees its slot, so the pool grows by one while it waits (no nested deadlock).

Lifelines: the manager reads its stdin, a pipe from the driver; end of file means the driver
died, and the manager kills its workers, removes the arena and exits. Workers hold the same
kind of pipe from the manager. So no process of a session outlives the driver. Nor does any
process a task started: the manager is the child subreaper of its tree, and kills the whole
tree when it stops (see :mod:`memlab.runtime.process_tree`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from typing import Any

from memlab.core.events import EventBuffer
from memlab.exceptions import ConnectionClosedError, WorkerCrashedError
from memlab.protocol.endpoints import Listener, connect
from memlab.protocol.transport import Connection
from memlab.runtime import process_tree
from memlab.runtime.events.shipper import EventShipper
from memlab.runtime.node.store_service import StoreService
from memlab.runtime.node.worker_retirement import RETIRED_CAUSE, WorkerRetirement
from memlab.runtime.session import driver_gone, kill_point, remove_driver_files
from memlab.store import Arena, ObjectStore

log = logging.getLogger("memlab.node")


class WorkerProc:
    __slots__ = (
        "actor_request",
        "ask_after",
        "holder",
        "idle_since",
        "pid",
        "popen",
        "retiring",
        "state",
        "worker_id",
    )

    def __init__(self, worker_id: str, popen: subprocess.Popen[bytes]) -> None:
        self.worker_id = worker_id
        self.popen = popen
        self.pid = popen.pid
        # starting -> idle <-> leased -> dead, idle <-> retiring -> dead; or starting -> actor
        self.state = "starting"
        self.holder: str | None = None
        self.idle_since = 0.0
        self.ask_after = 0.0  # when it may be asked to retire (again)
        self.retiring = False  # it agreed to retire: its exit is no crash
        # (connection, lease id) of the owner that asked for this worker to host an actor
        self.actor_request: tuple[Connection, int] | None = None


class NodeManager(StoreService, WorkerRetirement):
    def __init__(
        self, config: dict[str, Any], secret: bytes, driver_pid: int | None = None
    ) -> None:
        self.driver_pid = driver_pid or config.get("driver_pid") or os.getppid()
        self.node_id: str = config["node_id"]
        self.session_dir: str = config["session_dir"]
        self.num_workers: int = config["num_workers"]
        self.config = config
        self.secret = secret
        self.events = EventBuffer(self.node_id)
        self.events.enabled = config.get("events", True)
        self.shipper = EventShipper(self.events, self.session_dir, secret)
        self.lock = threading.RLock()
        self.workers: dict[str, WorkerProc] = {}
        self.idle: deque[str] = deque()
        self.pending: deque[tuple[Connection, int]] = deque()
        self.blocked: set[str] = set()
        self.stopping = False
        self._spawning = 0
        self._last_stats: dict[str, int] | None = None
        self.owner_of: dict[bytes, str] = {}  # object -> owning process (fate-sharing)
        self.dead_owners: set[str] = set()  # a write or copy landing after the death is dropped
        self.writer_of: dict[bytes, str] = {}  # object -> the worker that wrote this copy
        self.copies: dict[bytes, set[str]] = {}  # our primaries -> nodes we gave a copy to
        self._nms: dict[str, Connection] = {}
        self._pull_lock = threading.Lock()
        self.arena = Arena.create(config["arena_path"], config["capacity"])
        self.store = ObjectStore(
            self.arena, config["spill_dir"], emit=self.events.emit, node_id=self.node_id
        )
        kill_point("node_arena", self._driver_if_mine())
        self.handlers = {
            "hello": self._on_hello,
            "lease": self._on_lease,
            "return_lease": self._on_return,
            "create": self._on_create,
            "seal": self._on_seal,
            "abort": self._on_abort,
            "get": self._on_get,
            "release": self._on_release,
            "delete": self._on_delete,
            "blocked": self._on_blocked,
            "unblocked": self._on_unblocked,
            "kill_worker": self._on_kill_worker,
            "shutdown": self._on_shutdown,
            "stats": self._on_stats,
            "pull": self._on_pull,
            "fetch": self._on_fetch,
            "worker_died": self._on_worker_died,
            "actor_lease": self._on_actor_lease,
            "delete_written": self._on_delete_written,
            "object_info": self._on_object_info,
            "holds": self._on_holds,
            "promote": self._on_promote,
            "drop_copies": self._on_drop_copies,
            "pool": self._on_pool,
        }
        self._init_retirement()
        path = os.path.join(self.session_dir, f"{self.node_id}.sock")
        self.listener = Listener(
            path, secret, lambda c: None, self._dispatch, self._on_close, name=self.node_id
        )
        self.driver = connect(
            os.path.join(self.session_dir, f"{config['driver']}.sock"),
            secret,
            self.node_id,
            self._dispatch,
            self._on_close,
        )
        self.driver.peer = config["driver"]

    # -- life ----------------------------------------------------------------------------------

    def start(self) -> None:
        process_tree.become_subreaper()
        for _ in range(self.num_workers):
            self._spawn()
        kill_point("node_workers", self._driver_if_mine())
        self.events.emit(
            "node.started",
            node_id=self.node_id,
            pid=os.getpid(),
            store_capacity=self.arena.capacity,
        )
        self.driver.send(
            {
                "t": "hello",
                "proc": self.node_id,
                "kind": "node",
                "pid": os.getpid(),
                "arena": self.arena.path,
                "capacity": self.arena.capacity,
            }
        )
        threading.Thread(
            target=self._housekeeping, name="memlab-node-housekeeping", daemon=True
        ).start()
        self.shipper.start()

    def _driver_if_mine(self) -> int | None:
        """The driver's pid while it is still our parent (None once it is not)."""
        return self.driver_pid if os.getppid() == self.driver_pid else None

    def stop_workers(self) -> None:
        """Kill every worker and whatever they started (a start-up that failed)."""
        with self.lock:
            self.stopping = True
            procs = list(self.workers.values())
        for w in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(w.pid, signal.SIGKILL)
        process_tree.kill_descendants()

    def wait_for_driver_death(self) -> None:
        """Block on the lifeline from the driver; its end means shut down."""
        with contextlib.suppress(Exception):
            sys.stdin.buffer.read()
        self.shutdown(driver_died=True)

    def shutdown(self, driver_died: bool = False) -> None:
        """Kill the workers, remove the arena and exit; if the driver died (it can no longer
        remove the session directory), remove that too."""
        with self.lock:
            first = not self.stopping
            self.stopping = True
            procs = list(self.workers.values())
        if not first:
            # Another thread is cleaning up and will end the process with os._exit; returning
            # here could let the main thread exit the interpreter and cut that cleanup short.
            threading.Event().wait()
        for w in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(w.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        for w in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                w.popen.wait(max(0.0, deadline - time.monotonic()))
        # What tasks started, wherever it is below us now (detached ones were re-parented here).
        process_tree.kill_descendants(max(0.5, deadline - time.monotonic()))
        with contextlib.suppress(Exception):
            self.store.close()
        self.arena.unlink()
        with contextlib.suppress(Exception):
            self.arena.close()
        self.listener.close()
        with contextlib.suppress(Exception):
            self.shipper.close(timeout=0.5)
        if driver_died:
            shutil.rmtree(self.session_dir, ignore_errors=True)
            if driver_gone(self.driver_pid):  # also what other nodes may not have removed
                remove_driver_files(self.driver_pid, self.config.get("plasma_directory"))
        os._exit(0)

    # -- workers -------------------------------------------------------------------------------

    def _spawn(self, actor_request: tuple[Connection, int] | None = None) -> None:
        worker_id = f"w-{os.urandom(4).hex()}"
        env = dict(os.environ)
        env.update(
            MEMLAB_SESSION_DIR=self.session_dir,
            MEMLAB_NODE=self.node_id,
            MEMLAB_PROC=worker_id,
            MEMLAB_ARENA=self.arena.path,
            MEMLAB_INLINE=str(self.config["inline_threshold"]),
            MEMLAB_NUM_WORKERS=str(self.config["total_workers"]),
            MEMLAB_DRIVER=self.config["driver"],
            MEMLAB_LINEAGE_BUDGET=str(self.config.get("lineage_budget", 1 << 30)),
            MEMLAB_EVENTS="1" if self.events.enabled else "0",
        )
        with self.lock:
            self._spawning += 1  # until it is in self.workers, the zombie reaper must skip it
        try:
            popen = subprocess.Popen(
                [sys.executable, "-m", "memlab.runtime.worker.main"],
                stdin=subprocess.PIPE,
                env=env,
                close_fds=True,  # it leads its own process group (worker.main)
            )
        except BaseException:
            with self.lock:
                self._spawning -= 1
            raise
        assert popen.stdin is not None
        popen.stdin.write(self.secret.hex().encode() + b"\n")
        popen.stdin.flush()  # stdin stays open: it is the worker's lifeline
        w = WorkerProc(worker_id, popen)
        w.actor_request = actor_request
        with self.lock:
            self.workers[worker_id] = w
            self._spawning -= 1
        threading.Thread(
            target=self._reap, args=(w,), name=f"memlab-reap-{worker_id}", daemon=True
        ).start()

    def _reap(self, w: WorkerProc) -> None:
        code = w.popen.wait()
        process_tree.kill_group(w.pid)  # its tasks' children and fork copies go with it
        if w.actor_request is not None and w.state == "starting":
            owner, lid = w.actor_request  # it died before it could host the actor: say so
            with contextlib.suppress(ConnectionClosedError):
                owner.send(
                    {
                        "t": "actor_start_failed",
                        "lid": lid,
                        "reason": f"worker {w.worker_id} exited with status {code}",
                    }
                )
        with self.lock:
            w.state = "dead"
            if w.worker_id in self.idle:
                self.idle.remove(w.worker_id)
            self.blocked.discard(w.worker_id)
            stopping = self.stopping
        if stopping:
            return
        self.store.disconnect(w.worker_id)
        self._drop_owned_by(w.worker_id)
        exitcode, sig = (None, -code) if code < 0 else (code, None)
        cause = RETIRED_CAUSE if w.retiring else WorkerCrashedError.describe_exit(exitcode, sig)
        info = {
            "worker": w.worker_id,
            "pid": w.pid,
            "exitcode": exitcode,
            "signal": sig,
            "node": self.node_id,
            "cause": cause,
        }
        self.events.emit(
            "worker.died",
            worker_id=w.worker_id,
            node=self.node_id,
            pid=w.pid,
            exitcode=exitcode,
            signal=sig,
            cause=info["cause"],
        )
        self._broadcast({"t": "worker_died", **info})
        with self.lock:
            del self.workers[w.worker_id]
            if self._pool_size() < self.num_workers + len(self.blocked):
                self._spawn()

    def _to_idle(self, w: WorkerProc) -> None:
        w.state, w.holder, w.idle_since = "idle", None, time.monotonic()
        self.idle.append(w.worker_id)

    def _pool_size(self) -> int:
        """Live workers that serve task leases (actor workers are extra and never pooled)."""
        return sum(x.state != "dead" and x.actor_request is None for x in self.workers.values())

    def _broadcast(self, header: dict[str, Any]) -> None:
        for conn in [*self.listener.connections(), self.driver]:
            with contextlib.suppress(ConnectionClosedError):
                conn.send(header)

    # -- messages ------------------------------------------------------------------------------

    def _dispatch(self, conn: Connection, h: dict[str, Any], payload: bytes) -> None:
        handler = self.handlers.get(h["t"])
        if handler is not None:
            handler(conn, h)

    def _on_close(self, conn: Connection, error: BaseException | None) -> None:
        peer = conn.peer
        if conn is self.driver:
            threading.Thread(target=self.shutdown, args=(True,), daemon=True).start()
            return
        if peer is None:
            return
        self.store.disconnect(peer)
        with self.lock:
            self.pending = deque((c, lid) for c, lid in self.pending if c is not conn)
            for w in self.workers.values():
                if w.holder == peer and w.state == "leased":
                    w.state, w.holder = "idle", None
                    self._to_idle(w)
                elif w.holder == peer and w.state == "actor":
                    # Actors fate-share with their owner.
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(w.pid, signal.SIGKILL)
            self._serve()

    def _on_hello(self, conn: Connection, h: dict[str, Any]) -> None:
        conn.peer = h["proc"]
        if h.get("kind") != "worker":
            return
        with self.lock:
            w = self.workers.get(h["proc"])
            if w is None or w.state != "starting":
                return
            if w.actor_request is not None:
                w.state = "actor"
                owner, lid = w.actor_request
                w.holder = owner.peer
                with contextlib.suppress(ConnectionClosedError):
                    owner.send({"t": "granted", "lid": lid, "worker": w.worker_id, "actor": True})
            else:
                w.state = "idle"
                self._to_idle(w)
                self._serve()
        self.events.emit("worker.started", worker_id=w.worker_id, node=self.node_id, pid=w.pid)

    def _on_lease(self, conn: Connection, h: dict[str, Any]) -> None:
        with self.lock:
            self.pending.append((conn, h["lid"]))
            self._serve()
            if self.pending:
                for w in self.workers.values():
                    if w.state == "leased" and w.holder != conn.peer and w.holder is not None:
                        self._send_to(w.holder, {"t": "revoke", "worker": w.worker_id})

    def _serve(self) -> None:
        while self.pending and self.idle:
            conn, lid = self.pending.popleft()
            if conn.closed:
                continue
            w = self.workers[self.idle.popleft()]
            w.state, w.holder = "leased", conn.peer
            try:
                conn.send({"t": "granted", "lid": lid, "worker": w.worker_id})
            except ConnectionClosedError:
                w.state, w.holder = "idle", None
                self.idle.appendleft(w.worker_id)

    def _on_return(self, conn: Connection, h: dict[str, Any]) -> None:
        with self.lock:
            w = self.workers.get(h["worker"])
            if w is not None and w.state == "leased" and w.holder == conn.peer:
                w.state, w.holder = "idle", None
                self._to_idle(w)
                self._serve()

    def _on_actor_lease(self, conn: Connection, h: dict[str, Any]) -> None:
        """An owner creates an actor: it gets a worker of its own, outside the task pool."""
        with self.lock:
            if not self.stopping:
                self._spawn(actor_request=(conn, h["lid"]))

    def _on_blocked(self, conn: Connection, h: dict[str, Any]) -> None:
        with self.lock:
            self.blocked.add(conn.peer or "")
            if not self.stopping and self._pool_size() < self.num_workers + len(self.blocked):
                self._spawn()

    def _on_unblocked(self, conn: Connection, h: dict[str, Any]) -> None:
        with self.lock:
            self.blocked.discard(conn.peer or "")

    def _on_kill_worker(self, conn: Connection, h: dict[str, Any]) -> None:
        w = self.workers.get(h["worker"])
        if w is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(w.pid, signal.SIGKILL)

    def _on_shutdown(self, conn: Connection, h: dict[str, Any]) -> None:
        threading.Thread(target=self.shutdown, daemon=True).start()

    def _send_to(self, peer: str, header: dict[str, Any]) -> None:
        for conn in [*self.listener.connections(), self.driver]:
            if conn.peer == peer:
                with contextlib.suppress(ConnectionClosedError):
                    conn.send(header)
                return

    # -- events --------------------------------------------------------------------------------

    def _housekeeping(self) -> None:
        while not self.stopping:
            time.sleep(0.05)  # a steady tick for batching events, not a wait for a state
            with self.lock:
                keep = None if self._spawning else {w.pid for w in self.workers.values()}
            if keep is not None:  # orphans re-parented to us must not stay zombies
                process_tree.reap_children(keep)
            with contextlib.suppress(Exception):
                self.retire_idle()
            with contextlib.suppress(Exception):
                stats = self.store.stats()
                if stats != self._last_stats:
                    self._last_stats = stats
                    self.events.emit(
                        "node.store",
                        node_id=self.node_id,
                        store_used=stats["used"],
                        spilled_bytes=stats["spilled_bytes"],
                        num_objects=stats["num_objects"],
                    )
