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

Composition: the pool's bookkeeping is the pure :class:`memlab.core.worker_pool.WorkerPool`; this
class feeds it events under ``lock`` and carries out its instructions after (send, spawn, kill),
never holding the lock for I/O. Processes are :class:`~memlab.runtime.node.workers.WorkerProcesses`;
the store's messages are :class:`~memlab.runtime.node.store_service.StoreService`.

Retirement: idle workers beyond the pool's target (``num_workers`` plus those blocked in ``get``)
are asked to ``retire`` after a linger, as Ray's idle-worker reaping does. The worker decides:
only it knows whether it still owns objects or actors. A retired worker's exit is reported as a
death with exit code 0 and cause "retired", so owners and stores drop it as any ended process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import threading
import time
from typing import Any

from memlab.core import worker_pool as wp
from memlab.core.events import EventBuffer
from memlab.exceptions import ConnectionClosedError
from memlab.protocol.endpoints import Listener, connect
from memlab.protocol.transport import Connection
from memlab.runtime import process_tree
from memlab.runtime.coreworker.housekeeping import VALIDATE_ENV
from memlab.runtime.events.shipper import EventShipper
from memlab.runtime.node.exits import WorkerExit
from memlab.runtime.node.store_service import StoreService
from memlab.runtime.node.workers import WorkerProcesses
from memlab.runtime.session import driver_gone, kill_point, remove_driver_files
from memlab.store import Arena, ObjectStore

log = logging.getLogger("memlab.node")

_ASK_TIMEOUT = 5.0  # how long a worker asked to retire may take to answer
_HOUSEKEEPING_PERIOD = 0.05


class NodeManager:
    """One node: its store, its worker pool and their processes (see the module docstring)."""

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
        self.lock = threading.RLock()  # guards the pool and the owners' connections
        self.pool = wp.WorkerPool(self.num_workers)
        self.stopping = False
        self.validation_failure: str | None = None  # the first periodic check that failed
        self._owners: dict[str, Connection] = {}  # the connection each lease requester used
        self._last_stats: dict[str, int] | None = None
        self.arena = Arena.create(config["arena_path"], config["capacity"])
        self.store = ObjectStore(
            self.arena, config["spill_dir"], emit=self.events.emit, node_id=self.node_id
        )
        kill_point("node_arena", self._driver_if_mine())
        self.processes = WorkerProcesses(self._worker_env(), secret, self._on_worker_exit)
        self.store_service = StoreService(
            self.node_id,
            self.session_dir,
            secret,
            self.store,
            self.arena,
            self._dispatch,
            self._on_close,
        )
        self.handlers = {
            **self.store_service.handlers(),
            "hello": self._on_hello,
            "lease": self._on_lease,
            "return_lease": self._on_return,
            "blocked": self._on_blocked,
            "unblocked": self._on_unblocked,
            "kill_worker": self._on_kill_worker,
            "shutdown": self._on_shutdown,
            "actor_lease": self._on_actor_lease,
            "pool": self._on_pool,
            "validate": self._on_validate,
        }
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

    def _worker_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            MEMLAB_SESSION_DIR=self.session_dir,
            MEMLAB_NODE=self.node_id,
            MEMLAB_ARENA=self.arena.path,
            MEMLAB_INLINE=str(self.config["inline_threshold"]),
            MEMLAB_NUM_WORKERS=str(self.config["total_workers"]),
            MEMLAB_DRIVER=self.config["driver"],
            MEMLAB_LINEAGE_BUDGET=str(self.config.get("lineage_budget", 1 << 30)),
            MEMLAB_EVENTS="1" if self.events.enabled else "0",
        )
        return env

    # -- life ----------------------------------------------------------------------------------

    def start(self) -> None:
        process_tree.become_subreaper()
        self._pool_event(wp.StartPool())
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

    def _stop_pool(self) -> bool:
        """Spawn and refill nothing more; True for the first caller."""
        with self.lock:
            first = not self.stopping
            self.stopping = True
            self.pool.handle(wp.StopPool())
        return first

    def stop_workers(self) -> None:
        """Kill every worker and whatever they started (a start-up that failed)."""
        self._stop_pool()
        self.processes.kill_all()
        process_tree.kill_descendants()

    def wait_for_driver_death(self) -> None:
        """Block on the lifeline from the driver; its end means shut down."""
        with contextlib.suppress(Exception):
            sys.stdin.buffer.read()
        self.shutdown(driver_died=True)

    def shutdown(self, driver_died: bool = False) -> None:
        """Kill the workers, remove the arena and exit; if the driver died (it can no longer
        remove the session directory), remove that too."""
        if not self._stop_pool():
            # Another thread is cleaning up and will end the process with os._exit; returning
            # here could let the main thread exit the interpreter and cut that cleanup short.
            threading.Event().wait()
        procs = self.processes.kill_all()
        deadline = time.monotonic() + 5
        self.processes.wait(procs, deadline)
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

    # -- the pool: events in, instructions carried out ----------------------------------------

    def _pool_event(self, event: wp.Event) -> None:
        with self.lock:
            out = self.pool.handle(event)
        if out:
            self._carry_out(out)

    def _carry_out(self, out: list[wp.Instruction]) -> None:
        """Do what the pool decided, in order, outside the lock; what that does feeds the pool
        again (a grant that could not be sent, a worker spawned)."""
        for ins in out:
            if isinstance(ins, wp.GrantLease):
                self._grant(ins)
            elif isinstance(ins, wp.RevokeLease):
                self._send_to(ins.holder, {"t": "revoke", "worker": ins.worker_id})
            elif isinstance(ins, wp.SpawnWorker):
                self._spawn(ins.actor)
            elif isinstance(ins, wp.ReportStarted):
                self.events.emit(
                    "worker.started",
                    worker_id=ins.worker_id,
                    node=self.node_id,
                    pid=self.processes.pid(ins.worker_id),
                )
            elif isinstance(ins, wp.ReportDeath):
                self._report_death(ins)
            elif isinstance(ins, wp.KillWorker):
                self.processes.kill(ins.worker_id)
            elif isinstance(ins, wp.FailActorLease):
                failed = {"t": "actor_start_failed", "lid": ins.lease_id, "reason": ins.reason}
                self._send_owner(ins.owner, failed)
            elif isinstance(ins, wp.AskToRetire):
                self._ask_to_retire(ins.worker_id)

    def _grant(self, ins: wp.GrantLease) -> None:
        msg: dict[str, Any] = {"t": "granted", "lid": ins.lease_id, "worker": ins.worker_id}
        if ins.actor:
            msg["actor"] = True
            self._send_owner(ins.owner, msg)
            return
        conn = self._owners.get(ins.owner)
        try:
            if conn is None or conn.closed:
                raise ConnectionClosedError(ins.owner, "closed")
            conn.send(msg)
        except ConnectionClosedError:
            self._pool_event(wp.GrantUndelivered(ins.worker_id))

    def _send_owner(self, owner: str, header: dict[str, Any]) -> None:
        conn = self._owners.get(owner)
        if conn is not None:
            with contextlib.suppress(ConnectionClosedError):
                conn.send(header)

    def _spawn(self, actor: wp.ActorLease | None) -> None:
        def registered(worker_id: str) -> None:
            self._pool_event(wp.WorkerSpawned(worker_id, actor))

        try:
            self.processes.spawn(registered)
        except BaseException:
            self._pool_event(wp.SpawnFailed(actor))
            raise

    def _on_worker_exit(self, worker_id: str, returncode: int) -> None:
        """A worker's reaper thread: the process and its group are gone."""
        self._pool_event(wp.WorkerExited(worker_id, returncode))

    def _report_death(self, ins: wp.ReportDeath) -> None:
        """Tell the store, the owners and the event stream that a worker is gone."""
        self.store.disconnect(ins.worker_id)
        self.store_service.drop_owned_by(ins.worker_id)
        end = WorkerExit.from_returncode(ins.exitcode, ins.retired)
        pid = self.processes.pid(ins.worker_id)
        info = {
            "worker": ins.worker_id,
            "pid": pid,
            "exitcode": end.exitcode,
            "signal": end.signal,
            "node": self.node_id,
            "cause": end.cause,
        }
        self.events.emit(
            "worker.died",
            worker_id=ins.worker_id,
            node=self.node_id,
            pid=pid,
            exitcode=end.exitcode,
            signal=end.signal,
            cause=end.cause,
        )
        self._broadcast({"t": "worker_died", **info})

    def _ask_to_retire(self, worker_id: str) -> None:
        """Ask the worker (blocking the housekeeping thread, as one question at a time)."""
        conn = next((c for c in self.listener.connections() if c.peer == worker_id), None)
        agreed = False
        if conn is not None:
            with contextlib.suppress(ConnectionClosedError, TimeoutError):
                reply, _ = conn.request({"t": "retire"}, timeout=_ASK_TIMEOUT)
                agreed = bool(reply.get("ok"))
        if agreed:
            self._pool_event(wp.RetireAgreed(worker_id))
        else:
            self._pool_event(wp.RetireRefused(worker_id, time.monotonic()))

    def _broadcast(self, header: dict[str, Any]) -> None:
        for conn in [*self.listener.connections(), self.driver]:
            with contextlib.suppress(ConnectionClosedError):
                conn.send(header)

    def _send_to(self, peer: str, header: dict[str, Any]) -> None:
        for conn in [*self.listener.connections(), self.driver]:
            if conn.peer == peer:
                with contextlib.suppress(ConnectionClosedError):
                    conn.send(header)
                return

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
            if self._owners.get(peer) is conn:
                del self._owners[peer]
            out = self.pool.handle(wp.OwnerGone(peer, time.monotonic()))
        self._carry_out(out)

    def _on_hello(self, conn: Connection, h: dict[str, Any]) -> None:
        conn.peer = h["proc"]
        if h.get("kind") == "worker":
            self._pool_event(wp.WorkerStarted(h["proc"], time.monotonic()))

    def _on_lease(self, conn: Connection, h: dict[str, Any]) -> None:
        owner = conn.peer or ""
        with self.lock:
            self._owners[owner] = conn
            out = self.pool.handle(wp.LeaseRequested(owner, h["lid"]))
        self._carry_out(out)

    def _on_return(self, conn: Connection, h: dict[str, Any]) -> None:
        self._pool_event(wp.LeaseReturned(conn.peer or "", h["worker"], time.monotonic()))

    def _on_actor_lease(self, conn: Connection, h: dict[str, Any]) -> None:
        """An owner creates an actor: it gets a worker of its own, outside the task pool."""
        owner = conn.peer or ""
        with self.lock:
            self._owners[owner] = conn
            out = self.pool.handle(wp.ActorLeaseRequested(owner, h["lid"]))
        self._carry_out(out)

    def _on_blocked(self, conn: Connection, h: dict[str, Any]) -> None:
        self._pool_event(wp.WorkerBlocked(conn.peer or ""))

    def _on_unblocked(self, conn: Connection, h: dict[str, Any]) -> None:
        self._pool_event(wp.WorkerUnblocked(conn.peer or ""))

    def _on_kill_worker(self, conn: Connection, h: dict[str, Any]) -> None:
        self.processes.kill(h["worker"])

    def _on_shutdown(self, conn: Connection, h: dict[str, Any]) -> None:
        threading.Thread(target=self.shutdown, daemon=True).start()

    def _on_pool(self, conn: Connection, h: dict[str, Any]) -> None:
        """The pool's figures (for tests and the curious)."""
        with self.lock:
            f = self.pool.figures()
        conn.reply(
            h,
            {
                "t": "pool",
                "size": f.size,
                "target": f.target,
                "idle": f.idle,
                "retired": f.retired,
                "refused": f.refused,
            },
        )

    # -- validation (tests) --------------------------------------------------------------------

    def validate(self) -> None:
        with self.lock:
            self.pool.validate()

    def _on_validate(self, conn: Connection, h: dict[str, Any]) -> None:
        """Check the pool's invariants for a test (``memlab.testing.validate_session``)."""
        try:
            self.validate()
            error = self.validation_failure or ""
        except AssertionError as exc:
            error = f"{self.node_id}: {exc}"
        conn.reply(h, {"t": "validated", "error": error, "entries": 0, "owned": 0})

    def _validate_in_background(self) -> None:
        try:
            self.validate()
        except AssertionError as exc:
            if self.validation_failure is None:
                self.validation_failure = f"{self.node_id} (periodic check): {exc}"
            log.error("%s: worker pool invariant broken: %s", self.node_id, exc)

    # -- housekeeping --------------------------------------------------------------------------

    def _housekeeping(self) -> None:
        validate_every = float(os.environ.get(VALIDATE_ENV, "0") or 0)
        next_validation = time.monotonic() + validate_every
        while not self.stopping:
            time.sleep(_HOUSEKEEPING_PERIOD)  # a steady tick for batching events, not a wait
            keep = self.processes.pids_to_keep()
            if keep is not None:  # orphans re-parented to us must not stay zombies
                process_tree.reap_children(keep)
            with contextlib.suppress(Exception):
                self._pool_event(wp.Tick(time.monotonic()))
            if validate_every and time.monotonic() >= next_validation:
                next_validation = time.monotonic() + validate_every
                self._validate_in_background()
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
