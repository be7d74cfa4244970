"""The node manager's object store: which object lives where in the arena, and who pins it.

Owns the directory of one node's objects (id -> region, seal state, pins, recency) and the
policy for making room: evict, spill, restore. Client processes never call this; they ask the
node manager, which calls it, and then read and write the arena at the offsets it returns.

Lifecycle of one object::

    create ──► unsealed (creator pinned) ──seal──► sealed ──get/release──► pinned / unpinned
      │             │abort / creator disconnects   │ full: secondary ──► evicted (gone)
      │             ▼                              │ full: primary ──► spilled ──get──► sealed
      │           freed                            │delete
      └────────────────────────────────────────────▼
                         deleted: gone from the directory at once; its region is freed when
                         its last pin is released ("zombie" until then)

Invariants (checked by ``validate()``):
    1. A region is never reused while any process may still have a zero-copy view of it:
       pinned, unsealed and deleted-but-pinned objects are never evicted, spilled or freed.
    2. Every allocated region belongs to exactly one object (live or zombie), and vice versa.
    3. A spilled object has a spill file and no region; a zombie always has a pin.
    4. Pin counts are per client and positive; a client's pins die with it (``disconnect``).

Memory trade-off: by default a freed region stays resident (its pages are already faulted in
every process that wrote or read it, so the next put of that size runs at memcpy speed instead
of re-faulting: about 9 GB/s against 1 GB/s for 512 MiB here). The arena's footprint is bounded
by its capacity and returned to the OS at shutdown. With ``release_threshold`` set, freed
regions at least that large are handed back at once (``Arena.release_memory``);
``RELEASE_MEMORY_MIN_BYTES`` is the suggested value.

Thread safety: every public method takes one internal re-entrant lock, so an ``emit``
callback may call ``stats()`` without deadlocking. Spill and restore file I/O runs under that
lock: a large spill stalls other store calls for its duration (simple and safe; the node
manager may move it off-lock later).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from memlab.exceptions import ObjectStoreFullError
from memlab.store.allocator import Allocator
from memlab.store.arena import Arena
from memlab.store.spill import SpillDir

__all__ = ["RELEASE_MEMORY_MIN_BYTES", "ObjectStore"]

RELEASE_MEMORY_MIN_BYTES = 64 * 1024 * 1024

_log = logging.getLogger(__name__)


def _mib(n: int) -> str:
    """Bytes for an error message: ``512 B``, ``1.0 KiB``, ``40.0 MiB``, ``1.2 GiB``."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} B"


@dataclass(eq=False)
class _Entry:
    object_id: bytes
    size: int
    creator: str
    primary: bool
    offset: int | None
    sealed: bool = False
    spilled: bool = False
    deleted: bool = False
    pins: dict[str, int] = field(default_factory=dict)


class ObjectStore:
    """Bookkeeping for one node's arena: create/seal/get/release/delete, eviction, spilling.

    Args:
        arena: The node's arena (created by the caller, who also closes and unlinks it).
        spill_dir: Directory for spill files (created on the first spill, mode 0700).
        emit: ``emit(kind, **fields)`` for ``object.spilled``, ``object.restored`` and
            ``object.evicted`` events, with ``object_id`` (hex), ``node`` and ``size``.
            Called under the store's lock; it must not block.
        node_id: Node name put in events.
    """

    def __init__(
        self,
        arena: Arena,
        spill_dir: str,
        emit: Callable[..., None] | None = None,
        node_id: str = "n0",
        release_threshold: int | None = None,
    ) -> None:
        self.arena = arena
        self.release_threshold = release_threshold
        self.node_id = node_id
        self.spill_dir = spill_dir
        self._emit_fn = emit
        self._spill = SpillDir(spill_dir)
        self._alloc = Allocator(arena.capacity)
        self._lock = threading.RLock()
        self._objects: dict[bytes, _Entry] = {}
        self._zombies: dict[bytes, list[_Entry]] = {}
        # Sealed, in-memory, live objects; least recently used first.
        self._lru: OrderedDict[bytes, None] = OrderedDict()
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"ObjectStore(node={self.node_id!r}, objects={len(self._objects)}, "
            f"used={self._alloc.used}/{self._alloc.capacity})"
        )

    # -- object lifecycle ------------------------------------------------------------------

    def create(self, object_id: bytes, size: int, client: str, primary: bool = True) -> int:
        """Allocate an unsealed object pinned by ``client`` and return its offset.

        Makes room if needed: evicts unpinned secondary copies, then spills unpinned sealed
        primary copies, least recently used first.

        Raises:
            ValueError: ``object_id`` is already in the store, or ``size`` is negative.
            ObjectStoreFullError: ``size`` exceeds the capacity, or pinned and unsealed
                objects leave no contiguous room even after evicting and spilling the rest.
            RuntimeError: the store is closed.
        """
        with self._lock:
            self._check_open()
            if size < 0:
                raise ValueError(f"object size must be >= 0, got {size}")
            if object_id in self._objects:
                raise ValueError(
                    f"object {object_id.hex()} already exists in this store; object ids are "
                    "unique, so delete() the old copy before creating it again"
                )
            offset = self._allocate(size)
            entry = _Entry(object_id, size, client, primary, offset, pins={client: 1})
            self._objects[object_id] = entry
            return offset

    def seal(self, object_id: bytes, client: str) -> None:
        """Make the object immutable and readable, and drop the creator's pin.

        Sealing an object that was deleted while its creator was writing just drops the pin.

        Raises:
            ValueError: no unsealed object ``object_id`` created by ``client`` exists.
        """
        with self._lock:
            entry = self._unsealed_of(object_id, client, "seal")
            entry.sealed = True
            self._drop_pin(entry, client)
            if not entry.deleted:
                self._lru[object_id] = None

    def abort(self, object_id: bytes, client: str) -> None:
        """Free an object its creator gave up on before sealing (unknown ids are ignored).

        Raises:
            ValueError: the object is sealed (use ``delete``) or was created by another client.
        """
        with self._lock:
            if object_id not in self._objects and not self._zombies.get(object_id):
                return
            entry = self._unsealed_of(object_id, client, "abort")
            self._abort(entry)

    def get(self, object_id: bytes, client: str) -> tuple[int, int] | None:
        """Pin a sealed object for ``client`` and return ``(offset, size)``.

        Each call adds one pin, so each needs one ``release``. A spilled object is restored
        first (which may spill others) and ``object.restored`` is emitted.

        Returns:
            ``(offset, size)``, or ``None`` if the object is absent or not sealed yet.

        Raises:
            ObjectStoreFullError: the object is spilled and there is no room to restore it.
            OSError: its spill file cannot be read back.
        """
        with self._lock:
            self._check_open()
            entry = self._objects.get(object_id)
            if entry is None or not entry.sealed:
                return None
            if entry.spilled:
                self._restore(entry)
            assert entry.offset is not None
            entry.pins[client] = entry.pins.get(client, 0) + 1
            self._lru.move_to_end(object_id)
            return entry.offset, entry.size

    def release(self, object_id: bytes, client: str) -> None:
        """Drop one of ``client``'s pins on the object; pins it does not hold are ignored.

        Releasing the last pin of a deleted object frees its region. A creator's pin on an
        unsealed object is dropped only by ``seal``, ``abort`` or ``disconnect``.
        """
        with self._lock:
            entry = self._objects.get(object_id)
            if entry is not None and entry.sealed and client in entry.pins:
                self._drop_pin(entry, client)
                return
            for zombie in self._zombies.get(object_id, ()):
                if zombie.sealed and client in zombie.pins:
                    self._drop_pin(zombie, client)
                    return

    def delete(self, object_id: bytes) -> None:
        """Remove the object from the directory at once (idempotent).

        Its spill file is removed; its region is freed now if unpinned, otherwise when the
        last pin is released, so no zero-copy view ever sees reused memory.
        """
        with self._lock:
            entry = self._objects.pop(object_id, None)
            if entry is None:
                return
            entry.deleted = True
            self._lru.pop(object_id, None)
            if entry.spilled:
                self._spill.remove(object_id)
                entry.spilled = False
            elif entry.pins:
                self._zombies.setdefault(object_id, []).append(entry)
            else:
                self._free_region(entry)

    def disconnect(self, client: str) -> None:
        """Forget a client that died or left: drop all its pins, abort its unsealed creates."""
        with self._lock:
            for entry in list(self._objects.values()):
                if not entry.sealed and entry.creator == client:
                    self._abort(entry)
                elif client in entry.pins:
                    entry.pins.pop(client)
            for zombies in list(self._zombies.values()):
                for zombie in list(zombies):
                    if client in zombie.pins:
                        zombie.pins[client] = 1  # so the one drop below removes them all
                        self._drop_pin(zombie, client)

    # -- queries ---------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """Arena capacity in bytes."""
        return self._alloc.capacity

    def contains(self, object_id: bytes) -> bool:
        """Whether a sealed object ``object_id`` is here (in memory or spilled)."""
        with self._lock:
            entry = self._objects.get(object_id)
            return entry is not None and entry.sealed

    def promote(self, object_id: bytes) -> bool:
        """Make this store's sealed secondary copy of ``object_id`` its primary one (kept, and
        spilled rather than evicted under pressure). False if no sealed copy is here."""
        with self._lock:
            entry = self._objects.get(object_id)
            if entry is None or not entry.sealed or entry.deleted:
                return False
            entry.primary = True
            return True

    def secondary_copies(self) -> list[bytes]:
        """Ids of the sealed secondary copies here (copies of objects whose primary is on
        another node)."""
        with self._lock:
            return [oid for oid, e in self._objects.items() if not e.primary and e.sealed]

    def stats(self) -> dict[str, int]:
        """A snapshot of the store's occupancy.

        Returns:
            ``capacity``, ``used`` (allocated bytes, including deleted-but-pinned objects),
            ``spilled_bytes``, ``num_objects`` (live, incl. unsealed and spilled),
            ``num_spilled``, ``num_pinned`` (objects with a pin, incl. deleted ones) and
            ``pinned_bytes`` (bytes that cannot be evicted or spilled now).
        """
        with self._lock:
            held = [e for e in self._all_entries() if e.pins]
            spilled = [e.size for e in self._objects.values() if e.spilled]
            return {
                "capacity": self._alloc.capacity,
                "used": self._alloc.used,
                "spilled_bytes": sum(spilled),
                "num_objects": len(self._objects),
                "num_spilled": len(spilled),
                "num_pinned": len(held),
                "pinned_bytes": sum(self._block(e) for e in held),
            }

    def object_info(self, object_id: bytes) -> dict[str, Any] | None:
        """``size``, ``sealed``, ``spilled``, ``primary``, ``pins`` and ``offset`` of a live object.

        Returns ``None`` for unknown or deleted objects.
        """
        with self._lock:
            entry = self._objects.get(object_id)
            if entry is None:
                return None
            return {
                "size": entry.size,
                "sealed": entry.sealed,
                "spilled": entry.spilled,
                "primary": entry.primary,
                "pins": dict(entry.pins),
                "offset": entry.offset,
            }

    def close(self) -> None:
        """Delete every spill file and the spill directory if empty (idempotent).

        Spilled objects are forgotten; in-memory ones stay until the arena goes away. The
        arena itself belongs to the caller.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            spilled = [oid for oid, e in self._objects.items() if e.spilled]
            for oid in spilled:
                del self._objects[oid]
            self._spill.remove_all(spilled)

    def validate(self) -> None:
        """Check the invariants in the module docstring.

        Raises:
            AssertionError: the bookkeeping is inconsistent (a bug in this module).
        """
        with self._lock:
            self._alloc.validate()
            regions: dict[int, _Entry] = {}
            for entry in self._all_entries():
                assert all(n > 0 for n in entry.pins.values()), f"bad pins {entry}"
                if not entry.sealed:
                    assert entry.pins.get(entry.creator, 0) >= 1, (
                        f"unsealed, no creator pin {entry}"
                    )
                if entry.spilled:
                    assert entry.offset is None, f"spilled object holds a region {entry}"
                    path = self._spill.file_for(entry.object_id)
                    assert os.path.exists(path), f"spilled object has no file {entry}"
                    continue
                assert entry.offset is not None, f"in-memory object without region {entry}"
                assert entry.offset not in regions, f"two objects share offset {entry.offset}"
                regions[entry.offset] = entry
                assert self._alloc.block_size(entry.offset) >= entry.size
            assert set(regions) == set(self._alloc.allocations()), "orphan or unowned region"
            for zombies in self._zombies.values():
                for zombie in zombies:
                    assert zombie.deleted and zombie.pins, f"unpinned zombie holds {zombie}"
            expected_lru = {oid for oid, e in self._objects.items() if e.sealed and not e.spilled}
            assert set(self._lru) == expected_lru, "LRU disagrees with sealed in-memory objects"

    # -- internals (lock held) -------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(
                f"object store of node {self.node_id} is closed; start a new node manager"
            )

    def _all_entries(self) -> list[_Entry]:
        entries = list(self._objects.values())
        for zombies in self._zombies.values():
            entries.extend(zombies)
        return entries

    def _block(self, entry: _Entry) -> int:
        return 0 if entry.offset is None else self._alloc.block_size(entry.offset)

    def _unsealed_of(self, object_id: bytes, client: str, verb: str) -> _Entry:
        candidates = [self._objects[object_id]] if object_id in self._objects else []
        candidates += self._zombies.get(object_id, [])
        for entry in candidates:
            if not entry.sealed and entry.creator == client:
                return entry
        raise ValueError(
            f"{verb}({object_id.hex()}) by {client!r}: no unsealed object with this id created "
            "by this client; only the creator may seal or abort, once, before sealing"
        )

    def _abort(self, entry: _Entry) -> None:
        entry.pins.clear()
        if entry.deleted:
            self._forget_zombie(entry)
        else:
            del self._objects[entry.object_id]
        self._free_region(entry)

    def _drop_pin(self, entry: _Entry, client: str) -> None:
        n = entry.pins[client] - 1
        if n:
            entry.pins[client] = n
        else:
            del entry.pins[client]
        if entry.deleted and not entry.pins:
            self._forget_zombie(entry)
            self._free_region(entry)

    def _forget_zombie(self, entry: _Entry) -> None:
        zombies = self._zombies[entry.object_id]
        zombies.remove(entry)
        if not zombies:
            del self._zombies[entry.object_id]

    def _free_region(self, entry: _Entry) -> None:
        assert entry.offset is not None
        block = self._alloc.block_size(entry.offset)
        self._alloc.free(entry.offset)
        if self.release_threshold is not None and block >= self.release_threshold:
            self.arena.release_memory(entry.offset, block)
        entry.offset = None

    def _allocate(self, size: int) -> int:
        offset = self._alloc.allocate(size)
        if offset is not None:
            return offset
        need = self._alloc.round_up(size)
        if need > self._alloc.capacity:
            raise self._full(
                size, f"{size} bytes exceed the store's whole capacity of {self.capacity} bytes"
            )
        evictable = [self._objects[oid].offset for oid in self._lru if not self._objects[oid].pins]
        if self._alloc.largest_free_if_freed(evictable) < need:
            raise self._full(size, self._pinned_detail())
        spill_error: OSError | None = None
        victims = [self._objects[oid] for oid in self._lru]
        victims = [e for e in victims if not e.primary] + [e for e in victims if e.primary]
        for victim in victims:
            if victim.pins:
                continue
            if victim.primary:
                try:
                    self._spill_out(victim)
                except OSError as exc:
                    spill_error = exc
                    continue
            else:
                self._evict(victim)
            offset = self._alloc.allocate(size)
            if offset is not None:
                return offset
        detail = self._pinned_detail()
        if spill_error is not None:
            detail += f"; spilling to {self._spill.path} failed: {spill_error}"
        raise self._full(size, detail)

    def _pinned_detail(self) -> str:
        """What holds the space that cannot be spilled, with sizes and by whom: a full store's
        error must name it, or users blame the refs they hold."""
        held = [e for e in self._all_entries() if e.pins]
        unsealed = [e for e in held if not e.sealed]
        deleted = [e for e in held if e.sealed and e.deleted]
        viewed = [e for e in held if e.sealed and not e.deleted]
        by_client: dict[str, int] = {}
        for entry in deleted + viewed:
            for client in entry.pins:
                by_client[client] = by_client.get(client, 0) + self._block(entry)
        who = ", ".join(
            f"{c} {_mib(n)}" for c, n in sorted(by_client.items(), key=lambda kv: -kv[1])[:6]
        )
        return (
            f"{len(held)} objects are pinned: {len(unsealed)} unsealed "
            f"({_mib(sum(map(self._block, unsealed)))} being written), {len(deleted)} deleted but "
            f"still mapped ({_mib(sum(map(self._block, deleted)))}, freed when their last view "
            f"goes), {len(viewed)} read through live zero-copy views or a running task's "
            f"arguments ({_mib(sum(map(self._block, viewed)))})"
            + (f"; views held by {who}" if who else "")
        )

    def _full(self, size: int, detail: str) -> ObjectStoreFullError:
        pinned = sum(self._block(e) for e in self._all_entries() if e.pins)
        return ObjectStoreFullError(
            requested=size,
            capacity=self._alloc.capacity,
            used=self._alloc.used,
            pinned=pinned,
            detail=detail,
        )

    def _evict(self, entry: _Entry) -> None:
        del self._objects[entry.object_id]
        del self._lru[entry.object_id]
        self._free_region(entry)
        self._emit("object.evicted", entry)

    def _spill_out(self, entry: _Entry) -> None:
        assert entry.offset is not None
        view = self.arena.view(entry.offset, entry.size)
        try:
            self._spill.write(entry.object_id, view)
        finally:
            view.release()
        del self._lru[entry.object_id]
        self._free_region(entry)
        entry.spilled = True
        self._emit("object.spilled", entry)

    def _restore(self, entry: _Entry) -> None:
        offset = self._allocate(entry.size)
        view = self.arena.view(offset, entry.size)
        try:
            self._spill.read_into(entry.object_id, view)
        except BaseException:
            self._alloc.free(offset)
            raise
        finally:
            view.release()
        self._spill.remove(entry.object_id)
        entry.offset = offset
        entry.spilled = False
        self._lru[entry.object_id] = None
        self._emit("object.restored", entry)

    def _emit(self, kind: str, entry: _Entry) -> None:
        if self._emit_fn is None:
            return
        try:
            self._emit_fn(kind, object_id=entry.object_id.hex(), node=self.node_id, size=entry.size)
        except Exception:
            # An observer must not corrupt the store's bookkeeping mid-operation.
            _log.exception("event callback failed for %s of %s", kind, entry.object_id.hex())
