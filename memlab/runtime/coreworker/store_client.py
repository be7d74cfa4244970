"""Client side of a node's shared-memory object store.

Owns this process's mapping of its node's arena and the pins it holds. Writing a value is
create (the node manager allocates) -> write in place -> seal, both acknowledged, so the value is
readable by every process before the owner hears that it exists. Reading pins the region at the
node manager and returns a zero-copy, read-only view; the pin is released (batched) when the
last Python object over that view dies (Invariant 3: a region is never reused while viewed).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from memlab.exceptions import ObjectStoreFullError, OwnerDiedError
from memlab.protocol.errors import raise_if_full
from memlab.serialization import SerializedValue, deserialize
from memlab.store.arena import Arena

#: How long a read waits for room to restore or copy an existing object before it raises
#: ObjectStoreFullError (space held by pinned views and running tasks comes back as they end).
ROOM_WAIT = 10.0


def _waiting_for_room(attempt: Callable[[], Any], wait: float) -> Any:
    """``attempt()``, again while it finds the store full of pinned objects, up to ``wait``
    seconds. A value too big for the store, or a store full with nothing pinned, never waits."""
    deadline = time.monotonic() + wait
    pause = 0.005
    while True:
        try:
            return attempt()
        except ObjectStoreFullError as exc:
            # Only pins come back by themselves: with none, the store is full for good (too
            # big, or spilling fails), and waiting would only delay the error.
            if (
                exc.requested > exc.capacity
                or not exc.pinned
                or time.monotonic() + pause > deadline
            ):
                raise
        time.sleep(pause)
        pause = min(2 * pause, 0.2)


class StoreClient:
    def __init__(self, node_id: str, arena_path: str, conn_getter: Any) -> None:
        self.node_id = node_id
        self.arena_path = arena_path
        self._conn_getter = conn_getter  # () -> Connection to the node manager
        self._arena: Arena | None = None
        self._lock = threading.Lock()
        self._releases: list[bytes] = []
        self._flush_lock = threading.Lock()  # two flushers must not send one batch twice

    @property
    def arena(self) -> Arena:
        if self._arena is None:
            with self._lock:
                if self._arena is None:
                    self._arena = Arena.attach(self.arena_path)
        return self._arena

    def write(self, oid: bytes, value: SerializedValue, owner: str, wait: float = 0.0) -> int:
        """Store ``value`` under ``oid`` for ``owner``; returns its size.

        Args:
            wait: Seconds to wait for room while the store is full of pinned objects (a task's
                result waits: other tasks' reads release their pins as they end; a ``put``
                does not: its caller's own views may be what holds the space).

        Raises:
            ObjectStoreFullError: even spilling cannot make room (after ``wait``), or the value
                is larger than the whole store.
        """
        conn = self._conn_getter()
        size = value.total_size
        reply = _waiting_for_room(
            lambda: raise_if_full(
                conn.request({"t": "create", "oid": oid, "size": size, "owner": owner})[0]
            ),
            wait,
        )
        if "owner_died" in reply:
            raise OwnerDiedError(oid.hex(), reply["owner_died"])
        offset = reply["offset"]
        try:
            value.write_to(self.arena.view(offset, size))
        except BaseException:
            conn.send({"t": "abort", "oid": oid})
            raise
        conn.request({"t": "seal", "oid": oid})
        return size

    def read(
        self, oid: bytes, node: str | None = None, wait: float = ROOM_WAIT
    ) -> tuple[bool, Any]:
        """``(True, value)`` read zero-copy from this node's store, or ``(False, None)`` if the
        copy is not there (lost).

        When the primary copy lives on another ``node``, this node's manager first pulls a
        secondary copy (once; later readers on this node find it in place). A copy that exists
        but has no room now (to be restored from spill, or copied here) is not lost: the read
        waits for room, up to ``wait`` seconds, as pinned views and running tasks release it.

        Raises:
            ObjectStoreFullError: still no room after ``wait`` seconds.
        """
        return _waiting_for_room(lambda: self._read_once(oid, node), wait)

    def _read_once(self, oid: bytes, node: str | None) -> tuple[bool, Any]:
        conn = self._conn_getter()
        if node is not None and node != self.node_id:
            reply, _ = conn.request({"t": "pull", "oid": oid, "from": node})
            if not raise_if_full(reply).get("ok"):
                return False, None
        reply, _ = conn.request({"t": "get", "oid": oid})
        if "offset" not in raise_if_full(reply):
            return False, None
        offset, size = reply["offset"], reply["size"]
        holder = self.arena.readonly_array(offset, size)
        weakref.finalize(holder, self._release_later, oid)
        return True, deserialize(holder.data, readonly_base=holder)

    def _release_later(self, oid: bytes) -> None:
        self._releases.append(oid)  # list.append is atomic; flushed by the housekeeping thread

    def has_pending(self) -> bool:
        """Whether releases wait for the next ``flush``."""
        return bool(self._releases)

    def flush(self) -> None:
        if not self._releases:
            return
        with self._flush_lock:
            batch, self._releases = self._releases, []
        if not batch:
            return
        try:
            self._conn_getter().send({"t": "release", "oids": batch})
        except Exception:  # the node is gone; its pins went with it
            pass

    def close(self) -> None:
        self.flush()
        if self._arena is not None:
            self._arena.close()
            self._arena = None
