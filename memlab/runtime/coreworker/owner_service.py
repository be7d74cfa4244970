"""The owner's side of ownership: answering borrowers and readers of the objects it owns.

Built by ``CoreWorker`` on the shared lock, table and memory store, and registers the messages
an owner answers, ``add_borrower`` (synchronous, so a handoff never opens a gap),
``release_borrow``, ``get_object`` (answered when the value is ready: inline bytes, the node
that stores it, or the error), and ``object_missing`` (a reader found no copy where the owner
said: the object is treated as lost and rebuilt); and the borrower's side of those answers.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from memlab.exceptions import ConnectionClosedError, ObjectLostError
from memlab.protocol.errors import dumps_error, loads_error
from memlab.runtime.coreworker.memory_store import FAILED, PENDING, Slot, run_wakeups

if TYPE_CHECKING:
    from memlab.core.ownership import ReferenceTable
    from memlab.protocol.transport import Connection
    from memlab.runtime.coreworker.memory_store import MemoryStore
    from memlab.runtime.coreworker.ports import Lineage, Messaging, RefApplier, Scheduling


class OwnerService:
    """The owner's (and the borrower's) side of the object messages of one process."""

    def __init__(
        self,
        proc: str,
        lock: threading.RLock,
        table: ReferenceTable,
        mstore: MemoryStore,
        peers: Messaging,
        refs: RefApplier,
        lineage: Lineage,
        scheduling: Scheduling,
    ) -> None:
        self.proc = proc
        self.lock = lock
        self.table = table
        self.mstore = mstore
        self.peers = peers
        self.refs = refs
        self.lineage = lineage
        self.scheduling = scheduling
        peers.register("add_borrower", self._on_add_borrower)
        peers.register("release_borrow", self._on_release_borrow)
        peers.register("get_object", self._on_get_object)
        peers.register("object_value", self._on_object_value)
        peers.register("object_missing", self._on_object_missing)

    def _on_object_missing(self, conn: Connection, h: dict[str, Any], payload: bytes) -> None:
        oid = h["oid"]
        with self.lock:
            slot = self.mstore.slots.get(oid)
            entry = self.table.get(oid)
            stale = (
                slot is not None
                and entry is not None
                and entry.owned
                and slot.state != PENDING
                and slot.node == h["node"]
            )
            wake = self.lineage.objects_lost([oid]) if stale else []
        run_wakeups(wake)
        self.scheduling.kick()

    def _on_add_borrower(self, conn: Connection, h: dict[str, Any], payload: bytes) -> None:
        with self.lock:
            try:
                self.refs.apply(self.table.add_borrower(h["oid"], h["borrower"]))
                ok = True
            except KeyError:
                ok = False
        conn.reply(h, {"t": "ack", "ok": ok})

    def _on_release_borrow(self, conn: Connection, h: dict[str, Any], payload: bytes) -> None:
        peer = h.get("for") or conn.peer or ""  # "for": a lender takes back its loan to peer
        with self.lock:
            for oid, count in zip(h["oids"], h["counts"]):
                self.refs.apply(self.table.remove_borrower(oid, peer, count))

    def _on_get_object(self, conn: Connection, h: dict[str, Any], payload: bytes) -> None:
        oid = h["oid"]
        peer = conn.peer or ""

        def answer(slot: Slot) -> None:
            self._send_value(peer, oid, slot)

        with self.lock:
            slot = self.mstore.slots.get(oid)
            if slot is None:
                slot = Slot()
                slot.state = FAILED
                slot.error = ObjectLostError(oid.hex(), f"its owner {self.proc} no longer has it")
            elif slot.state == PENDING:
                self.mstore.when_done(oid, answer)
                return
        answer(slot)

    def _send_value(self, peer: str, oid: bytes, slot: Slot) -> None:
        h: dict[str, Any] = {"t": "object_value", "oid": oid}
        payload = b""
        if slot.state == FAILED:
            h["kind"] = "e"
            payload = dumps_error(slot.error)  # type: ignore[arg-type]
        elif slot.data is not None:
            h["kind"] = "i"
            payload = slot.data
        else:
            h.update(kind="s", node=slot.node, size=slot.size)
        try:
            self.peers.conn_to(peer).send(h, payload)
        except ConnectionClosedError:
            pass

    def _on_object_value(self, conn: Connection, h: dict[str, Any], payload: bytes) -> None:
        oid = h["oid"]
        with self.lock:
            if oid not in self.mstore.slots:
                return  # nobody here holds it any more
            kind = h["kind"]
            if kind == "i":
                wake = self.mstore.put_inline(oid, payload)
            elif kind == "s":
                wake = self.mstore.put_stored(oid, h["node"], h["size"])
            else:
                wake = self.mstore.put_error(oid, loads_error(payload))
        run_wakeups(wake)
