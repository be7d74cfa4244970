"""What tests may read of the runtime's bookkeeping, without reaching into its objects.

Each function reads one thing of this process's core worker (its ownership table, memory
store, lineage, submitter) or asks one node manager, and returns a snapshot that a test can
compare: plain values or frozen dataclasses, never the live internal objects. A refactor of the
runtime changes this module, not the tests that use it.

    from memlab.testing import owner_entry, store_stats

    ref = memlab.put(np.ones(1 << 20))
    assert owner_entry(ref).local == 1
    assert store_stats("node-0")["num_objects"] == 1
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from memlab.runtime.context import require_core

if TYPE_CHECKING:
    from memlab.actor import ActorHandle
    from memlab.runtime.coreworker.core_worker import CoreWorker
    from memlab.runtime.coreworker.object_ref import ObjectRef

__all__ = [
    "LineageStats",
    "OwnerEntry",
    "actor_id",
    "arena_bounds",
    "blocked_in_get",
    "flush_releases",
    "lineage_stats",
    "memory_store_size",
    "owner_entry",
    "shipped_functions",
    "store_object",
    "store_stats",
    "table_size",
    "worker_pool",
]

NODE_TIMEOUT = 10.0  # seconds to wait for a node manager's answer


@dataclass(frozen=True, slots=True)
class OwnerEntry:
    """This process's ownership-table entry for one object, as it was when read."""

    owned: bool
    owner: str
    local: int  # ObjectRef instances in this process
    submitted: int  # pending tasks that take it as an argument
    borrowers: dict[str, int]  # process -> registrations (the owner's side)
    contains: tuple[str, ...]  # hex ids of the refs inside its value
    location: str | None  # node of its primary copy; None for an inline value
    size: int | None
    value_freed: bool  # kept only for lineage: the value itself is gone


@dataclass(frozen=True, slots=True)
class LineageStats:
    """This owner's kept lineage: the task specs it may re-run to rebuild lost objects."""

    kept_tasks: int
    kept_bytes: int
    budget: int  # ``lineage_budget``: bytes of specs kept at most


def _core() -> CoreWorker:
    return require_core("memlab.testing introspection")


def _ask_node(node_id: str, header: dict[str, Any]) -> dict[str, Any]:
    reply, _ = _core().conn_to(node_id).request(header, timeout=NODE_TIMEOUT)
    return dict(reply)


def owner_entry(ref: ObjectRef[Any]) -> OwnerEntry | None:
    """This process's entry for ``ref`` (owned or borrowed), or None once it is released."""
    core = _core()
    with core.lock:
        entry = core.table.get(ref.binary)
        if entry is None:
            return None
        return OwnerEntry(
            owned=entry.owned,
            owner=entry.owner,
            local=entry.local,
            submitted=entry.tasks,
            borrowers=dict(entry.borrowers),
            contains=tuple(oid.hex() for oid in entry.contains),
            location=entry.location,
            size=entry.size,
            value_freed=entry.value_freed,
        )


def table_size() -> int:
    """Entries in this process's ownership table (0 once every ref it knew is released)."""
    return len(_core().table.entries)


def memory_store_size() -> int:
    """Values (or their placeholders) in this process's in-memory store."""
    return len(_core().mstore.slots)


def lineage_stats() -> LineageStats:
    """How much lineage this process keeps as an owner, and its byte budget."""
    recovery = _core().recovery
    with _core().lock:
        return LineageStats(len(recovery.kept), recovery.kept_bytes, recovery.budget)


def shipped_functions() -> int:
    """Distinct functions and actor classes this process has registered to ship to workers."""
    return len(_core().submitter.functions)


def blocked_in_get(ref: ObjectRef[Any]) -> bool:
    """True while a thread of this process waits in ``get``/``wait`` for ``ref``'s value (its
    waiter is registered: the value's arrival will wake it)."""
    core = _core()
    with core.lock:
        slot = core.mstore.slots.get(ref.binary)
        return slot is not None and bool(slot.waiters)


def actor_id(handle: ActorHandle) -> str:
    """The actor's id, in hex, as ``memlab.state.actors()`` and events name it."""
    return handle._actor_id.hex()


def flush_releases() -> None:
    """Send this process's pending releases of zero-copy views to its node's store now
    (they are batched otherwise), so what the store reports next counts them."""
    store = _core().store
    if store is not None:
        store.flush()


def arena_bounds() -> tuple[int, int]:
    """[start, end) addresses of this process's mapping of its node's shared-memory arena, to
    check that a value is read in place."""
    store = _core().store
    if store is None:
        raise RuntimeError("this process has no shared-memory store mapped")
    arena = store.arena
    base = int(arena.readonly_array(0, 1).__array_interface__["data"][0])
    return base, base + int(arena.capacity)


def store_stats(node_id: str = "node-0") -> dict[str, Any]:
    """The node manager's own account of its store: ``num_objects``, ``used``,
    ``spilled_bytes``, … (not the event-fed ``memlab.state`` model)."""
    return _ask_node(node_id, {"t": "stats"})


def store_object(node_id: str, ref: ObjectRef[Any] | bytes) -> dict[str, Any]:
    """What ``node_id``'s store knows of ``ref`` (or an object id): its owner and writer, and
    ``size`` and ``primary`` when it holds a copy (no ``size`` key: it holds nothing)."""
    oid = ref if isinstance(ref, bytes) else ref.binary
    return _ask_node(node_id, {"t": "object_info", "oid": oid})


def worker_pool(node_id: str = "node-0") -> dict[str, Any]:
    """The node manager's worker pool: ``size``, ``target``, ``idle``, ``retired``, ``refused``."""
    return _ask_node(node_id, {"t": "pool"})
