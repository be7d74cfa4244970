"""Read-only snapshots and subscriptions of the running session: the front ends' only source.

Widgets, magics, the web dashboard and the JupyterLab panel read this module and nothing else,
so they can be tested against a fake runtime. Every function asks the session's collector
process (see ``memlab.runtime.events.collector``), after shipping the driver's pending events, and
returns fresh copies that the caller may keep and mutate. Without a running runtime each raises
``RuntimeNotStartedError``; with one started with ``events=False``, ``EventsUnavailableError``.

Records (ids are hex strings; process ids look like ``"driver"``, ``"w-3f2a"``, ``"node-0"``):

``objects()`` — live objects (freed ones are gone), each::

    object_id    str
    owner        str             process that created the ref and keeps its metadata
    size         int | None      bytes; None while pending
    state        str             "pending" | "ready" | "spilled" | "lost" | "reconstructing"
                                 | "failed"
    locations    list[str]       node ids whose store holds a copy (primary first), or
                                 "owner:<proc>" for a small value inlined in the owner's memory
    inline       bool            the value lives in the owner's memory, not a node store
    call_site    str | None      "file.py:12" or a notebook cell, where the ref was made
    task_id      str | None      the task that creates it; None for ``put``
    error        str | None      why it failed, when state == "failed"
    holders      dict            {"local": int (ObjectRef instances in the owner),
                                  "tasks": int (pending tasks taking it as an argument),
                                  "contained_in": list[object_id], "borrowers": list[proc]}

``tasks()`` — unfinished tasks and the most recent 10,000 finished ones, each::

    task_id, name, owner, call_site, worker, node   str | None
    state        str             "pending" | "running" | "finished" | "failed" | "cancelled"
    attempt      int             0 for the first run, incremented by each retry
    submitted_at, started_at, finished_at           float | None (``time.time()``)
    error        str | None      the failure message, when state == "failed"
    returns, deps                list[object_id]    objects it creates / takes as arguments

``workers()`` — each: ``worker_id``, ``node``, ``pid``, ``state`` ("alive" | "dead"), and for a
dead worker ``exitcode`` (int | None), ``signal`` (int | None), ``cause`` (str | None, the likely
reason, e.g. "killed by the OOM killer").

``nodes()`` — each: ``node_id``, ``alive`` (bool), ``pid``, ``store_capacity``, ``store_used``,
``spilled_bytes`` (bytes), ``num_objects``.

``actors()`` — each: ``actor_id``, ``name``, ``worker``, ``owner`` (the process whose handle
created it; it dies with it), ``state`` ("alive" | "restarting" | "dead"), ``restarts`` (int).

``events(since)`` — raw events, oldest first: ``{"kind", "ts", "proc", "seq", ...fields}``
(kinds and fields: ``memlab.core.events.EVENT_FIELDS``). ``seq`` grows by one per event; pass
the last ``seq`` you saw as ``since`` to get only newer ones. The log is bounded, so a gap in
``seq`` means older events were dropped from it.

``ownership_graph()`` — ``{"nodes": [...], "edges": [...]}``. A node is ``{"id", "kind",
"ref", "label", ...}`` with kind "process" | "object" | "task" | "node"; ``id`` is
``"<kind>:<ref>"`` (``"process:driver"``, ``"object:3f2a…"``) and ``ref`` the raw id. An edge is
``{"src", "dst", "kind"}`` with kind "owns" (process→object), "borrows" (process→object),
"contains" (object→object), "created_by" (object→task), "depends_on" (task→object),
"located_at" (object→node). Every edge's endpoints are in ``nodes``.

``view(since)`` — the dashboard's view data, aggregated in the collector process and versioned:
``{"version": int, "seq": int, "refresh_ms": float, "sections": {name: {"reset": bool,
"upsert": [rows], "remove": [keys]}}}`` with only the sections that changed after version
``since`` (``reset``: drop what you hold of that section first). Sections (rows keyed by the
first field): ``objects`` (``object_id``: the ``objects()`` record plus ``task_name``),
``graph_nodes`` (``id``) and ``graph_edges`` (key ``"src|kind|dst"``; the ``ownership_graph()``
shape, objects grouped by their task or call site into ``"group"`` nodes above 1,000 objects),
``incidents`` (``id``: a recovery incident with ``title``, ``state``, ``started_at``,
``duration`` and ``steps``), ``workers`` (``worker_id``, plus ``current_task``), ``nodes``
(``node_id``, plus ``primary_bytes``, ``copy_bytes``), ``summary`` (``key`` "totals": bytes per
node, owner and state, ``spilled_bytes``; "graph": whether it is grouped). See
``memlab.core.dashboard_view``.

Example::

    >>> import memlab, memlab.state as st
    >>> memlab.init(num_workers=2)
    >>> x = memlab.put(b"x" * 1_000_000)
    >>> [(o["object_id"][:8], o["owner"], o["state"], o["locations"]) for o in st.objects()]
    [('3f2a9c1e', 'driver', 'ready', ['node-0'])]
    >>> unsubscribe = st.subscribe(lambda evs: print([e["kind"] for e in evs]))
    >>> del x                        # soon prints e.g. ['object.holders', 'object.freed']
    >>> unsubscribe()
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from memlab.exceptions import EventsUnavailableError, RuntimeNotStartedError
from memlab.runtime.context import current_collector, current_runtime

__all__ = [
    "actors",
    "events",
    "nodes",
    "objects",
    "ownership_graph",
    "subscribe",
    "tasks",
    "view",
    "workers",
]


def _collector(operation: str) -> Any:
    if current_runtime() is None:
        raise RuntimeNotStartedError(f"memlab.state.{operation}()")
    collector = current_collector()
    if collector is None:
        raise EventsUnavailableError(
            f"memlab.state.{operation}()", "this runtime was started with events=False"
        )
    return collector


def objects() -> list[dict[str, Any]]:
    """Live objects with owner, size, state, locations and holders.

    Raises:
        RuntimeNotStartedError: If no memlab runtime runs in this process.
    """
    rows: list[dict[str, Any]] = _collector("objects").snapshot("objects")
    return rows


def tasks() -> list[dict[str, Any]]:
    """Unfinished tasks and the most recent finished ones.

    Raises:
        RuntimeNotStartedError: If no memlab runtime runs in this process.
    """
    rows: list[dict[str, Any]] = _collector("tasks").snapshot("tasks")
    return rows


def workers() -> list[dict[str, Any]]:
    """Alive workers and recently dead ones with their exit information.

    Raises:
        RuntimeNotStartedError: If no memlab runtime runs in this process.
    """
    rows: list[dict[str, Any]] = _collector("workers").snapshot("workers")
    return rows


def nodes() -> list[dict[str, Any]]:
    """Nodes with their store statistics.

    Raises:
        RuntimeNotStartedError: If no memlab runtime runs in this process.
    """
    rows: list[dict[str, Any]] = _collector("nodes").snapshot("nodes")
    return rows


def actors() -> list[dict[str, Any]]:
    """Actors with their state and restart count.

    Raises:
        RuntimeNotStartedError: If no memlab runtime runs in this process.
    """
    rows: list[dict[str, Any]] = _collector("actors").snapshot("actors")
    return rows


def events(since: int | None = None, kinds: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Logged events with ``seq`` greater than ``since`` (every kept event when None).

    Args:
        since: The ``seq`` of the last event already seen.
        kinds: Only events of these kinds, e.g. ``["object.lost", "object.reconstructed"]``
            (default: every kind).

    Raises:
        RuntimeNotStartedError: If no memlab runtime runs in this process.
        ValueError: If ``kinds`` names a kind memlab does not emit.
    """
    rows: list[dict[str, Any]] = _collector("events").events(since, kinds)[0]
    return rows


def ownership_graph() -> dict[str, Any]:
    """The graph of processes, objects, tasks and nodes (see the module docstring).

    Raises:
        RuntimeNotStartedError: If no memlab runtime runs in this process.
    """
    graph: dict[str, Any] = _collector("ownership_graph").snapshot("ownership_graph")
    return graph


def view(since: int | None = None, sections: Iterable[str] | None = None) -> dict[str, Any]:
    """The dashboard's view data that changed after version ``since`` (everything for None).

    Computed in the collector process, at most ten times a second however often it is asked,
    so a live dashboard costs the kernel one small request per tick, never the event stream.
    Pass the ``version`` of the last answer as ``since`` to get only what changed. A first read
    (``since`` None) sees everything done before the call; later ones may lag the driver by
    one event-shipping tick (they do not force a flush).

    Args:
        since: The ``version`` of the last answer you applied.
        sections: Only these sections (default: all; the summary always comes). The graph is
            the costly one, so a view that does not show it should not ask for it.

    Raises:
        RuntimeNotStartedError: If no memlab runtime runs in this process.
        ValueError: If ``since`` is not a version (an int >= 0) or None, or a section is
            unknown.
    """
    delta: dict[str, Any] = _collector("view").view(since, sections)
    return delta


def subscribe(
    callback: Callable[[list[dict[str, Any]]], None], kinds: Iterable[str] | None = None
) -> Callable[[], None]:
    """Call ``callback(new_events)`` on a background thread as events arrive (≤ 10 times/s).

    The callback runs on the driver's event publisher thread, so it should return quickly; one
    that raises is logged and removed without affecting other subscribers. Every event costs
    the driver some CPU to receive (a few µs, two per task): pass ``kinds`` to watch only what
    you show.

    Args:
        callback: Receives a non-empty list of new events, oldest first.
        kinds: Deliver only events of these kinds (default: every kind).

    Returns:
        A function that stops delivery.

    Raises:
        RuntimeNotStartedError: If no memlab runtime runs in this process.
        ValueError: If ``kinds`` names a kind memlab does not emit.
    """
    stop: Callable[[], None] = _collector("subscribe").subscribe(callback, kinds=kinds)
    return stop
