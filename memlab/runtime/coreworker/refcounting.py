"""Carrying out the reference table's instructions, and the batches they leave for housekeeping.

``ReferenceTable`` (``memlab.core.ownership``) decides; ``RefCounting.apply`` does what it
decided, with the core's lock held and without sending anything:

================= ===========================================================================
instruction        effect
================= ===========================================================================
``holders``        the object's holders changed: one ``object.holders`` event at the next flush
``free``           drop the local value; delete the stored copy at the next flush; an actor
                   whose creation ref this was goes out of scope
``release_borrow`` tell the owner at the next flush that this process borrows it no more
``forget``         a borrowed entry left the table: drop its cached value
``dropped``        a result left the owner's table: its lineage may go (``Recovery``)
================= ===========================================================================

Deletes and releases are batched per peer and sent by the housekeeping thread
(``take_batches``), or at once when a ``put`` needs the room (``take_deletes``).
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memlab.core.events import EventBuffer
    from memlab.runtime.coreworker.memory_store import MemoryStore
    from memlab.runtime.coreworker.ports import ActorScope, Fetching, Lineage

Releases = dict[str, list[tuple[bytes, int]]]
Deletes = dict[str, list[bytes]]


class _NoActors:
    """Until ``connect``: no actor is owned yet."""

    by_creation: dict[bytes, bytes] = {}

    def out_of_scope(self, oid: bytes) -> None:
        pass


class RefCounting:
    """The I/O side of reference counting for one process (lock held in every method)."""

    def __init__(self, mstore: MemoryStore, events: EventBuffer) -> None:
        self._mstore = mstore
        self._events = events
        self._fetching: Fetching | None = None
        self._lineage: Lineage | None = None
        self._actors: ActorScope = _NoActors()
        self._dirty: set[bytes] = set()
        self._freed: list[str] = []  # freed since the last flush: one object.freed event for all
        # owner -> (object id, registrations released): sent in batches by housekeeping
        self._releases: Releases = defaultdict(list)
        self._deletes: Deletes = defaultdict(list)

    def connect(self, fetching: Fetching, lineage: Lineage, actors: ActorScope) -> None:
        """The services instructions reach. Wired after construction because they apply
        instructions too (the reference table is shared), so they are built after this."""
        self._fetching = fetching
        self._lineage = lineage
        self._actors = actors

    def apply(self, instructions: list[Any]) -> None:
        """Carry out ownership instructions; called with the lock held, sends nothing."""
        for ins in instructions:
            op = ins[0]
            if op == "holders":
                self._dirty.add(ins[1])
            elif op == "free":
                oid, location = ins[1], ins[2]
                slot = self._mstore.remove(oid)
                if slot is not None and slot.node is not None:
                    self._deletes[slot.node].append(oid)
                elif location is not None:
                    self._deletes[location].append(oid)
                self._dirty.discard(oid)
                if self._events.enabled:
                    self._freed.append(oid.hex())
                if oid in self._actors.by_creation:
                    self._actors.out_of_scope(oid)
            elif op == "release_borrow":
                self._releases[ins[2]].append((ins[1], ins[3]))
            elif op == "forget":
                assert self._fetching is not None
                self._fetching.forget(ins[1])
            elif op == "dropped" and ins[2] is not None:
                assert self._lineage is not None
                self.apply(self._lineage.lineage_dropped(ins[2]))

    def queue_delete(self, node: str, oid: bytes) -> None:
        """Delete ``node``'s copy of ``oid`` at the next flush (lock held)."""
        self._deletes[node].append(oid)

    def queue_release(self, owner: str, oid: bytes, count: int) -> None:
        """Tell ``owner`` at the next flush that ``count`` borrows of ``oid`` end (lock held)."""
        self._releases[owner].append((oid, count))

    # -- for housekeeping ----------------------------------------------------------------------

    def has_pending(self) -> bool:
        """Anything waits for the next flush."""
        return bool(self._releases or self._deletes or self._dirty or self._freed)

    def take_batches(self) -> tuple[Releases, Deletes]:
        """The releases and deletes gathered since the last call (lock held)."""
        releases, self._releases = self._releases, defaultdict(list)
        deletes, self._deletes = self._deletes, defaultdict(list)
        return releases, deletes

    def take_deletes(self) -> Deletes:
        """The deletes gathered since the last flush (lock held)."""
        deletes, self._deletes = self._deletes, defaultdict(list)
        return deletes

    def take_object_events(self) -> tuple[set[bytes], list[str]]:
        """Objects whose holders changed, and hex ids of those freed, since the last call."""
        dirty, self._dirty = self._dirty, set()
        freed, self._freed = self._freed, []
        return dirty, freed
