"""Task submission: dependency resolution, worker leases, pushing tasks, replies and retries.

Owns this process's submitted tasks (their specs are the lineage of their returns), the queue of
tasks whose dependencies are ready, and the worker leases it holds. Following Ray, an owner
leases a worker from its node manager and pushes tasks straight to it, up to ``MAX_IN_FLIGHT``
at a time, keeping the lease while it has work and returning it when idle for ``LEASE_LINGER``
seconds or when the node manager asks for it back (another owner waits). A second task goes to
a busy worker (pipelining) only when no other worker can be had and the running task is young;
one left behind a task that turned out long is stolen back when another lease idles.

Life of a task::

    submit ─► waiting on deps ─► queued ─► pushed to a leased worker ─► done / failed
                                   ▲                 │ worker died, or retryable error
                                   └──── retried ◄───┘ (while attempts remain)
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from memlab.exceptions import (
    ConnectionClosedError,
    ObjectLostError,
    TaskCancelledError,
    TaskError,
)
from memlab.ids import object_id
from memlab.protocol.errors import loads_error
from memlab.protocol.frames import MAX_PAYLOAD_BYTES
from memlab.runtime.coreworker.memory_store import FAILED, PENDING, Slot, run_wakeups
from memlab.runtime.coreworker.object_ref import ObjectRef
from memlab.runtime.coreworker.pipelining import free_lease, to_steal_from
from memlab.runtime.coreworker.placement import AFFINITY, PlacedTasks, unschedulable
from memlab.runtime.coreworker.task_failures import TaskFailures
from memlab.runtime.coreworker.task_spec import TaskSpec

if TYPE_CHECKING:
    from memlab.protocol.transport import Connection
    from memlab.runtime.coreworker.core_worker import CoreWorker

LEASE_LINGER = 0.02


class Lease:
    __slots__ = ("blocked", "idle_since", "inflight", "node", "revoked", "stealing", "worker")

    def __init__(self, worker: str, node: str) -> None:
        self.worker = worker
        self.node = node
        self.inflight: dict[bytes, TaskSpec] = {}
        self.idle_since = time.monotonic()
        self.revoked = False
        self.blocked = False  # its task waits in get: queue nothing behind it
        self.stealing = False  # asked to give back what waits behind its running task


def _ran(h: dict[str, Any]) -> dict[str, Any]:
    """A reply's start time and node, sent when the worker did not announce the start itself."""
    return {"started_at": h["st"], "node": h["nd"]} if "st" in h else {}


class Submitter:
    """One owner's tasks: their dependencies, leases, pushes, replies and retries.

    Built by ``CoreWorker`` (``core.submitter``); worker deaths and cancels are its
    ``failures`` (``task_failures.TaskFailures``). The actor manager and recovery drive it
    through ``resolve``, ``fail``, ``pump`` and ``push_all``.
    """

    def __init__(self, core: CoreWorker, max_leases: int = 1) -> None:
        self.core = core
        # Bound once: these run for every task.
        self._apply = core.refcounting.apply
        self._refs = core.refcounting
        self._outbox = core.peers.outbox
        self.tasks: dict[bytes, TaskSpec] = {}
        self.queue: deque[TaskSpec] = deque()
        self.leases: dict[str, Lease] = {}
        self.lease_requests = 0
        self.requests_by_node: dict[str, int] = {}
        self._next_node = 0
        self.max_leases = max_leases
        self.functions: dict[bytes, bytes] = {}
        # Code whose bytes hold ObjectRefs: workers unpickle it per task rather than cache it,
        # so a worker's borrow of a captured ref ends with the task that used it.
        self.functions_with_refs: set[bytes] = set()
        self.shipped: dict[str, set[bytes]] = {}
        self._lids = itertools.count(1)
        peers = core.peers
        peers.register("done", self._on_done)
        peers.register("granted", self._on_granted)
        peers.register("revoke", self._on_revoke)
        self.failures = TaskFailures(self)
        self.placed = PlacedTasks()  # ready tasks bound to a node (placement.py)
        self._placed_wake: list[Any] = []  # getters of placed tasks that failed, woken unlocked

    # -- submission ----------------------------------------------------------------------------

    def submit(self, spec: TaskSpec, owners: list[ObjectRef]) -> list[ObjectRef]:
        if spec.node_affinity is None:
            spec.node_affinity = AFFINITY.get()
        return self.register(spec, queue=True)

    def register(self, spec: TaskSpec, queue: bool = False) -> list[ObjectRef]:
        """Make the task's results owned refs and count what it holds; ``queue`` also
        resolves its arguments and runs it (actor work is sent by the actor manager)."""
        core = self.core
        ev = core.events
        wake: list[Any] = []
        to_push: list[tuple[str, TaskSpec]] = []
        spec.output = core.output.route(spec.task_id)
        with core.lock:
            table = core.table
            for oid in spec.returns:
                self._apply(table.create_owned(oid, call_site=spec.call_site, lineage=spec))
                core.mstore.add_pending(oid)
            if spec.held:
                self._apply(table.add_submitted(spec.held))
            self.tasks[spec.task_id] = spec
            if queue:
                wake = self.resolve(spec)
                to_push = self.pump()
        run_wakeups(wake)
        if ev.enabled:
            # Announces the return objects too (events.py: no object.created per return).
            # Held: if the task ends before the next flush, its end event carries it.
            ev.hold(
                spec.task_id,
                "task.submitted",
                spec.task_id,
                spec.name,
                core.proc,
                tuple(spec.returns),
                tuple([d for d, _ in spec.deps]) if spec.deps else (),
                spec.call_site,
            )
        self.push_all(to_push)
        return [ObjectRef(oid, core.proc, core) for oid in spec.returns]

    def resolve(self, spec: TaskSpec) -> list[Any]:
        """Wait for the task's arguments, then queue it (lock held); returns wake-ups. A task
        being rebuilt (``Recovery``) comes through here too."""
        spec.resolved = [None] * len(spec.deps)
        spec.remaining = 0
        for i, (oid, owner) in enumerate(spec.deps):
            slot = self.core.ensure_fetch(oid, owner)
            if slot.state != PENDING:
                spec.resolved[i] = slot
            else:
                spec.remaining += 1
                self.core.mstore.when_done(oid, self._dep_callback(spec, i))
        return self._ready(spec) if spec.remaining == 0 else []

    def _dep_callback(self, spec: TaskSpec, i: int) -> Any:
        def done(slot: Slot) -> None:
            wake: list[Any] = []
            with self.core.lock:
                if self.tasks.get(spec.task_id) is not spec:
                    return  # cancelled or failed while it waited for this argument
                spec.resolved[i] = slot
                spec.remaining -= 1
                if spec.remaining == 0 and not spec.cancelled:
                    wake = self._ready(spec)
                to_push = self.pump()
            run_wakeups(wake)
            self.push_all(to_push)

        return done

    def _ready(self, spec: TaskSpec) -> list[Any]:
        for slot in spec.resolved:
            if slot.state == FAILED:
                return self.fail(spec, slot.error)  # a failed argument fails the task unrun
        if self._rewait(spec):
            return []
        self.queue.append(spec)
        return []

    def _rewait(self, spec: TaskSpec) -> bool:
        """An argument resolved earlier was lost since (it is being rebuilt): wait for it
        again. True if the task must wait."""
        for i, ((oid, _), slot) in enumerate(zip(spec.deps, spec.resolved)):
            if slot is not None and slot.state == PENDING:
                spec.remaining += 1
                self.core.mstore.when_done(oid, self._dep_callback(spec, i))
        return spec.remaining > 0

    # -- leases and pushing --------------------------------------------------------------------

    def add_function(self, fn_hash: bytes, data: bytes, holds_refs: bool) -> None:
        """Code (a function or actor class) that tasks of this owner may run."""
        self.functions[fn_hash] = data
        if holds_refs:
            self.functions_with_refs.add(fn_hash)

    def pump(self) -> list[tuple[str, TaskSpec]]:
        """Give queued tasks to free leases and ask for more leases (lock held); returns the
        pushes for ``push_all`` to send after the lock is released."""
        to_push: list[tuple[str, TaskSpec]] = []
        if self.placed.held:
            self._pump_placed(to_push)
        queue = self.queue
        while queue:
            if queue[0].node_affinity is not None:
                self.placed.hold(queue.popleft())
                continue
            lease = self._free_lease()
            if lease is None:
                break
            spec = queue.popleft()
            if spec.cancelled or (spec.deps and self._rewait(spec)):
                continue
            lease.inflight[spec.task_id] = spec
            spec.worker = lease.worker
            spec.pushed_at = time.monotonic()
            to_push.append((lease.worker, spec))
        # A leased worker blocked in get frees its slot (its node starts another worker), so
        # it does not count against this owner's share either.
        blocked = sum(1 for lease in self.leases.values() if lease.blocked)
        wanted = min(len(queue), self.max_leases + blocked - len(self.leases)) - self.lease_requests
        nodes = self.core.nodes
        for _ in range(max(0, wanted)):
            if not nodes:
                break
            self._request_lease(self._pick_node(nodes))
        if self.placed.held:
            self._pump_placed(to_push)
        return to_push

    def _request_lease(self, node: str) -> None:
        self.lease_requests += 1
        self.requests_by_node[node] = self.requests_by_node.get(node, 0) + 1
        self.core.send_later(node, {"t": "lease", "lid": next(self._lids)})

    def _pump_placed(self, to_push: list[tuple[str, TaskSpec]]) -> None:
        """Push tasks bound to a node to leases there, ask for leases, fail the tasks whose
        node is gone (lock held; see placement.py)."""

        def take(lease: Lease, spec: TaskSpec) -> None:
            if spec.deps and self._rewait(spec):
                return
            lease.inflight[spec.task_id] = spec
            spec.worker = lease.worker
            spec.pushed_at = time.monotonic()
            to_push.append((lease.worker, spec))

        step = self.placed.pump(
            self.leases.values(),
            self.core.nodes,
            self.requests_by_node,
            self.max_leases,
            time.monotonic(),
            take,
        )
        for node in step.requests:
            self._request_lease(node)
        for spec, node in step.unschedulable:
            self._placed_wake += self.fail(spec, unschedulable(spec, node, self.core.dead))
        for spec in step.unpinned:
            spec.node_affinity = None  # soft: its node is gone, it runs anywhere
            self.queue.append(spec)

    def _pick_node(self, nodes: list[str]) -> str:
        """The alive node where this owner holds and awaits the fewest leases (round robin
        among equals): leases spread over the nodes, each of which has its own workers."""
        held: dict[str, int] = {}
        for lease in self.leases.values():
            held[lease.node] = held.get(lease.node, 0) + 1
        start = self._next_node
        self._next_node += 1
        order = [nodes[(start + k) % len(nodes)] for k in range(len(nodes))]
        return min(order, key=lambda n: held.get(n, 0) + self.requests_by_node.get(n, 0))

    def _free_lease(self) -> Lease | None:
        """The lease for the next queued task, or None to keep it queued (see pipelining)."""
        return free_lease(
            self.leases.values(), len(self.leases) < self.max_leases, time.monotonic()
        )

    def _steal_back(self, now: float) -> None:
        """Take back tasks pipelined behind a long one, for an idle lease (lock held)."""
        for worker in to_steal_from(self.leases, len(self.leases) < self.max_leases, now):
            self.core.send_later(worker, {"t": "steal"})

    def push_all(self, to_push: list[tuple[str, TaskSpec]]) -> None:
        """Send what the lock holder queued, then the pushes ``pump`` decided (lock released)."""
        if self._placed_wake:
            wake, self._placed_wake = self._placed_wake, []
            run_wakeups(wake)
        if self._outbox:
            self.core.drain_outbox()
        for worker, spec in to_push:
            self._push(worker, spec)

    def _push(self, worker: str, spec: TaskSpec) -> None:
        deps: list[Any] = []
        parts: list[bytes] = []
        header: dict[str, Any] = {
            "t": "push",
            "tid": spec.task_id,
            "fn": spec.fn_hash,
            "name": spec.name,
            "nret": spec.num_returns,
            "att": spec.attempt,
            "deps": deps,
        }
        if spec.output.__class__ is str:  # the front end's tag comes back with its output
            header["out"] = spec.output
        if spec.actor is not None:
            aid, kind, detail = spec.actor
            header["aid"] = aid
            if kind == "create":
                header.update(t="actor_create", **detail)
            else:
                header.update(t="actor_call", method=detail)
        shipped = self.shipped.setdefault(worker, set())
        if spec.fn_hash and spec.fn_hash not in shipped:
            fn_bytes = self.functions[spec.fn_hash]
            header["fnlen"] = len(fn_bytes)
            if spec.fn_hash in self.functions_with_refs:
                header["fnrefs"] = True
            parts.append(fn_bytes)
            shipped.add(spec.fn_hash)
        for (oid, _), slot in zip(spec.deps, spec.resolved):
            if slot.data is not None:
                deps.append(len(slot.data))
                parts.append(slot.data)
            else:
                deps.append([oid, slot.node])
        parts.append(spec.args)
        if sum(map(len, parts)) > MAX_PAYLOAD_BYTES:
            self._too_large(worker, spec, sum(map(len, parts)))
            return
        try:
            self.core.conn_to(worker).send(header, b"".join(parts) if len(parts) > 1 else parts[0])
        except ConnectionClosedError:
            self.failures.worker_lost(worker, None)
            if spec.actor is not None:
                self.core.actors.lost(worker)
            return

    def _too_large(self, worker: str, spec: TaskSpec, size: int) -> None:
        """Its inline dependencies add up past what a message may carry: fail it, clearly."""
        error = ValueError(
            f"task {spec.name}() would travel as a {size / 2**20:.0f} MiB message (its function, "
            f"arguments and {len(spec.deps)} small dependencies, each inline), over the "
            f"{MAX_PAYLOAD_BYTES >> 20} MiB limit; pass the refs inside one list argument "
            "(the task then fetches each from its owner) or in several tasks"
        )
        with self.core.lock:
            lease = self.leases.get(worker)
            if lease is not None:
                lease.inflight.pop(spec.task_id, None)
            self.shipped.get(worker, set()).discard(spec.fn_hash)
            wake = self.fail(spec, error)
            to_push = self.pump()
        run_wakeups(wake)
        self.push_all(to_push)

    def _on_granted(self, conn: Connection, h: dict[str, Any], payload: bytes) -> None:
        if h.get("actor"):
            self.core.actors.on_granted(conn, h)
            return
        worker = h["worker"]
        node = conn.peer or self.core.node_id
        with self.core.lock:
            if self.requests_by_node.get(node, 0) > 0:
                self.requests_by_node[node] -= 1
                self.lease_requests -= 1
            # A worker granted again while we hold it keeps its lease, and what is in flight.
            lease = self.leases.get(worker) or Lease(worker, node)
            self.leases[worker] = lease
            to_push = self.pump()
            if not lease.inflight:
                self._return_lease(lease)
        self.push_all(to_push)

    def _on_revoke(self, conn: Connection, h: dict[str, Any], payload: bytes) -> None:
        with self.core.lock:
            lease = self.leases.get(h["worker"])
            if lease is not None:
                lease.revoked = True
                if not lease.inflight:
                    self._return_lease(lease)
        self.core.drain_outbox()

    def _return_lease(self, lease: Lease) -> None:
        self.leases.pop(lease.worker, None)
        self.core.send_later(lease.node, {"t": "return_lease", "worker": lease.worker})

    # -- replies -------------------------------------------------------------------------------

    def _on_done(self, conn: Connection, h: dict[str, Any], payload: bytes) -> None:
        core = self.core
        tid = h["tid"]
        worker = conn.peer or ""
        wake: list[Any] = []
        with core.lock:
            lease = self.leases.get(worker)
            if lease is not None:
                lease.inflight.pop(tid, None)
                lease.blocked = (
                    bool(h.get("bounce")) and not h.get("stolen") and bool(lease.inflight)
                )
                if not lease.inflight:
                    lease.idle_since = time.monotonic()
                    if lease.revoked:
                        self._return_lease(lease)
            spec = self.tasks.get(tid)
            if spec is None or spec.worker != worker or spec.attempt != h["att"]:
                self._drop_stale_results(h, worker)
            elif (h.get("need_fn") or h.get("bounce")) and spec.cancelled:
                # Cancelled while on its way to a worker that handed it back unrun: it must
                # fail now, or it would wait in the queue forever (the pump skips it).
                wake += self.fail(spec, TaskCancelledError(spec.name, tid.hex()), worker)
            elif h.get("need_fn") or h.get("bounce"):
                if h.get("need_fn"):
                    self.shipped.get(worker, set()).discard(spec.fn_hash)
                spec.worker = None  # not run: send it again, to a worker that is free
                self.queue.appendleft(spec)
            elif "err" in h:
                error: BaseException | None = loads_error(payload)
                if spec.cancelled:
                    error = TaskCancelledError(spec.name, tid.hex())
                if type(error) is ObjectLostError and not spec.cancelled:
                    rerun = core.recovery.argument_lost(spec, error)
                    if rerun is not None:
                        wake += rerun
                        error = None
                if error is None:
                    pass
                elif (
                    spec.retry_exceptions
                    and isinstance(error, TaskError)
                    and spec.may_retry()
                    and not spec.cancelled
                ):
                    self.retry(spec, f"the task raised {type(error.cause).__name__}")
                else:
                    wake += self.fail(spec, error, worker, _ran(h))
            else:
                wake += self._finish(spec, h, payload, worker)
            if worker == core.proc and "rets" in h:
                self._unpin_self_lent(h["rets"])
            to_push = self.pump()
        run_wakeups(wake)
        self.push_all(to_push)

    def _unpin_self_lent(self, rets: list[Any]) -> None:
        """A reply from this very process: its executor pinned the refs inside the results
        (``Executor._lend``) until now, when the results' entries hold them."""
        table = self.core.table
        for ret in rets:
            for inner, _ in ret[2]:
                self._apply(table.remove_local(inner))

    def _finish(self, spec: TaskSpec, h: dict[str, Any], payload: bytes, worker: str) -> list[Any]:
        core = self.core
        table = core.table
        ev = core.events
        wake: list[Any] = []
        results: list[tuple[bytes, int, str | None]] = []
        pos = 0
        for oid, ret in zip(spec.returns, h["rets"]):
            kind, size, contained = ret[0], ret[1], ret[2]
            inners = [inner for inner, _ in contained]
            for inner, owner in contained:
                # The executor registered us with the owner, unless we own it or ran it.
                self._apply(table.add_borrowed(inner, owner, None, registered=worker != core.proc))
            entry = table.get(oid)
            if entry is None or (entry.value_freed and not entry.in_use()):
                # Every ref to the result is gone (or it was rebuilt only as an argument
                # that is no longer needed): drop it at once.
                if kind == "s":
                    self._refs.queue_delete(ret[3], oid)
                for inner in inners:
                    self._apply(table.release_if_unused(inner))
                pos += size if kind == "i" else 0
                continue
            if inners:
                self._apply(table.set_contains(oid, inners))
            if kind == "i":
                wake += core.mstore.put_inline(oid, payload[pos : pos + size])
                pos += size
                node = None
            else:
                node = ret[3]
                wake += core.mstore.put_stored(oid, node, size, worker)
            table.set_ready(oid, node, size)
            if ev.enabled:
                results.append((oid, size, node))
                if spec.rebuilding:
                    ev.emit("object.reconstructed", object_id=oid.hex(), task_id=spec.task_id.hex())
        if ev.enabled:
            # Carries the results' readiness (events.py: no object.ready per return), and the
            # start if the worker did not announce it.
            ev.record(
                "task.finished",
                spec.task_id,
                worker,
                spec.attempt,
                tuple(results),
                h.get("st"),
                h.get("nd"),
                ev.take(spec.task_id),
            )
        spec.rebuilding = False
        self.core.recovery.task_finished(spec)
        self._complete(spec)
        return wake

    def fail(
        self,
        spec: TaskSpec,
        error: BaseException | None,
        worker: str | None = None,
        ran: dict[str, Any] | None = None,
    ) -> list[Any]:
        """The task failed with ``error``: its returns hold the error (lock held); returns
        wake-ups. ``ran``: when and where it started, if its worker did not announce it."""
        core = self.core
        wake: list[Any] = []
        for oid in spec.returns:
            if core.table.get(oid) is not None:
                core.table.set_failed(oid)
                wake += core.mstore.put_error(oid, error)  # type: ignore[arg-type]
            for node in core.nodes:  # a copy the worker may have written
                self._refs.queue_delete(node, oid)
        if spec.actor is not None and spec.actor[1] == "create":
            core.actors.creation_failed(spec, error)
        ev = core.events
        if ev.enabled:
            ev.release(spec.task_id)  # its submission goes first
            kind = "task.cancelled" if isinstance(error, TaskCancelledError) else "task.failed"
            ev.emit(
                kind,
                task_id=spec.task_id.hex(),
                worker=worker,
                attempt=spec.attempt,
                error=f"{type(error).__name__}: {error}"[:500],
                **(ran or {}),
            )
            for oid in spec.returns:
                ev.emit("object.failed", object_id=oid.hex(), error=type(error).__name__)
        self._complete(spec)
        return wake

    def _complete(self, spec: TaskSpec) -> None:
        self.tasks.pop(spec.task_id, None)
        if spec.actor is not None:
            self.core.actors.done(spec)
        spec.resolved = []
        if spec.held:
            self._apply(self.core.table.remove_submitted(spec.held))

    def retry(self, spec: TaskSpec, reason: str) -> None:
        """Queue the task for another attempt (lock held)."""
        spec.attempt += 1
        spec.worker = None
        self.queue.append(spec)
        ev = self.core.events
        if ev.enabled:
            ev.release(spec.task_id)  # its submission goes first
            ev.emit("task.retried", task_id=spec.task_id.hex(), attempt=spec.attempt, reason=reason)

    def _drop_stale_results(self, h: dict[str, Any], worker: str) -> None:
        """A reply to an attempt we gave up on: free what it stored, release what it lent us."""
        core = self.core
        for i, ret in enumerate(h.get("rets", ())):
            if ret[0] == "s":
                self._refs.queue_delete(ret[3], object_id(h["tid"], i))
            if worker != core.proc:  # its executor registered us as a borrower of these
                for inner, owner in ret[2]:
                    if owner != core.proc:
                        self._refs.queue_release(owner, inner, 1)

    # -- worker deaths and cancels (``failures``) ----------------------------------------------

    def after_node_died(self, node: str) -> None:
        self.failures.after_node_died(node)

    def on_worker_died(self, worker: str, info: dict[str, Any]) -> None:
        self.failures.on_worker_died(worker, info)

    def forget_results(self, worker: str, specs: list[TaskSpec]) -> None:
        self.failures.forget_results(worker, specs)

    def cancel(self, oid: bytes, force: bool) -> None:
        self.failures.cancel(oid, force)

    # -- housekeeping --------------------------------------------------------------------------

    def kick(self) -> None:
        """Push what became runnable outside a message handler (rebuilds, node changes)."""
        with self.core.lock:
            to_push = self.pump()
        self.push_all(to_push)

    def idle(self) -> bool:
        """No task of this owner is queued, in flight or awaiting crash information, and no
        lease is held or asked for."""
        return not (
            self.tasks
            or self.queue
            or self.leases
            or self.lease_requests
            or self.failures.awaiting_crash_info
        )

    def housekeeping(self) -> None:
        now = time.monotonic()
        wake: list[Any] = []
        with self.core.lock:
            if not self.queue:
                for lease in list(self.leases.values()):
                    if not lease.inflight and now - lease.idle_since > LEASE_LINGER:
                        self._return_lease(lease)
            self._steal_back(now)
            wake += self.failures.expire(now)
            to_push = self.pump()
        run_wakeups(wake)
        self.push_all(to_push)
