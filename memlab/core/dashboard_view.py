"""The dashboard's view data, aggregated where the state lives and shipped as deltas.

Owns what the dashboard's four views show, computed from the state model's records in the
collector process (never in the kernel, which would otherwise have to receive every event):

    ========== ============================================================================
    section    rows (keyed)
    ========== ============================================================================
    objects    one per live object: the ``memlab.state.objects()`` record plus ``task_name``
    graph_nodes, graph_edges
               the ownership graph (``memlab.state.ownership_graph()``), or, above
               ``aggregate_above`` objects, its grouped form (:mod:`memlab.core.graph_aggregate`)
    incidents  recovery incidents (:mod:`memlab.core.incidents`)
    workers    the ``memlab.state.workers()`` record plus ``current_task``
    nodes      the ``memlab.state.nodes()`` record plus ``primary_bytes`` (bytes of primary
               copies, which the store pins while referenced) and ``objects_bytes``
    summary    ``"totals"`` (bytes and counts per node, per owner, per state; spilled bytes)
               and ``"graph"`` (whether the graph is grouped, and its size)
    ========== ============================================================================

Each :meth:`DashboardView.refresh` syncs the sections asked for, each a
:class:`~memlab.core.view_table.ViewTable`, under one new version; :meth:`DashboardView.delta`
answers a reader at version V with only what changed after V (a reset for a section it lags too
far behind in). Refreshes are rate-bounded by :meth:`DashboardView.due`: at most every
``min_interval`` seconds, only when events arrived, and spaced so that refreshing takes at most
``max_share`` of a core (a view of 10,000 objects takes milliseconds, and the collector shares
the machine with the workers). The graph, the costliest section, is rebuilt at most every
``graph_interval`` seconds.

Pure: the caller passes the records (:meth:`memlab.core.state_model.StateModel.records`), the
new incident events and the time.

Invariants (checked by :meth:`DashboardView.validate`): every table's invariants; every graph
edge's endpoints are graph nodes; the totals count exactly the object rows (when both were
synced by the same refresh).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from memlab.core.graph_aggregate import group_graph
from memlab.core.incidents import INCIDENT_KINDS, IncidentTracker
from memlab.core.ownership_graph import build_graph
from memlab.core.state_records import ObjectRecord
from memlab.core.view_table import ViewTable

__all__ = ["INCIDENT_KINDS", "SECTIONS", "DashboardView", "check_sections"]

#: The sections a delta may carry, in the order a reader applies them.
SECTIONS = ("summary", "nodes", "workers", "objects", "graph_nodes", "graph_edges", "incidents")


def check_sections(sections: Iterable[str]) -> list[str]:
    """``sections`` as a list, each one of :data:`SECTIONS`.

    Raises:
        ValueError: Naming the unknown section and the known ones.
    """
    if isinstance(sections, str):
        sections = [sections]
    out = list(sections)
    unknown = [s for s in out if s not in SECTIONS]
    if unknown:
        raise ValueError(
            f"unknown dashboard view sections {unknown}; use some of: {', '.join(SECTIONS)}"
        )
    return out


class DashboardView:
    """Versioned, aggregated view data for the dashboard (see the module docstring).

    Attributes:
        version: Grows by one with every refresh that changed something.
        seq: The event sequence number the last refresh saw.
        event_cursor: The ``seq`` of the last incident event folded (the caller reads the event
            log after it).
        last_cost: Seconds the last refresh took (what :meth:`due` spaces refreshes by).
    """

    def __init__(
        self,
        aggregate_above: int = 1_000,
        min_interval: float = 0.1,
        max_share: float = 0.25,
        graph_interval: float = 0.5,
    ) -> None:
        """Create an empty view.

        Args:
            aggregate_above: With more live objects than this, the graph groups objects by the
                task or call site that made them.
            min_interval: Seconds between refreshes at least (0.1: ten a second).
            max_share: The share of one core refreshing may take when refreshes are costly.
            graph_interval: Seconds between graph rebuilds at least: the graph costs the most
                to build and to ship, and the browser lays it out at most once a second.

        Raises:
            ValueError: If a bound is not positive.
        """
        for name, value in (
            ("aggregate_above", aggregate_above),
            ("min_interval", min_interval),
            ("max_share", max_share),
            ("graph_interval", graph_interval),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        self.aggregate_above = aggregate_above
        self.min_interval = min_interval
        self.max_share = max_share
        self.graph_interval = graph_interval
        self._graph_at = float("-inf")
        self.version = 0
        self.seq = -1
        self.event_cursor = 0
        self.last_cost = 0.0
        self._last_refresh = float("-inf")
        self._synced_at: dict[str, int] = {}  # section -> the seq it was last synced at
        self.tables = {name: ViewTable(name) for name in SECTIONS}
        self.incidents = IncidentTracker(owned_by=self._owned_by)

    # ------------------------------------------------------------------ refreshing

    def due(self, now: float, seq: int, sections: Iterable[str] = SECTIONS) -> bool:
        """Whether a refresh at ``now`` (seconds, monotonic) is due, the log being at ``seq``,
        for a reader of ``sections``."""
        if all(self._synced_at.get(name) == seq for name in sections):
            return False
        spacing = max(self.min_interval, self.last_cost / self.max_share)
        return now - self._last_refresh >= spacing

    def refresh(
        self,
        records: Any,
        events: Iterable[Mapping[str, Any]],
        seq: int,
        now: float,
        cost: float | None = None,
        sections: Iterable[str] = SECTIONS,
    ) -> bool:
        """Recompute the sections asked for; returns whether anything changed.

        A section not asked for keeps its rows and stamps until a refresh asks for it (then
        it catches up in one sync, stamped with that refresh's version, so every reader still
        gets exactly what it lacks). The graph is the costly one: a dashboard showing another
        view need not build it ten times a second.

        Args:
            records: The model's live records (``objects``, ``tasks``, ``workers``, ``nodes``
                mappings, as :class:`memlab.core.state_model.LiveRecords`), only read.
            events: The incident events (kinds :data:`INCIDENT_KINDS`) after
                :attr:`event_cursor`, oldest first.
            seq: The model's latest event ``seq``.
            now: The current monotonic time.
            cost: How long the previous refresh really took (the caller times it), for
                :meth:`due`; None keeps the last figure.
            sections: The sections to bring up to date (``summary`` always is).

        Raises:
            ValueError: If a section is not one of :data:`SECTIONS`.
        """
        wanted = set(check_sections(sections)) | {"summary"}
        if cost is not None:
            self.last_cost = cost
        self._last_refresh = now
        self.seq = seq
        for ev in events:  # before the objects sync: an owner's death reads what it owned
            self.incidents.handle(dict(ev))
            self.event_cursor = max(self.event_cursor, int(ev.get("seq") or 0))
        objects, tasks = records.objects, records.tasks
        version = self.version + 1
        t = self.tables
        changed = 0
        totals = _Totals()
        entries = self._object_entries(objects, tasks, totals)
        if "objects" in wanted:
            changed += t["objects"].sync(entries, lambda src: _object_row(*src), version)
        else:
            for _ in entries:  # the totals still count every object
                pass
        node_entries = _node_entries(records.nodes, totals)
        if "nodes" in wanted:
            changed += t["nodes"].sync(node_entries, _node_row, version)
        else:
            for _ in node_entries:  # the totals' spilled bytes
                pass
        if "workers" in wanted:
            changed += t["workers"].sync(
                _worker_entries(records.workers, tasks), _worker_row, version
            )
        live = totals.objects
        meta = self.tables["summary"].rows().get("graph") or {
            "key": "graph",
            "grouped": False,
            "nodes": 0,
            "edges": 0,
        }
        want_graph = "graph_nodes" in wanted or "graph_edges" in wanted
        wanted -= {"graph_nodes", "graph_edges"}
        if want_graph and now - self._graph_at >= self.graph_interval:
            self._graph_at = now
            wanted |= {"graph_nodes", "graph_edges"}  # one graph: both halves or neither
            grouped = live > self.aggregate_above
            build = group_graph if grouped else build_graph
            graph = build(objects, tasks, records.workers, records.nodes)
            changed += t["graph_nodes"].sync(
                ((n["id"], n, n) for n in graph["nodes"]), _same, version
            )
            changed += t["graph_edges"].sync(
                (
                    (f"{e['src']}|{e['kind']}|{e['dst']}", e.get("count", 1), e)
                    for e in graph["edges"]
                ),
                _same,
                version,
            )
            meta = {
                "key": "graph",
                "grouped": grouped,
                "nodes": len(graph["nodes"]),
                "edges": len(graph["edges"]),
            }
        if "incidents" in wanted:
            changed += t["incidents"].sync(
                (
                    (inc["id"], _incident_fingerprint(inc), inc)
                    for inc in self.incidents.incidents()
                ),
                _copy_incident,
                version,
            )
        meta = {**meta, "objects": live, "aggregate_above": self.aggregate_above}
        for name in wanted:
            self._synced_at[name] = seq
        summary = totals.row()
        changed += t["summary"].sync(
            [("totals", summary, summary), ("graph", meta, meta)], _same, version
        )
        if changed:
            self.version = version
        return bool(changed)

    def _object_entries(
        self,
        objects: Mapping[str, ObjectRecord],
        tasks: Mapping[str, dict[str, Any]],
        totals: _Totals,
    ) -> Iterable[tuple[str, Any, Any]]:
        add = totals.add
        for oid, rec in objects.items():
            owner = rec.owner
            if owner is None:
                continue  # a placeholder: events arrived before its object.created
            task_id = rec.task_id
            task = tasks.get(task_id) if task_id is not None else None
            name = task["name"] if task is not None else None
            add(rec)
            # Holders and node tuples are replaced whole on change, so comparing them is cheap.
            fp = (
                rec.state,
                rec.size,
                rec.nodes,
                rec.holders,
                owner,
                rec.inline,
                rec.error,
                rec.call_site,
                name,
            )
            yield oid, fp, (rec, name)

    def _owned_by(self, owner: str) -> list[tuple[str, int, list[str]]]:
        return [
            (oid, row["size"] or 0, row["holders"]["borrowers"])
            for oid, row in self.tables["objects"].rows().items()
            if row["owner"] == owner
        ]

    # ------------------------------------------------------------------ reading

    def delta(self, since: int | None, sections: Iterable[str] = SECTIONS) -> dict[str, Any]:
        """What a reader at version ``since`` lacks (``None`` or 0: everything) in
        ``sections`` (and the summary).

        Returns:
            ``{"version", "seq", "sections": {name: {"reset", "upsert", "remove"}}}`` with only
            the sections that changed after ``since``. A ``since`` from the future (a reader
            of an earlier session) is answered like 0.
        """
        since = since or 0
        if since > self.version:
            since = 0
        wanted = set(check_sections(sections)) | {"summary"}
        if "graph_nodes" in wanted or "graph_edges" in wanted:
            wanted |= {"graph_nodes", "graph_edges"}
        out = {}
        for name in SECTIONS:
            d = self.tables[name].delta(since) if name in wanted else None
            if d is not None:
                out[name] = d
        return {
            "version": self.version,
            "seq": self.seq,
            "sections": out,
            "refresh_ms": round(self.last_cost * 1e3, 3),
        }

    # ------------------------------------------------------------------ invariants

    def validate(self) -> None:
        """Check the invariants in the module docstring.

        Raises:
            AssertionError: Naming the broken invariant.
        """
        for table in self.tables.values():
            table.validate()
            assert table.version <= self.version, f"{table.name} is ahead of the view"
        self.incidents.validate()
        gnodes = self.tables["graph_nodes"].rows()
        for key, e in self.tables["graph_edges"].rows().items():
            assert e["src"] in gnodes and e["dst"] in gnodes, f"dangling graph edge {key}"
        totals = self.tables["summary"].rows().get("totals")
        if totals is not None and self._synced_at.get("objects") == self._synced_at["summary"]:
            assert totals["objects"] == len(self.tables["objects"]), "totals miscount objects"


class _Totals:
    """Bytes and counts per node, per owner and per state, gathered in the objects pass."""

    def __init__(self) -> None:
        self.objects = 0
        self.bytes = 0
        self.by_node: dict[str, dict[str, int]] = {}
        self.by_owner: dict[str, dict[str, int]] = {}
        self.by_state: dict[str, int] = {}
        self.spilled = 0  # the nodes' spilled bytes (set by the nodes pass)

    def add(self, rec: ObjectRecord) -> None:
        size = rec.size or 0
        self.objects += 1
        self.bytes += size
        by_state = self.by_state
        by_state[rec.state] = by_state.get(rec.state, 0) + 1
        owner = self.by_owner.get(rec.owner)  # type: ignore[arg-type]
        if owner is None:
            owner = self.by_owner[rec.owner] = {  # type: ignore[index]
                "objects": 0,
                "bytes": 0,
                "inline": 0,
            }
        owner["objects"] += 1
        owner["bytes"] += size
        if rec.inline:
            owner["inline"] += size
        first = True
        for node in rec.nodes:
            n = self.by_node.get(node)
            if n is None:
                n = self.by_node[node] = {"objects": 0, "primary_bytes": 0, "copy_bytes": 0}
            n["objects"] += 1
            n["primary_bytes" if first else "copy_bytes"] += size
            first = False

    def row(self) -> dict[str, Any]:
        return {
            "key": "totals",
            "objects": self.objects,
            "bytes": self.bytes,
            "by_node": self.by_node,
            "by_owner": self.by_owner,
            "by_state": self.by_state,
            "spilled_bytes": self.spilled,
        }


def _object_row(rec: Any, task_name: str | None) -> dict[str, Any]:
    holders = rec["holders"]
    owner = rec["owner"]
    return {
        "object_id": rec["object_id"],
        "owner": owner,
        "size": rec["size"],
        "state": rec["state"],
        "locations": ([f"owner:{owner}"] if rec["inline"] else []) + list(rec["nodes"]),
        "inline": rec["inline"],
        "call_site": rec["call_site"],
        "task_id": rec["task_id"],
        "task_name": task_name,
        "error": rec["error"],
        "holders": {
            "local": holders["local"],
            "tasks": holders["tasks"],
            "contained_in": list(holders["contained_in"]),
            "borrowers": list(holders["borrowers"]),
        },
    }


def _node_entries(
    nodes: Mapping[str, dict[str, Any]], totals: _Totals
) -> Iterable[tuple[str, Any, Any]]:
    spilled = 0
    for node_id, rec in nodes.items():
        use = totals.by_node.get(node_id, {"objects": 0, "primary_bytes": 0, "copy_bytes": 0})
        spilled += rec.get("spilled_bytes") or 0
        row = {
            **rec,
            "primary_bytes": use["primary_bytes"],
            "copy_bytes": use["copy_bytes"],
            "objects_bytes": use["primary_bytes"] + use["copy_bytes"],
        }
        yield node_id, row, row
    totals.spilled = spilled


def _worker_entries(
    workers: Mapping[str, dict[str, Any]], tasks: Mapping[str, dict[str, Any]]
) -> Iterable[tuple[str, Any, Any]]:
    running: dict[str, dict[str, Any]] = {}
    for tid, task in tasks.items():
        if task["state"] == "running" and task["worker"] is not None:
            running[task["worker"]] = {
                "task_id": tid,
                "name": task["name"],
                "started_at": task["started_at"],
            }
    for wid, rec in workers.items():
        row = {**rec, "current_task": running.get(wid)}
        yield wid, row, row


def _node_row(row: dict[str, Any]) -> dict[str, Any]:
    return row


_worker_row = _node_row


def _same(row: dict[str, Any]) -> dict[str, Any]:
    return row


def _incident_fingerprint(inc: dict[str, Any]) -> tuple[Any, ...]:
    return (
        inc["ended_at"],
        inc["state"],
        inc["title"],
        inc["pending"],
        len(inc["holders"]),
        tuple((s["kind"], s["count"]) for s in inc["steps"]),
    )


def _copy_incident(inc: dict[str, Any]) -> dict[str, Any]:
    out = dict(inc)
    out["holders"] = list(inc["holders"])
    out["steps"] = [
        {**s, "items": list(s["items"]), "details": list(s["details"])} for s in inc["steps"]
    ]
    return out
