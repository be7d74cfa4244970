"""The core worker: what every runtime process (driver or worker) runs to own and borrow objects.

``CoreWorker`` is a facade. It builds this process's services on one lock, one reference table
and one memory store, wires them through the narrow interfaces of ``ports``, and keeps the
methods the other layers use (``put``, ``get``, ``wait``, ``submitter``, ``table``, ``close``,
``validate``, ...)::

    peers          connections, hello/close, the handler registry, send-after-unlock (peers.py)
    refcounting    carries out the table's instructions; batched deletes/releases (refcounting.py)
    getter         get, wait, fetches of borrowed values (getter.py)
    owner_service  add_borrower, release_borrow, get_object, object_value, object_missing
    failures       deaths of processes and nodes: fate-sharing, promotion, rebuilds (failures.py)
    housekeeping   the thread that flushes batches, events and idle leases (housekeeping.py)
    submitter      tasks, leases, pushes, replies; its ``failures``: worker deaths, cancels
    recovery       lineage and rebuilds; actors: the actor lifecycle; output: task prints

Services register their own message handlers with ``peers``. A worker adds its executor's
behaviour through ``set_worker_hooks``; the store client and the list of alive nodes come in
through ``attach_store`` and ``set_nodes``.

Threads::

    user / task thread ── put, get, submit ──► lock ─► table, memory store ─► send (after unlock)
    reader thread per connection ── messages ──► handlers (never block on the network)
    housekeeping thread (every 10 ms; 100 ms when idle) ── batched releases, deletes, unpins,
                                          events, idle leases (``housekeeping``)

Ordering: every message to a given peer goes through one connection (``conn_to``), so a task's
reply always reaches its owner before the releases that follow it (the handoff rule, DESIGN §3).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from memlab.core.events import EventBuffer
from memlab.core.ownership import ReferenceTable
from memlab.exceptions import (
    ConnectionClosedError,
    ObjectStoreFullError,
    OwnerDiedError,
)
from memlab.ids import IdGenerator, object_id
from memlab.protocol.transport import Connection
from memlab.runtime import context
from memlab.runtime.coreworker.failures import FailureHandling
from memlab.runtime.coreworker.getter import Getter
from memlab.runtime.coreworker.housekeeping import Housekeeping
from memlab.runtime.coreworker.memory_store import MemoryStore
from memlab.runtime.coreworker.object_ref import ObjectRef
from memlab.runtime.coreworker.output_channel import OutputChannel
from memlab.runtime.coreworker.owner_service import OwnerService
from memlab.runtime.coreworker.peers import Peers
from memlab.runtime.coreworker.ports import Handler, PeerLostListener, WorkerHooks
from memlab.runtime.coreworker.recovery import DEFAULT_LINEAGE_BUDGET
from memlab.runtime.coreworker.refcounting import RefCounting
from memlab.runtime.coreworker.store_client import StoreClient
from memlab.runtime.coreworker.task_spec import call_site
from memlab.serialization import serialize

log = logging.getLogger("memlab.runtime")

DEFAULT_INLINE_THRESHOLD = 100 * 1024
# How long a put into a full store waits for room that releases already in flight will make
# (other processes batch theirs for up to a housekeeping round, 10-100 ms).
PUT_ROOM_WAIT = 1.0


class CoreWorker:
    """Ownership, values and messaging of one runtime process."""

    def __init__(
        self,
        proc: str,
        kind: str,
        session_dir: str,
        secret: bytes,
        node_id: str,
        events: EventBuffer,
        inline_threshold: int = DEFAULT_INLINE_THRESHOLD,
        driver: str = "driver",
        lineage_budget: int = DEFAULT_LINEAGE_BUDGET,
        max_leases: int = 1,
    ) -> None:
        self.proc = proc
        self.kind = kind
        self.session_dir = session_dir
        self.secret = secret
        self.node_id = node_id
        self.driver = driver
        self.events = events
        self.inline_threshold = inline_threshold
        self.lock = threading.RLock()
        self.table = ReferenceTable(proc)
        self.mstore = MemoryStore()
        self.ids = IdGenerator()
        self.nodes: list[str] = [node_id]  # alive nodes, in the order they joined (in place)
        self.store: StoreClient | None = None
        self.hooks = WorkerHooks()

        self.peers = peers = Peers(proc, kind, node_id, session_dir, secret)
        self.dead = peers.dead
        # Bound once: the hot path calls these as methods of the core.
        self.conn_to = peers.conn_to
        self.send_later = peers.send_later
        self.drain_outbox = peers.drain_outbox
        self.refcounting = refs = RefCounting(self.mstore, events)
        self._apply = refs.apply

        from memlab.runtime.coreworker.actors import ActorManager
        from memlab.runtime.coreworker.recovery import Recovery
        from memlab.runtime.coreworker.submitter import Submitter

        self.recovery = Recovery(self, lineage_budget)
        self.submitter = Submitter(self, max_leases)
        self.actors = ActorManager(self)
        self.output = OutputChannel(self)  # what tasks print, on its way to their owners
        self.getter = getter = Getter(
            proc,
            kind == "worker",
            self.lock,
            self.table,
            self.mstore,
            peers,
            self.recovery,
            self.submitter,
        )
        self.get = getter.get
        self.wait = getter.wait
        self.ensure_fetch = getter.ensure_fetch
        self.mark_missing = getter.mark_missing
        refs.connect(getter, self.recovery, self.actors)
        self.owner_service = OwnerService(
            proc,
            self.lock,
            self.table,
            self.mstore,
            peers,
            refs,
            self.recovery,
            self.submitter,
        )
        self.failures = FailureHandling(
            self.lock,
            self.table,
            self.mstore,
            events,
            self.nodes,
            peers,
            refs,
            getter,
            self.recovery,
            self.submitter,
            self.actors,
        )
        self.node_died = self.failures.node_died
        self.process_died = self.failures.process_died
        self.housekeeping = Housekeeping(
            proc, self.lock, self.table, events, peers, refs, self.submitter, self.validate
        )
        self.flush = self.housekeeping.flush
        self.flush_object_events = self.housekeeping.flush_object_events
        peers.register("validate", self._on_validate)
        peers.listen()  # every service has registered its handlers
        self.housekeeping.start()
        context.set_core(self)

    # -- wiring from the layers above ----------------------------------------------------------

    def register(self, kind: str, handler: Handler, *, replace: bool = False) -> None:
        """Route messages of ``kind`` to ``handler`` (``Peers.register``)."""
        self.peers.register(kind, handler, replace=replace)

    def on_peer_lost(self, listener: PeerLostListener) -> None:
        """Call ``listener(peer, conn)`` when a connection to a peer closes."""
        self.peers.on_peer_lost(listener)

    def set_worker_hooks(self, hooks: WorkerHooks) -> None:
        """A worker's executor: what housekeeping and blocked gets call into."""
        self.hooks = hooks
        self.getter.use_hooks(hooks)
        self.housekeeping.use_hooks(hooks)

    def attach_store(self, store: StoreClient) -> None:
        """The client of this node's object store (once the node is up)."""
        self.store = store
        self.getter.attach_store(store)
        self.housekeeping.attach_store(store)

    def set_nodes(self, alive: list[str], max_leases: int) -> None:
        """The driver's own view of the alive nodes, and how many workers they have."""
        self.nodes[:] = alive
        self.submitter.max_leases = max_leases

    @property
    def validation_failure(self) -> str | None:
        """The first periodic invariant check that failed here (``MEMLAB_VALIDATE_EVERY``)."""
        return self.housekeeping.validation_failure

    def address(self, proc: str) -> str:
        return self.peers.address(proc)

    # -- refs ----------------------------------------------------------------------------------

    def new_owned_ref(self, oid: bytes) -> ObjectRef:
        return ObjectRef(oid, self.proc, self)

    def ref_from_wire(self, oid: bytes, owner: str) -> ObjectRef:
        """A ref was unpickled here: count it and, if new to us, borrow it from its owner."""
        with self.lock:
            needs_registration, ins = self.table.add_local(oid, owner)
            self._apply(ins)
        ref: ObjectRef[Any] = ObjectRef(oid, owner, self)
        if needs_registration:
            try:
                reply, _ = self.conn_to(owner).request(
                    {"t": "add_borrower", "oid": oid, "borrower": self.proc}, timeout=30
                )
            except (ConnectionClosedError, TimeoutError):
                reply = {"ok": False}
            if not reply.get("ok"):
                with self.lock:
                    self.mstore.put_error(oid, OwnerDiedError(oid.hex(), owner))
        return ref

    def remove_local_ref(self, oid: bytes) -> None:
        with self.lock:
            ins = self.table.remove_local(oid)
            if ins:
                self._apply(ins)

    # -- put / get -----------------------------------------------------------------------------

    def put(self, value: Any) -> ObjectRef:
        sv = serialize(value)
        contained = sv.contained_refs
        oid = object_id(self.ids.task_id(), 0)
        size = sv.total_size
        node = None
        data = None
        if size <= self.inline_threshold:
            data = sv.to_bytes()
        else:
            self._write_put(oid, sv)
            node = self.node_id
        site = call_site()
        with self.lock:
            self._apply(self.table.create_owned(oid, call_site=site, state="ready"))
            if contained:
                inner: list[bytes] = [r.binary for r in contained]  # type: ignore[attr-defined]
                self._apply(self.table.set_contains(oid, inner))
            self.table.set_ready(oid, node, size)
            if data is not None:
                self.mstore.put_inline(oid, data)
            else:
                self.mstore.put_stored(oid, node, size)  # type: ignore[arg-type]
        ev = self.events
        if ev.enabled:
            ev.record("object.created", oid, self.proc, None, site, size, "ready", node)
        return ObjectRef(oid, self.proc, self)

    def _write_put(self, oid: bytes, sv: Any) -> None:
        """Write a ``put`` value into this node's store. When the store is full, the frees and
        view releases already decided (by this process: batched until the next housekeeping
        round; by workers: pins of arguments their tasks just read) are what would make room, so
        send ours at once and wait a bounded time for the others before giving up."""
        store = self.store
        assert store is not None
        try:
            store.write(oid, sv, self.proc)
        except ObjectStoreFullError as exc:
            if exc.requested > exc.capacity:
                raise
            self.flush_releases()  # on the node's connection, so they go before the retry
            store.write(oid, sv, self.proc, wait=PUT_ROOM_WAIT)

    def flush_releases(self) -> None:
        """Send the batched store deletes and view releases now (a ``put`` needs the room)."""
        self.housekeeping.flush_deletes()

    def close(self) -> None:
        self.housekeeping.stop()
        try:
            self.flush()
        except Exception:
            pass
        if context.current_core() is self:
            context.set_core(None)
        self.peers.close()
        if self.store is not None:
            self.store.close()

    # -- validation (tests) --------------------------------------------------------------------

    def _on_validate(self, conn: Connection, h: dict[str, Any], payload: bytes) -> None:
        """Check this process's invariants for a test (``memlab.testing.validate_session``)
        and say what its table still holds."""
        try:
            self.validate()
            error = self.validation_failure or ""
        except AssertionError as exc:
            error = f"{self.proc}: {exc}"
        with self.lock:
            owned = sum(1 for e in self.table.entries.values() if e.owned)
            entries = len(self.table.entries)
        conn.reply(h, {"t": "validated", "error": error, "entries": entries, "owned": owned})

    def validate(self) -> None:
        with self.lock:
            self.table.validate()
            self.recovery.validate()
            for oid, entry in self.table.entries.items():
                # An entry kept only for lineage has no value, so no slot, until a rebuild.
                if entry.owned and entry.state != "failed" and not entry.value_freed:
                    assert oid in self.mstore.slots, f"owned {oid.hex()} has no slot"
