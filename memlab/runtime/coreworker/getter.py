"""Reading values: ``get``, ``wait`` and the borrower's fetches from owners.

A value is read from its slot in the memory store (``memory_store``): inline bytes, the node
whose shared-memory store holds it, or the error. A borrowed object's slot is filled by its
owner's answer to ``get_object``, asked once (``ensure_fetch``) and again every ``REASK_PERIOD``
while a reader still waits, which bounds the cost of a message lost to a crash. When a read finds
no copy where the slot said, the owner learns of it (``mark_missing``) and rebuilds it, or this
process does if it owns it.

A worker blocked in ``get`` tells its node manager (which may start another worker in its place)
and its executor (``WorkerHooks.on_block``: tasks queued behind it go back to their owners).
"""

from __future__ import annotations

import copy
import threading
import time
from typing import TYPE_CHECKING, Any

from memlab.exceptions import GetTimeoutError, ObjectLostError, OwnerDiedError
from memlab.runtime.coreworker.memory_store import (
    FAILED,
    PENDING,
    CountdownWaiter,
    MemoryStore,
    Slot,
    run_wakeups,
)
from memlab.runtime.coreworker.ports import WorkerHooks
from memlab.runtime.coreworker.store_client import ROOM_WAIT
from memlab.serialization import deserialize

if TYPE_CHECKING:
    from memlab.core.ownership import ReferenceTable
    from memlab.runtime.coreworker.object_ref import ObjectRef
    from memlab.runtime.coreworker.peers import Peers
    from memlab.runtime.coreworker.ports import Lineage, Scheduling
    from memlab.runtime.coreworker.store_client import StoreClient

REASK_PERIOD = 5.0  # seconds a get waits on a borrowed object before asking its owner again


class Getter:
    """Gets, waits and fetches of one process (``CoreWorker.get``/``wait`` are these)."""

    def __init__(
        self,
        proc: str,
        blocks_its_node: bool,
        lock: threading.RLock,
        table: ReferenceTable,
        mstore: MemoryStore,
        peers: Peers,
        lineage: Lineage,
        scheduling: Scheduling,
    ) -> None:
        self.proc = proc
        # A worker's blocked get frees its slot on the node; the driver holds no slot.
        self._blocks_its_node = blocks_its_node
        self._node_id = peers.node_id
        self._lock = lock
        self._table = table
        self._mstore = mstore
        self._peers = peers
        self._outbox = peers.outbox  # the same deque for the process's life
        self._send_later = peers.send_later
        self._drain_outbox = peers.drain_outbox
        self._lineage = lineage
        self._scheduling = scheduling
        self._store: StoreClient | None = None
        self._hooks = WorkerHooks()
        self._fetching: set[bytes] = set()  # borrowed objects asked of their owners
        peers.set_undeliverable(self._undeliverable)

    def attach_store(self, store: StoreClient) -> None:
        self._store = store

    def use_hooks(self, hooks: WorkerHooks) -> None:
        self._hooks = hooks

    # -- the borrower's record of fetches (``ports.Fetching``; lock held) ---------------------

    def forget(self, oid: bytes) -> None:
        """Drop a cached value; a later read asks its owner again."""
        self._mstore.remove(oid)
        self._fetching.discard(oid)

    def never_ask(self, oid: bytes) -> None:
        """Its owner is dead: never ask it for ``oid`` again."""
        self._fetching.add(oid)

    def mark_missing(self, oid: bytes, owner: str, node: str | None) -> None:
        """A borrowed object's copy was not where its owner said (lock held): tell the owner,
        which rebuilds it, and ask for it again."""
        self._send_later(owner, {"t": "object_missing", "oid": oid, "node": node})
        self.forget(oid)

    def ensure_fetch(self, oid: bytes, owner: str) -> Slot:
        """The slot of ``oid``; for a borrowed object, ask its owner for the value once."""
        mstore = self._mstore
        slot = mstore.slots.get(oid)
        if slot is not None:
            return slot
        slot = mstore.add_pending(oid)
        if owner != self.proc and oid not in self._fetching:
            self._fetching.add(oid)
            self._send_later(owner, {"t": "get_object", "oid": oid})
        elif owner == self.proc:
            entry = self._table.get(oid)
            if entry is not None and entry.value_freed:
                # Kept only for lineage (a result being rebuilt needs it): rebuild it too.
                run_wakeups(self._lineage.objects_lost([oid], freed=True))
            else:  # owned, no slot and no lineage: the value was freed under a live ref
                run_wakeups(mstore.put_error(oid, ObjectLostError(oid.hex(), "it was freed")))
        return slot

    def _undeliverable(self, peer: str, header: dict[str, Any]) -> None:
        if header["t"] == "get_object":  # the owner is gone, and the value with it
            oid = header["oid"]
            with self._lock:
                wake = self._mstore.put_error(oid, OwnerDiedError(oid.hex(), peer))
            run_wakeups(wake)

    # -- get / wait ----------------------------------------------------------------------------

    def get(self, refs: list[ObjectRef], timeout: float | None = None) -> list[Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        slots = self._wait_slots(refs, len(refs), timeout, fail_fast=True)
        for slot in slots:  # the first error decides: do not wait for the others (Ray's get)
            if slot.state == FAILED:
                raise _fresh(slot.error)
        return [self._materialize(ref, slot, deadline) for ref, slot in zip(refs, slots)]

    def wait(
        self, refs: list[ObjectRef], num_returns: int, timeout: float | None
    ) -> tuple[list[ObjectRef], list[ObjectRef]]:
        try:
            slots = self._wait_slots(refs, num_returns, timeout)
        except GetTimeoutError:
            with self._lock:
                slots = [self.ensure_fetch(r.binary, r.owner) for r in refs]
        ready: list[ObjectRef] = []
        not_ready: list[ObjectRef] = []
        for ref, slot in zip(refs, slots):
            (ready if slot.state != PENDING and len(ready) < num_returns else not_ready).append(ref)
        return ready, not_ready

    def _wait_slots(
        self, refs: list[ObjectRef], need: int, timeout: float | None, fail_fast: bool = False
    ) -> list[Slot]:
        with self._lock:
            slots = [self.ensure_fetch(r.binary, r.owner) for r in refs]
            pending = [r for r, s in zip(refs, slots) if s.state == PENDING]
            missing = need - (len(refs) - len(pending))
            if missing <= 0 or (fail_fast and any(s.state == FAILED for s in slots)):
                if self._outbox:
                    self._drain_outbox()
                return slots
            waiter = CountdownWaiter(missing, fail_fast)
            for r in pending:
                self._mstore.add_waiter(r.binary, waiter)
        self._drain_outbox()
        blocked = self._blocks_its_node
        if blocked:
            self._blocked(True)
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
                self._blocked(False)

    def _blocked(self, blocked: bool) -> None:
        """Tell the node manager (it may start a worker in this one's place), then the
        executor."""
        self._peers.send_or_drop(self._node_id, {"t": "blocked" if blocked else "unblocked"})
        self._hooks.on_block(blocked)

    def _reask(self, refs: list[ObjectRef], slots: list[Slot]) -> None:
        """Still waiting on borrowed objects: ask their owners again. Answers are idempotent,
        and this bounds the cost of any message lost to a peer's crash to one period."""
        dead = self._peers.dead
        with self._lock:
            for ref, slot in zip(refs, slots):
                if slot.state == PENDING and ref.owner != self.proc and ref.owner not in dead:
                    self._send_later(ref.owner, {"t": "get_object", "oid": ref.binary})
        self._drain_outbox()

    def _materialize(self, ref: ObjectRef, slot: Slot, deadline: float | None = None) -> Any:
        for _ in range(10):
            if slot.state == FAILED:
                raise _fresh(slot.error)
            if slot.data is not None:
                return deserialize(slot.data)
            store = self._store
            assert store is not None
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            room_wait = ROOM_WAIT if remaining is None else min(ROOM_WAIT, remaining)
            found, value = store.read(ref.binary, slot.node, room_wait)
            if found:
                return value
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            slot = self._refresh_lost(ref, slot, remaining)
        raise ObjectLostError(ref.hex(), "its copies kept disappearing while being read")

    def _refresh_lost(self, ref: ObjectRef, slot: Slot, timeout: float | None) -> Slot:
        """A read found no copy where the slot said: learn the object's fate and wait again."""
        oid = ref.binary
        wake: list[Any] = []
        with self._lock:
            if self._mstore.slots.get(oid) is slot and slot.state != PENDING:
                entry = self._table.get(oid)
                if entry is not None and entry.owned:
                    wake = self._lineage.objects_lost([oid])
                else:
                    self.mark_missing(oid, ref.owner, slot.node)
        run_wakeups(wake)
        self._scheduling.kick()
        return self._wait_slots([ref], 1, timeout)[0]


def _fresh(error: BaseException | None) -> BaseException:
    """A copy of a stored error to raise: raising the stored one would hang this frame's
    traceback (and every ref its locals hold) on the slot for as long as the slot lives."""
    assert error is not None
    try:
        return copy.copy(error)
    except Exception:
        return error
