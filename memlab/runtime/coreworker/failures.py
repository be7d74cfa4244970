"""What a process does when another process or a whole node dies.

Built by ``CoreWorker``, which hands it what it needs of the other services (``ports``). A
dead process borrows nothing any more, and what it owned is
unreachable (fate-sharing: borrowers' gets raise ``OwnerDiedError``); a dead node's copies are
gone, so the objects this process owns there are served from a surviving copy on another node
(``promotion``) or else rebuilt from lineage (``Recovery``), and the borrowed ones are asked for
again.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from memlab.core.promotion import Outcome
from memlab.exceptions import OwnerDiedError
from memlab.runtime.coreworker.memory_store import PENDING, READY, run_wakeups
from memlab.runtime.coreworker.promotion import promote_copies

if TYPE_CHECKING:
    from memlab.core.events import EventBuffer
    from memlab.core.ownership import ReferenceTable
    from memlab.protocol.transport import Connection
    from memlab.runtime.coreworker.memory_store import MemoryStore
    from memlab.runtime.coreworker.peers import Peers
    from memlab.runtime.coreworker.ports import (
        ActorDeaths,
        Fetching,
        Lineage,
        RefApplier,
        Scheduling,
    )


class FailureHandling:
    """Deaths of other processes and of nodes, as this process sees them."""

    def __init__(
        self,
        lock: threading.RLock,
        table: ReferenceTable,
        mstore: MemoryStore,
        events: EventBuffer,
        nodes: list[str],
        peers: Peers,
        refs: RefApplier,
        fetching: Fetching,
        lineage: Lineage,
        scheduling: Scheduling,
        actors: ActorDeaths,
    ) -> None:
        self.lock = lock
        self.table = table
        self.mstore = mstore
        self.events = events
        self.nodes = nodes  # the core's list of alive nodes, changed in place
        self.peers = peers
        self.dead = peers.dead
        self.refs = refs
        self.fetching = fetching
        self.lineage = lineage
        self.scheduling = scheduling
        self.actors = actors
        peers.register("worker_died", self.on_worker_died)
        peers.register("nodes", self._on_nodes)

    def on_worker_died(self, conn: Connection, h: dict[str, Any], payload: bytes) -> None:
        """A node manager's word that one of its workers died (the driver extends it)."""
        if h["worker"] not in self.dead:
            self.process_died(h["worker"], h)

    def _on_nodes(self, conn: Connection, h: dict[str, Any], payload: bytes) -> None:
        """The driver's word on which nodes are alive; nodes that left have died."""
        gone = [n for n in self.nodes if n not in h["alive"]]
        self.nodes[:] = h["alive"]
        self.scheduling.max_leases = h.get("workers", self.scheduling.max_leases)
        for node in gone:
            self.node_died(node)

    def node_died(self, node: str) -> None:
        """Every copy in ``node``'s store is gone: owned objects there are lost (rebuilt from
        lineage where possible), borrowed ones are asked for again."""
        self.dead[node] = {"node": node}
        if node in self.nodes:
            self.nodes.remove(node)
        self.scheduling.after_node_died(node)  # before rebuilding: no rebuild goes to a dead lease
        self.actors.node_died(node)
        wake: list[Any] = []
        lost: list[bytes] = []
        sizes: dict[bytes, int] = {}  # values that may survive as a copy on a live node
        with self.lock:
            for oid, slot in list(self.mstore.slots.items()):
                if slot.node != node:
                    continue
                entry = self.table.get(oid)
                if entry is None or not entry.owned:
                    self.fetching.forget(oid)
                elif self.nodes and not entry.value_freed and slot.state == READY:
                    sizes[oid] = slot.size
                    self.mstore.reset(oid)  # pending: readers wait for the promotion's outcome
                else:
                    lost.append(oid)
            wake += self.lineage.objects_lost(lost)
        run_wakeups(wake)
        if sizes:
            self._promote_or_rebuild(sizes)
        self.scheduling.kick()

    def _promote_or_rebuild(self, sizes: dict[bytes, int]) -> None:
        """Make a surviving copy of each of these objects primary; rebuild the rest."""
        plan = promote_copies(self.peers, list(sizes), list(self.nodes))  # type: ignore[arg-type]
        wake: list[Any] = []
        lost: list[bytes] = []
        with self.lock:
            for oid, size in sizes.items():
                slot = self.mstore.slots.get(oid)
                entry = self.table.get(oid)
                spec = entry.lineage if entry is not None else None
                # Not freed meanwhile, and no rebuild took it over.
                wanted = not (
                    slot is None
                    or entry is None
                    or slot.state != PENDING
                    or (spec is not None and spec.task_id in self.scheduling.tasks)
                )
                outcome = plan.outcome(oid, wanted)
                if outcome is Outcome.DELETE_COPY:  # the copy is nobody's
                    self.peers.send_later(plan.promoted[oid], {"t": "delete", "oids": [oid]})
                elif outcome is Outcome.LOST:
                    lost.append(oid)
                elif outcome is Outcome.PROMOTED:
                    node = plan.promoted[oid]
                    wake += self.mstore.put_stored(oid, node, size)
                    self.table.set_ready(oid, node, size)  # a later free deletes it there
                    if self.events.enabled:
                        self.events.emit("object.promoted", object_id=oid.hex(), node=node)
            wake += self.lineage.objects_lost(lost)
        run_wakeups(wake)

    def process_died(self, proc: str, info: dict[str, Any]) -> None:
        """``proc`` died: it borrows nothing any more, and what it owned is lost (fate-sharing)."""
        self.dead[proc] = info
        wake: list[Any] = []
        with self.lock:
            self.refs.apply(self.table.remove_borrower_everywhere(proc))
            for oid, entry in list(self.table.entries.items()):
                if entry.owner == proc and not entry.owned:
                    # Fate-sharing: even a value cached here is unreachable through its owner.
                    self.mstore.remove(oid)
                    self.fetching.never_ask(oid)  # never ask the dead owner for it again
                    wake += self.mstore.put_error(oid, OwnerDiedError(oid.hex(), proc))
        run_wakeups(wake)
        self.scheduling.on_worker_died(proc, info)
        self.actors.worker_died(proc, info)
        self.actors.owner_died(proc)
