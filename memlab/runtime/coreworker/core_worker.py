"""The core worker: what every runtime process (driver or worker) runs to own and borrow objects.

Owns this process's reference table, its memory store, its connections to peers and the
housekeeping thread. Submitting tasks lives in ``submitter``, running them in ``executor``.

Threads::

    user / task thread ── put, get, submit ──► lock ─► table, memory store ─► send (after unlock)
    reader thread per connection ── messages ──► handlers (never block on the network)
    housekeeping thread (every 10 ms; 100 ms when idle) ── batched releases, deletes, unpins,
                                          events, idle leases (``housekeeping``)

Ordering: every message to a given peer goes through one connection (``conn_to``), so a task's
reply always reaches its owner before the releases that follow it (the handoff rule, DESIGN §3).
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import time
from collections import defaultdict, deque
from typing import Any

from memlab.core.events import EventBuffer
from memlab.core.ownership import ReferenceTable
from memlab.exceptions import (
    AuthenticationError,
    ConnectionClosedError,
    GetTimeoutError,
    ObjectLostError,
    ObjectStoreFullError,
    OwnerDiedError,
)
from memlab.ids import IdGenerator, object_id
from memlab.protocol.endpoints import Listener, connect
from memlab.protocol.transport import Connection
from memlab.runtime import context
from memlab.runtime.coreworker.failures import FailureHandling
from memlab.runtime.coreworker.housekeeping import Housekeeping
from memlab.runtime.coreworker.memory_store import (
    FAILED,
    PENDING,
    CountdownWaiter,
    MemoryStore,
    Slot,
    run_wakeups,
)
from memlab.runtime.coreworker.object_ref import ObjectRef
from memlab.runtime.coreworker.output_channel import OutputChannel
from memlab.runtime.coreworker.owner_service import OwnerService
from memlab.runtime.coreworker.store_client import ROOM_WAIT, StoreClient
from memlab.runtime.coreworker.task_spec import call_site
from memlab.serialization import deserialize, serialize

log = logging.getLogger("memlab.runtime")

REASK_PERIOD = 5.0  # seconds a get waits on a borrowed object before asking its owner again
DEFAULT_INLINE_THRESHOLD = 100 * 1024
# How long a put into a full store waits for room that releases already in flight will make
# (other processes batch theirs for up to a housekeeping round, 10-100 ms).
PUT_ROOM_WAIT = 1.0


class CoreWorker(OwnerService, FailureHandling, Housekeeping):
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
        self.peers: dict[str, Connection] = {}
        self.nodes: list[str] = [node_id]  # alive nodes, in the order they joined
        self.dead: dict[str, dict[str, Any]] = {}
        self._fetching: set[bytes] = set()
        self._dirty: set[bytes] = set()
        self._freed: list[str] = []  # freed since the last flush: one object.freed event for all
        # owner -> (object id, registrations released): sent in batches by housekeeping
        self._releases: dict[str, list[tuple[bytes, int]]] = defaultdict(list)
        self._deletes: dict[str, list[bytes]] = defaultdict(list)
        self._connect_lock = threading.Lock()
        # Messages decided under the lock and sent after it is released: a send can block on a
        # full socket, and blocking while holding the lock could deadlock with a peer's reader.
        self._outbox: deque[tuple[str, dict[str, Any]]] = deque()
        self._stopped = threading.Event()
        self.validation_failure: str | None = None  # the first periodic check that failed
        self.handlers: dict[str, Any] = {
            "hello": self._on_hello,
            "add_borrower": self._on_add_borrower,
            "release_borrow": self._on_release_borrow,
            "get_object": self._on_get_object,
            "object_value": self._on_object_value,
            "worker_died": self._on_worker_died,
            "nodes": self._on_nodes,
            "object_missing": self._on_object_missing,
            "validate": self._on_validate,
        }
        self.on_peer_lost: list[Any] = []
        self.on_block: Any = None  # a worker's executor: hand back queued tasks while blocked
        self.on_flush: Any = None  # a worker's executor: announce tasks still running
        self.busy: Any = None  # a worker's executor: whether a task runs or waits here
        self.store: StoreClient | None = None
        self.listener = Listener(
            self.address(proc), secret, self._on_accept, self._dispatch, self._on_close, name=proc
        )
        from memlab.runtime.coreworker.actors import ActorManager
        from memlab.runtime.coreworker.recovery import Recovery
        from memlab.runtime.coreworker.submitter import Submitter

        self.recovery = Recovery(self)
        self.submitter = Submitter(self)
        self.actors = ActorManager(self)
        self.output = OutputChannel(self)  # what tasks print, on its way to their owners
        self._housekeeper = threading.Thread(
            target=self._housekeeping, name=f"memlab-housekeeping-{proc}", daemon=True
        )
        self._housekeeper.start()
        context.set_core(self)

    # -- connections ---------------------------------------------------------------------------

    def address(self, proc: str) -> str:
        return os.path.join(self.session_dir, f"{proc}.sock")

    def conn_to(self, peer: str) -> Connection:
        conn = self.peers.get(peer)
        if conn is not None and not conn.closed:
            return conn
        if peer in self.dead:
            raise ConnectionClosedError(peer, "the process has died")
        with self._connect_lock:
            conn = self.peers.get(peer)
            if conn is not None and not conn.closed:
                return conn
            try:
                conn = connect(
                    self.address(peer), self.secret, self.proc, self._dispatch, self._on_close
                )
            except AuthenticationError as exc:
                # Every process of a session holds the same secret: a failed handshake with
                # one of them means it died during it.
                raise ConnectionClosedError(peer, f"its handshake failed: {exc}") from exc
            conn.peer = peer
            conn.send(
                {
                    "t": "hello",
                    "proc": self.proc,
                    "kind": self.kind,
                    "pid": os.getpid(),
                    "node": self.node_id,
                }
            )
            self.peers[peer] = conn
            return conn

    def _on_accept(self, conn: Connection) -> None:
        pass  # the peer's first message is ``hello``; until then it is anonymous

    def _on_hello(self, conn: Connection, h: dict[str, Any], payload: bytes) -> None:
        conn.peer = h["proc"]
        self.peers.setdefault(h["proc"], conn)

    def _dispatch(self, conn: Connection, h: dict[str, Any], payload: bytes) -> None:
        handler = self.handlers.get(h["t"])
        if handler is None:
            log.warning("%s: unknown message %r from %s", self.proc, h["t"], conn.peer)
            return
        handler(conn, h, payload)

    def _on_close(self, conn: Connection, error: BaseException | None) -> None:
        peer = conn.peer
        if peer is None:
            return
        if self.peers.get(peer) is conn:
            del self.peers[peer]
        for callback in self.on_peer_lost:
            callback(peer, conn)

    # -- refs ----------------------------------------------------------------------------------

    def new_owned_ref(self, oid: bytes) -> ObjectRef:
        return ObjectRef(oid, self.proc, self)

    def ref_from_wire(self, oid: bytes, owner: str) -> ObjectRef:
        """A ref was unpickled here: count it and, if new to us, borrow it from its owner."""
        with self.lock:
            needs_registration, ins = self.table.add_local(oid, owner)
            self._apply(ins)
        ref = ObjectRef(oid, owner, self)
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

    def _apply(self, instructions: list[Any]) -> None:
        """Carry out ownership instructions; called with the lock held, sends nothing directly."""
        for ins in instructions:
            op = ins[0]
            if op == "holders":
                self._dirty.add(ins[1])
            elif op == "free":
                oid, location = ins[1], ins[2]
                slot = self.mstore.remove(oid)
                if slot is not None and slot.node is not None:
                    self._deletes[slot.node].append(oid)
                elif location is not None:
                    self._deletes[location].append(oid)
                self._dirty.discard(oid)
                if self.events.enabled:
                    self._freed.append(oid.hex())
                if oid in self.actors.by_creation:
                    self.actors.out_of_scope(oid)
            elif op == "release_borrow":
                self._releases[ins[2]].append((ins[1], ins[3]))
            elif op == "forget":
                self.mstore.remove(ins[1])
                self._fetching.discard(ins[1])
            elif op == "dropped" and ins[2] is not None:
                self._apply(self.recovery.lineage_dropped(ins[2]))

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
        with self.lock:
            deletes, self._deletes = self._deletes, defaultdict(list)
        for node, oids in deletes.items():
            self.submitter.send_to_node(node, {"t": "delete", "oids": oids})
        if self.store is not None:
            self.store.flush()

    def ensure_fetch(self, oid: bytes, owner: str) -> Slot:
        """The slot of ``oid``; for a borrowed object, ask its owner for the value once."""
        slot = self.mstore.slots.get(oid)
        if slot is not None:
            return slot
        slot = self.mstore.add_pending(oid)
        if owner != self.proc and oid not in self._fetching:
            self._fetching.add(oid)
            self.send_later(owner, {"t": "get_object", "oid": oid})
        elif owner == self.proc:
            entry = self.table.get(oid)
            if entry is not None and entry.value_freed:
                # Kept only for lineage (a result being rebuilt needs it): rebuild it too.
                run_wakeups(self.recovery.objects_lost([oid], freed=True))
            else:  # owned, no slot and no lineage: the value was freed under a live ref
                run_wakeups(self.mstore.put_error(oid, ObjectLostError(oid.hex(), "it was freed")))
        return slot

    def send_later(self, peer: str, header: dict[str, Any]) -> None:
        """Queue a message (called with the lock held); ``drain_outbox`` sends it."""
        self._outbox.append((peer, header))

    def drain_outbox(self) -> None:
        """Send what was queued under the lock; call with the lock released."""
        outbox = self._outbox
        while outbox:
            try:
                peer, header = outbox.popleft()
            except IndexError:
                return
            try:
                self.conn_to(peer).send(header)
            except ConnectionClosedError:
                if header["t"] == "get_object":
                    oid = header["oid"]
                    with self.lock:
                        wake = self.mstore.put_error(oid, OwnerDiedError(oid.hex(), peer))
                    run_wakeups(wake)

    def get(self, refs: list[ObjectRef], timeout: float | None = None) -> list[Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        slots = self._wait_slots(refs, len(refs), timeout, fail_fast=True)
        for slot in slots:  # the first error decides: do not wait for the others (Ray's get)
            if slot.state == FAILED:
                raise _fresh(slot.error)
        return [self._materialize(ref, slot, deadline) for ref, slot in zip(refs, slots)]

    def _wait_slots(
        self, refs: list[ObjectRef], need: int, timeout: float | None, fail_fast: bool = False
    ) -> list[Slot]:
        with self.lock:
            slots = [self.ensure_fetch(r.binary, r.owner) for r in refs]
            pending = [r for r, s in zip(refs, slots) if s.state == PENDING]
            missing = need - (len(refs) - len(pending))
            if missing <= 0 or (fail_fast and any(s.state == FAILED for s in slots)):
                if self._outbox:
                    self.drain_outbox()
                return slots
            waiter = CountdownWaiter(missing, fail_fast)
            for r in pending:
                self.mstore.add_waiter(r.binary, waiter)
        self.drain_outbox()
        blocked = self.kind == "worker"
        if blocked:
            self.submitter.notify_blocked(True)
            if self.on_block is not None:
                self.on_block(True)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                remaining = None if deadline is None else deadline - time.monotonic()
                step = REASK_PERIOD if remaining is None else min(REASK_PERIOD, remaining)
                if waiter.wait(max(0.0, step)):
                    return slots
                if deadline is not None and time.monotonic() >= deadline:
                    raise GetTimeoutError(timeout or 0.0, sum(s.state == PENDING for s in slots))
                self._reask(refs, slots)
        finally:
            if blocked:
                self.submitter.notify_blocked(False)
                if self.on_block is not None:
                    self.on_block(False)

    def _reask(self, refs: list[ObjectRef], slots: list[Slot]) -> None:
        """Still waiting on borrowed objects: ask their owners again. Answers are idempotent,
        and this bounds the cost of any message lost to a peer's crash to one period."""
        with self.lock:
            for ref, slot in zip(refs, slots):
                if slot.state == PENDING and ref.owner != self.proc and ref.owner not in self.dead:
                    self.send_later(ref.owner, {"t": "get_object", "oid": ref.binary})
        self.drain_outbox()

    def _materialize(self, ref: ObjectRef, slot: Slot, deadline: float | None = None) -> Any:
        for _ in range(10):
            if slot.state == FAILED:
                raise _fresh(slot.error)
            if slot.data is not None:
                return deserialize(slot.data)
            assert self.store is not None
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            room_wait = ROOM_WAIT if remaining is None else min(ROOM_WAIT, remaining)
            found, value = self.store.read(ref.binary, slot.node, room_wait)
            if found:
                return value
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            slot = self._refresh_lost(ref, slot, remaining)
        raise ObjectLostError(ref.hex(), "its copies kept disappearing while being read")

    def _refresh_lost(self, ref: ObjectRef, slot: Slot, timeout: float | None) -> Slot:
        """A read found no copy where the slot said: learn the object's fate and wait again."""
        oid = ref.binary
        wake: list[Any] = []
        with self.lock:
            if self.mstore.slots.get(oid) is slot and slot.state != PENDING:
                entry = self.table.get(oid)
                if entry is not None and entry.owned:
                    wake = self.recovery.objects_lost([oid])
                else:
                    self.mark_missing(oid, ref.owner, slot.node)
        run_wakeups(wake)
        self.submitter.kick()
        return self._wait_slots([ref], 1, timeout)[0]

    def wait(
        self, refs: list[ObjectRef], num_returns: int, timeout: float | None
    ) -> tuple[list[ObjectRef], list[ObjectRef]]:
        try:
            slots = self._wait_slots(refs, num_returns, timeout)
        except GetTimeoutError:
            with self.lock:
                slots = [self.ensure_fetch(r.binary, r.owner) for r in refs]
        ready: list[ObjectRef] = []
        not_ready: list[ObjectRef] = []
        for ref, slot in zip(refs, slots):
            (ready if slot.state != PENDING and len(ready) < num_returns else not_ready).append(ref)
        return ready, not_ready

    def close(self) -> None:
        self._stopped.set()
        if self._housekeeper is not threading.current_thread():
            self._housekeeper.join(timeout=2)
        try:
            self.flush()
        except Exception:
            pass
        if context.current_core() is self:
            context.set_core(None)
        self.listener.close()
        for conn in list(self.peers.values()):
            conn.close()
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


def _fresh(error: BaseException | None) -> BaseException:
    """A copy of a stored error to raise: raising the stored one would hang this frame's
    traceback (and every ref its locals hold) on the slot for as long as the slot lives."""
    assert error is not None
    try:
        return copy.copy(error)
    except Exception:
        return error
