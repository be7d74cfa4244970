"""What a process does when another process or a whole node dies.

A mixin of ``CoreWorker``. A dead process borrows nothing any more, and what it owned is
unreachable (fate-sharing: borrowers' gets raise ``OwnerDiedError``); a dead node's copies are
gone, so the objects this process owns there are rebuilt from lineage (``Recovery``) and the
borrowed ones are asked for again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from memlab.exceptions import OwnerDiedError
from memlab.runtime.memory_store import run_wakeups

if TYPE_CHECKING:
    from memlab.core.ownership import ReferenceTable
    from memlab.protocol.transport import Connection
    from memlab.runtime.memory_store import MemoryStore


class FailureHandling:
    lock: Any
    table: ReferenceTable
    mstore: MemoryStore
    dead: dict[str, dict[str, Any]]
    nodes: list[str]
    recovery: Any
    submitter: Any
    actors: Any
    _fetching: set[bytes]

    _apply: Callable[[list[Any]], None]  # provided by CoreWorker

    def _on_worker_died(self, conn: Connection, h: dict[str, Any], payload: bytes) -> None:
        if h["worker"] not in self.dead:
            self.process_died(h["worker"], h)

    def _on_nodes(self, conn: Connection, h: dict[str, Any], payload: bytes) -> None:
        """The driver's word on which nodes are alive; nodes that left have died."""
        gone = [n for n in self.nodes if n not in h["alive"]]
        self.nodes = list(h["alive"])
        self.submitter.max_leases = h.get("workers", self.submitter.max_leases)
        for node in gone:
            self.node_died(node)

    def node_died(self, node: str) -> None:
        """Every copy in ``node``'s store is gone: owned objects there are lost (rebuilt from
        lineage where possible), borrowed ones are asked for again."""
        self.dead[node] = {"node": node}
        if node in self.nodes:
            self.nodes.remove(node)
        self.submitter.after_node_died(node)  # before rebuilding: no rebuild goes to a dead lease
        self.actors.node_died(node)
        wake: list[Any] = []
        lost: list[bytes] = []
        with self.lock:
            for oid, slot in list(self.mstore.slots.items()):
                if slot.node != node:
                    continue
                entry = self.table.get(oid)
                if entry is not None and entry.owned:
                    lost.append(oid)
                else:
                    self.mstore.remove(oid)
                    self._fetching.discard(oid)
            wake += self.recovery.objects_lost(lost)
        run_wakeups(wake)
        self.submitter.kick()

    def process_died(self, proc: str, info: dict[str, Any]) -> None:
        """``proc`` died: it borrows nothing any more, and what it owned is lost (fate-sharing)."""
        self.dead[proc] = info
        wake: list[Any] = []
        with self.lock:
            self._apply(self.table.remove_borrower_everywhere(proc))
            for oid, entry in list(self.table.entries.items()):
                if entry.owner == proc and not entry.owned:
                    # Fate-sharing: even a value cached here is unreachable through its owner.
                    self.mstore.remove(oid)
                    self._fetching.add(oid)  # never ask the dead owner for it again
                    wake += self.mstore.put_error(oid, OwnerDiedError(oid.hex(), proc))
        run_wakeups(wake)
        self.submitter.on_worker_died(proc, info)
        self.actors.worker_died(proc, info)
        self.actors.owner_died(proc)
