"""The node manager's store service: the object store's messages, fate-sharing of copies, and
copies between nodes.

Composed into ``NodeManager``. Creates record each copy's owner (so a dead owner's copies are
dropped) and writer (so a dead writer's unreported results are dropped unless a retry rewrote
them). A process needing an object whose primary copy is on another node asks its own node
manager to ``pull`` it: the copy is fetched from that node's manager once and kept as an
evictable secondary copy, deleted with its primary. When the primary's node dies, the owner may
``promote`` a surviving copy to primary (see :mod:`memlab.runtime.coreworker.promotion`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from memlab.exceptions import ObjectStoreFullError
from memlab.protocol.endpoints import connect
from memlab.protocol.errors import full_fields, raise_if_full
from memlab.protocol.frames import COPY_CHUNK_BYTES
from memlab.protocol.transport import Connection
from memlab.serialization.memcopy import copy_into

if TYPE_CHECKING:
    from memlab.store import Arena, ObjectStore

log = logging.getLogger("memlab.node")


class StoreService:
    """The store's side of the node manager: its message handlers and the copies' records.

    Args:
        node_id: This node.
        session_dir: Where the other nodes' sockets are.
        secret: The session secret (to connect to other nodes).
        store: This node's object store.
        arena: The arena the store allocates in (copies are read and written there).
        dispatch: The node manager's message dispatcher, for connections to other nodes.
        on_close: The node manager's handler of a closed connection.
    """

    def __init__(
        self,
        node_id: str,
        session_dir: str,
        secret: bytes,
        store: ObjectStore,
        arena: Arena,
        dispatch: Callable[[Connection, dict[str, Any], bytes], None],
        on_close: Callable[[Connection, BaseException | None], None],
    ) -> None:
        self.node_id = node_id
        self.session_dir = session_dir
        self.secret = secret
        self.store = store
        self.arena = arena
        self._dispatch = dispatch
        self._on_close = on_close
        self.owner_of: dict[bytes, str] = {}  # object -> owning process (fate-sharing)
        self.dead_owners: set[str] = set()  # a write or copy landing after the death is dropped
        self.writer_of: dict[bytes, str] = {}  # object -> the worker that wrote this copy
        self.copies: dict[bytes, set[str]] = {}  # our primaries -> nodes we gave a copy to
        self._nms: dict[str, Connection] = {}
        self._pull_lock = threading.Lock()

    def handlers(self) -> dict[str, Callable[[Connection, dict[str, Any]], None]]:
        """The message kinds this service answers."""
        return {
            "create": self._on_create,
            "seal": self._on_seal,
            "abort": self._on_abort,
            "get": self._on_get,
            "release": self._on_release,
            "delete": self._on_delete,
            "stats": self._on_stats,
            "pull": self._on_pull,
            "fetch": self._on_fetch,
            "worker_died": self._on_worker_died,
            "delete_written": self._on_delete_written,
            "object_info": self._on_object_info,
            "holds": self._on_holds,
            "promote": self._on_promote,
            "drop_copies": self._on_drop_copies,
        }

    def _on_create(self, conn: Connection, h: dict[str, Any]) -> None:
        oid = h["oid"]
        if h.get("owner") in self.dead_owners:  # nobody can ever free it (fate-sharing)
            conn.reply(h, {"t": "created", "owner_died": h["owner"]})
            return
        if self.store.object_info(oid) is not None:
            self.store.delete(oid)  # a retried task writes its result again
        if "owner" in h:
            self.owner_of[oid] = h["owner"]
        self.writer_of[oid] = conn.peer or ""
        try:
            offset = self.store.create(oid, h["size"], conn.peer or "", h.get("primary", True))
        except ObjectStoreFullError as exc:
            conn.reply(h, {"t": "created", "full": full_fields(exc)})
            return
        conn.reply(h, {"t": "created", "offset": offset})

    def _on_seal(self, conn: Connection, h: dict[str, Any]) -> None:
        self.store.seal(h["oid"], conn.peer or "")
        conn.reply(h, {"t": "sealed"})

    def _on_abort(self, conn: Connection, h: dict[str, Any]) -> None:
        with contextlib.suppress(ValueError):
            self.store.abort(h["oid"], conn.peer or "")

    def _on_get(self, conn: Connection, h: dict[str, Any]) -> None:
        try:
            found = self.store.get(h["oid"], conn.peer or "")
        except ObjectStoreFullError as exc:  # spilled, and no room to restore it now: not lost
            conn.reply(h, {"t": "got", "full": full_fields(exc)})
            return
        except OSError as exc:  # its spill file cannot be read back: this copy is gone
            log.warning("%s: cannot restore %s: %s", self.node_id, h["oid"].hex(), exc)
            found = None
        if found is None:
            conn.reply(h, {"t": "got"})
        else:
            conn.reply(h, {"t": "got", "offset": found[0], "size": found[1]})

    def _on_object_info(self, conn: Connection, h: dict[str, Any]) -> None:
        info = self.store.object_info(h["oid"]) or {}
        conn.reply(
            h,
            {
                "t": "info",
                "owner": self.owner_of.get(h["oid"]),
                "writer": self.writer_of.get(h["oid"]),
                **{k: v for k, v in info.items() if k != "pins"},
            },
        )

    def _on_stats(self, conn: Connection, h: dict[str, Any]) -> None:
        conn.reply(h, {"t": "stats", **self.store.stats()})

    def _on_release(self, conn: Connection, h: dict[str, Any]) -> None:
        for oid in h["oids"]:
            self.store.release(oid, conn.peer or "")

    def _on_delete(self, conn: Connection, h: dict[str, Any]) -> None:
        self._delete(h["oids"])

    def _delete(self, oids: list[bytes]) -> None:
        forward: dict[str, list[bytes]] = {}
        for oid in oids:
            self.store.delete(oid)
            self.owner_of.pop(oid, None)
            self.writer_of.pop(oid, None)
            for node in self.copies.pop(oid, ()):
                forward.setdefault(node, []).append(oid)
        for node, batch in forward.items():  # secondary copies go with their primary
            with contextlib.suppress(Exception):
                self._nm(node).send({"t": "delete", "oids": batch})

    def _on_delete_written(self, conn: Connection, h: dict[str, Any]) -> None:
        """Results a dead worker wrote but never reported: gone unless a retry rewrote them."""
        self._delete([oid for oid in h["oids"] if self.writer_of.get(oid) == h["writer"]])

    def drop_owned_by(self, owner: str) -> None:
        """Fate-sharing: objects whose owner died are unreachable; remove their copies, and
        refuse the ones still being written or copied (they would have no one to free them)."""
        self.dead_owners.add(owner)
        self._delete([oid for oid, o in list(self.owner_of.items()) if o == owner])

    def _on_worker_died(self, conn: Connection, h: dict[str, Any]) -> None:
        self.drop_owned_by(h["worker"])

    # -- copies between nodes

    def _nm(self, node: str) -> Connection:
        conn = self._nms.get(node)
        if conn is None or conn.closed:
            conn = connect(
                os.path.join(self.session_dir, f"{node}.sock"),
                self.secret,
                self.node_id,
                self._dispatch,
                self._on_close,
            )
            conn.peer = node
            conn.send({"t": "hello", "proc": self.node_id, "kind": "node"})
            self._nms[node] = conn
        return conn

    def _on_pull(self, conn: Connection, h: dict[str, Any]) -> None:
        """A process on this node needs an object whose primary copy is on another node."""
        oid = h["oid"]
        try:
            with self._pull_lock:
                ok = self.store.contains(oid) or self._copy_from(h["from"], oid)
        except ObjectStoreFullError as exc:  # no room here or there now; the copy still exists
            conn.reply(h, {"t": "pulled", "ok": False, "full": full_fields(exc)})
            return
        conn.reply(h, {"t": "pulled", "ok": ok})

    def _copy_from(self, node: str, oid: bytes) -> bool:
        """Copy ``oid`` from ``node``'s store into this one: False if that node has no copy.

        The value comes in ``COPY_CHUNK_BYTES`` pieces, each its own request: no frame is
        larger than a piece, and the source pins the object only while it reads one.

        Raises:
            ObjectStoreFullError: either store has no room for it now.
        """
        offset: int | None = None
        size = at = 0
        reply: dict[str, Any] = {}
        try:
            while offset is None or at < size:
                try:
                    reply, data = self._nm(node).request(
                        {"t": "fetch", "oid": oid, "at": at, "len": COPY_CHUNK_BYTES}, timeout=120
                    )
                except Exception:  # the node is gone or unreachable: the object is lost to us
                    return self._abort_copy(oid, offset)
                if "missing" in raise_if_full(reply):
                    return self._abort_copy(oid, offset)
                if offset is None:
                    size = cast(int, reply["size"])
                    try:
                        offset = self.store.create(oid, size, self.node_id, primary=False)
                    except ValueError:
                        return False
                elif reply["size"] != size or not data:  # rewritten by a retry meanwhile
                    return self._abort_copy(oid, offset)
                copy_into(self.arena.view(offset + at, len(data)), memoryview(data))
                at += len(data)
        except BaseException:
            self._abort_copy(oid, offset)
            raise
        self.store.seal(oid, self.node_id)
        if reply.get("owner") in self.dead_owners:
            self.store.delete(oid)
            return False
        if reply.get("owner"):
            self.owner_of[oid] = reply["owner"]
        return True

    def _abort_copy(self, oid: bytes, offset: int | None) -> bool:
        if offset is not None:
            self.store.abort(oid, self.node_id)
        return False

    def _on_holds(self, conn: Connection, h: dict[str, Any]) -> None:
        """An owner whose primary copies died with their node asks which of them this store
        still has as copies."""
        conn.reply(h, {"t": "holds", "oids": [o for o in h["oids"] if self.store.contains(o)]})

    def _on_promote(self, conn: Connection, h: dict[str, Any]) -> None:
        """Make these copies primary; ``copies`` names the other nodes that hold one, so they
        are deleted with it, as they were with the lost primary."""
        promoted = [oid for oid in h["oids"] if self.store.promote(oid)]
        for oid in promoted:
            others = h["copies"].get(oid, ())
            if others:
                self.copies.setdefault(oid, set()).update(others)
        conn.reply(h, {"t": "promoted", "oids": promoted})

    def _on_drop_copies(self, conn: Connection, h: dict[str, Any]) -> None:
        """Delete every secondary copy here, as eviction under pressure would (testing)."""
        copies = self.store.secondary_copies()
        self._delete(copies)
        conn.reply(h, {"t": "dropped", "count": len(copies)})

    def _on_fetch(self, conn: Connection, h: dict[str, Any]) -> None:
        oid = h["oid"]
        client = f"fetch:{conn.peer}"
        try:
            found = self.store.get(oid, client)
        except ObjectStoreFullError as exc:
            conn.reply(h, {"t": "fetched", "full": full_fields(exc)})
            return
        except OSError:
            found = None
        if found is None:
            conn.reply(h, {"t": "fetched", "missing": True})
            return
        offset, size = found
        at = min(h.get("at", 0), size)
        length = min(h.get("len", size), size - at)
        try:
            data = bytes(self.arena.view(offset + at, length))
        finally:
            self.store.release(oid, client)
        self.copies.setdefault(oid, set()).add(conn.peer or "")
        conn.reply(h, {"t": "fetched", "owner": self.owner_of.get(oid), "size": size}, data)
