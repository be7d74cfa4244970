"""Typed observability events and the per-process buffer that emits them.

Owns the event vocabulary (:data:`EVENT_KINDS`, :data:`EVENT_FIELDS`) and :class:`EventBuffer`,
the one object every process (driver, node manager, worker) uses to record state changes.

An event is a plain dict, cheap to build and msgpack-able::

    {"kind": "object.ready", "ts": 1700000000.5, "proc": "w-3f2a",
     "object_id": "3f2a...", "size": 80000000, "inline": False, "node": "node-0"}

``ts`` is ``time.time()`` in the emitting process, ``proc`` the emitting process id. Ids are
hex strings.

Events are coarse on the hot paths, because each one is built, shipped and folded: a task's
``task.submitted`` announces its return objects (their ``object.created``), its ``task.finished``
carries ``results``, ``[object_id, size, node]`` per return that became ready (their
``object.ready``; ``node`` None means inline in the owner), and a ``put`` sends one
``object.created`` with ``state="ready"``. A new owned object starts with one local ref; the
owner sends ``object.holders`` only when that changes, and one ``object.freed`` per flush
naming every object freed since the last (``object_ids``). A worker announces ``task.started``
at its next flush (every 10 ms) if the task still runs then; a shorter task's start travels in
its reply, and its end event (finished/failed) carries ``started_at`` and ``node`` instead.
Likewise the owner holds a task's ``task.submitted`` until its next flush: a task that finishes
before then is one ``task.finished`` whose ``submitted`` field carries the submission
(``{"submitted_at", "name", "owner", "returns", "deps", "call_site"}``; None otherwise).

Hot paths (submitting a task, its end, a ``put``) :meth:`EventBuffer.record` their events
positionally, as a tuple ``(kind, ts, *values)`` in :data:`EVENT_FIELDS` order, with ids as raw
bytes: no dict, no keyword arguments, no hex conversion on the runtime's threads. The collector
turns both shapes into the dict above with :func:`expand` (bytes ids become hex, ``proc`` comes
from the shipping process). Other paths :meth:`~EventBuffer.emit` dicts.

Sequences in events are tuples where the emitter builds them: Python's garbage collector stops
tracking a dict of atoms and tuples after a full pass, never one that holds a list, and events
live in the collector's log long enough to be scanned many times.

Kinds not in :data:`EVENT_KINDS` are legal (forward compatibility): readers keep them in the
log and otherwise ignore them.

Invariants:
    * ``emit`` never blocks on I/O and never raises; it sits on the task-submission and ``put``
      paths, so it does one bounds check and one ``deque.append``.
    * At most ``max_pending`` events wait in a buffer; beyond that new events are dropped and
      counted in ``dropped`` (overload loses events, it never slows tasks).
    * Single consumer: one thread drains a buffer (the process's event flusher or the driver's
      collector); any number of threads emit.

::

    emitting threads ──emit()──► deque (bounded by a length check) ──drain()──► one consumer
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

__all__ = ["EVENT_FIELDS", "EVENT_KINDS", "EventBuffer", "checked_kinds", "expand"]

_now = time.time  # a module global is found faster than the attribute lookup on ``time``

_OBJECT_COPY = ("object_id", "node", "size")
_ACTOR = ("actor_id", "name", "worker")

#: Fields each known kind carries besides ``kind``, ``ts`` and ``proc``.
EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    "task.submitted": ("task_id", "name", "owner", "returns", "deps", "call_site"),
    "task.started": ("task_id", "worker", "node", "attempt"),
    "task.finished": ("task_id", "worker", "attempt", "results", "started_at", "node", "submitted"),
    "task.failed": ("task_id", "worker", "attempt", "error", "started_at", "node"),
    "task.retried": ("task_id", "attempt", "reason"),
    "task.cancelled": ("task_id",),
    "object.created": ("object_id", "owner", "task_id", "call_site", "size", "state", "node"),
    "object.ready": ("object_id", "size", "inline", "node"),
    "object.holders": ("object_id", "local", "tasks", "contained_in", "borrowers"),
    "object.freed": ("object_ids",),
    "object.failed": ("object_id", "error"),
    "object.spilled": _OBJECT_COPY,
    "object.restored": _OBJECT_COPY,
    "object.evicted": _OBJECT_COPY,
    "object.lost": ("object_id",),
    "object.reconstructing": ("object_id",),
    "object.reconstructed": ("object_id",),
    "object.promoted": ("object_id", "node"),
    "worker.started": ("worker_id", "node", "pid"),
    "worker.died": ("worker_id", "node", "pid", "exitcode", "signal", "cause"),
    "node.started": ("node_id", "pid", "store_capacity"),
    "node.died": ("node_id",),
    "node.store": ("node_id", "store_used", "spilled_bytes", "num_objects"),
    "owner.died": ("owner",),
    "actor.created": (*_ACTOR, "owner"),
    "actor.restarting": _ACTOR,
    "actor.restarted": _ACTOR,
    "actor.died": _ACTOR,
}

#: Every kind the state model understands.
EVENT_KINDS: frozenset[str] = frozenset(EVENT_FIELDS)


def checked_kinds(kinds: Iterable[str]) -> list[str]:
    """``kinds`` as a sorted list, for a reader's filter.

    Raises:
        ValueError: If one is not a kind memlab emits (a typo would otherwise filter out
            everything, silently); the message lists the known kinds.
    """
    if isinstance(kinds, str):
        kinds = [kinds]  # one kind passed bare, not its letters
    wanted = sorted(set(kinds))
    unknown = [k for k in wanted if k not in EVENT_KINDS]
    if unknown:
        raise ValueError(
            f"unknown event kinds {unknown}; use some of: {', '.join(sorted(EVENT_KINDS))}"
        )
    return wanted


class EventBuffer:
    """A bounded, never-blocking queue of events emitted by one process.

    Attributes:
        proc: The emitting process id stamped on every event (``"driver"``, ``"w-3f2a"``).
        enabled: When ``False``, :meth:`emit` returns at once (used to measure event overhead).
        max_pending: How many undrained events may wait before new ones are dropped.
    """

    def __init__(self, proc: str, max_pending: int = 100_000) -> None:
        """Create an empty buffer.

        Args:
            proc: Process id stamped as ``"proc"`` on every event.
            max_pending: Bound on undrained events; must be positive.

        Raises:
            ValueError: If ``max_pending`` is not positive.
        """
        if max_pending <= 0:
            raise ValueError(
                f"max_pending must be a positive number of events, got {max_pending!r}; "
                "pass e.g. max_pending=100_000"
            )
        self.proc = proc
        self.max_pending = max_pending
        self.enabled = True
        self._pending: deque[Any] = deque()  # dicts (emit) and positional tuples (record)
        # Records set aside by key until the next drain or until taken back (see hold).
        self._held: dict[Any, tuple[Any, ...]] = {}
        self._held_lock = threading.Lock()
        self._dropped = 0
        # Taken only on the overload path, so counting drops stays exact without taxing emit.
        self._drop_lock = threading.Lock()

    @property
    def dropped(self) -> int:
        """How many events were dropped because ``max_pending`` were already waiting."""
        return self._dropped

    def __len__(self) -> int:
        return len(self._pending) + len(self._held)

    def emit(self, kind: str, **fields: Any) -> None:
        """Record one event; a no-op when disabled, a counted drop when full.

        Args:
            kind: Event kind, normally one of :data:`EVENT_KINDS`.
            **fields: The kind's fields (see :data:`EVENT_FIELDS`); values must be msgpack-able.
        """
        # One combined test on the fast path; ``fields`` is a fresh dict owned by this call, so
        # stamping it in place avoids a copy.
        if self.enabled and len(self._pending) < self.max_pending:
            fields["kind"] = kind
            if "ts" not in fields:  # a deferred event keeps the time it happened
                fields["ts"] = _now()
            fields["proc"] = self.proc
            self._pending.append(fields)
        elif self.enabled:
            with self._drop_lock:
                self._dropped += 1

    def record(self, kind: str, *values: Any) -> None:
        """Record one hot-path event positionally; like :meth:`emit`, never blocks or raises.

        Args:
            kind: One of :data:`EVENT_KINDS`.
            *values: Every field of ``EVENT_FIELDS[kind]``, in that order (None where unknown);
                ids may be raw bytes (they become hex in :func:`expand`).
        """
        if self.enabled and len(self._pending) < self.max_pending:
            self._pending.append((kind, _now(), *values))
        elif self.enabled:
            with self._drop_lock:
                self._dropped += 1

    def hold(self, key: Any, kind: str, *values: Any) -> None:
        """Record like :meth:`record`, but keep the record aside under ``key`` until the next
        drain, so that a later event about the same thing can :meth:`take` it and carry it.

        A task's submission is held: a task that ends before the next drain (most do) is then
        shipped, logged and folded as one ``task.finished`` event instead of two.
        """
        if not self.enabled:
            return
        if len(self._pending) + len(self._held) >= self.max_pending:
            with self._drop_lock:
                self._dropped += 1
            return
        record = (kind, _now(), *values)
        with self._held_lock:
            earlier = self._held.pop(key, None)
            self._held[key] = record
        if earlier is not None:  # held twice before a drain: the first is an event of its own
            self._pending.append(earlier)

    def take(self, key: Any) -> tuple[Any, ...] | None:
        """The record held under ``key``, removed from the buffer; None if already drained."""
        if not self._held:
            return None
        with self._held_lock:
            return self._held.pop(key, None)

    def release(self, key: Any) -> None:
        """Queue the record held under ``key`` (if any) now, before events recorded after it."""
        record = self.take(key)
        if record is not None:
            self._pending.append(record)

    def drain(self) -> list[Any]:
        """Take every held and pending event.

        Safe against concurrent :meth:`emit` calls without a lock: ``popleft`` and ``append``
        on a deque are atomic, and events emitted while draining stay for the next drain.
        Only one thread may drain a given buffer.

        Returns:
            Held records first (each is older than every event recorded after it), then the
            pending ones in emission order: dicts (:meth:`emit`) and tuples (:meth:`record`,
            :meth:`hold`); :func:`expand` makes them all dicts.
        """
        held: list[Any] = []
        if self._held:
            with self._held_lock:
                held, self._held = list(self._held.values()), {}
        pending = self._pending
        popleft = pending.popleft
        # Exactly this many are present: emitters only add, and we are the only consumer.
        return held + [popleft() for _ in range(len(pending))]


def _one(value: Any) -> Any:
    return value.hex() if type(value) is bytes else value


def _many(values: Any) -> Any:
    return tuple([v.hex() if type(v) is bytes else v for v in values])


def _results(values: Any) -> Any:
    return tuple([(o.hex() if type(o) is bytes else o, size, node) for o, size, node in values])


def _submission(record: Any) -> Any:
    """A held ``task.submitted`` record carried by its task's end: its fields, as a dict."""
    _, ts, _, name, owner, returns, deps, call_site = record
    return {
        "submitted_at": ts,
        "name": name,
        "owner": owner,
        "returns": _many(returns),
        "deps": _many(deps),
        "call_site": call_site,
    }


# Fields that carry ids (or sequences of them) and may arrive as raw bytes, with the function
# that makes them hex: one per shape, so the hot kinds convert without generic recursion.
_ID_CONVERTERS: dict[str, Any] = {
    "task_id": _one,
    "object_id": _one,
    "returns": _many,
    "deps": _many,
    "object_ids": _many,
    "contained_in": _many,
    "results": _results,
    "submitted": _submission,
}
_ID_FIELDS: dict[str, tuple[tuple[str, Any], ...]] = {
    kind: tuple((f, _ID_CONVERTERS[f]) for f in fields if f in _ID_CONVERTERS)
    for kind, fields in EVENT_FIELDS.items()
}


def _hex(value: Any) -> Any:
    """Any value with bytes ids in it (a malformed record's values), made hex throughout."""
    kind = type(value)
    if kind is bytes:
        return value.hex()
    if kind is tuple:
        return tuple([_hex(v) for v in value])
    return value


def expand(events: list[Any], proc: str) -> list[dict[str, Any]]:
    """Turn a drained batch into event dicts: the shape the state model folds and readers see.

    A positional record ``(kind, ts, *values)`` becomes ``{"kind", "ts", "proc", *fields}``; a
    record whose values do not match its kind's fields keeps them under ``"values"`` (the model
    then counts it malformed). In every event, bytes ids (and bytes inside id sequences) become
    hex strings; an id field of the wrong shape is left as it is, for the model to count.

    Args:
        events: Dicts and tuples as drained from one process's :class:`EventBuffer`.
        proc: The process that emitted them (stamped where the event does not say).
    """
    out: list[dict[str, Any]] = []
    append = out.append
    fields_of = EVENT_FIELDS.get
    ids_of = _ID_FIELDS.get
    for event in events:
        if type(event) is tuple:
            kind = event[0]
            fields = fields_of(kind)
            if fields is not None and len(event) == len(fields) + 2:
                expanded = dict(zip(fields, event[2:]))
            else:
                expanded = {"values": _hex(event[2:])}
            expanded["kind"] = kind
            expanded["ts"] = event[1]
            expanded["proc"] = proc
        elif type(event) is dict:
            expanded = event
            if "proc" not in expanded:
                expanded["proc"] = proc
        else:
            continue
        for name, convert in ids_of(expanded.get("kind"), ()):  # type: ignore[arg-type]
            value = expanded.get(name)
            if value is not None and type(value) is not str and type(value) is not dict:
                try:
                    expanded[name] = convert(value)
                except (TypeError, ValueError):
                    pass
        append(expanded)
    return out
