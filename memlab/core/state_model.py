"""The live state model: a pure fold of observability events into records.

Owns the driver-side picture of the session that front ends read (through ``memlab.state``):
objects, tasks, workers, nodes, actors, a bounded event log and the ownership graph. It only
consumes events (see :mod:`memlab.core.events`); it never drives the runtime. Task events fold
in :mod:`memlab.core.task_fold` (mixed in), the rest here.

Events come from many processes in batches, so one process's event may be folded before another
process's earlier one (a worker's ``task.started`` before the owner's ``task.submitted``). The
fold therefore upserts: an event about an unknown id creates a placeholder record that later
events complete, and no event regresses a record (a late ``object.created`` does not turn a ready
object back to pending; a late event of an older task attempt does not move the task).

Invariants (checked by :meth:`StateModel.validate`):
    * Every object listed by :meth:`objects` has an owner, a non-empty process id string.
    * A freed object never reappears (freed ids are remembered, boundedly, as tombstones).
    * Holder counts and store statistics are non-negative.
    * The log holds at most ``max_log`` events; older ones are counted in ``log_dropped``.
    * At most ``max_finished_tasks`` finished/failed/cancelled tasks are kept.

Every record returned is a fresh copy; callers may mutate it.

Folding is deferred until someone reads: :meth:`apply` and :meth:`apply_batch` log each event at
once (the live stream, :meth:`events`, never waits) and queue it in a backlog; any read of the
records (and ``malformed``) first folds the backlog, in order, and so does the backlog reaching
``max_backlog`` events. A session nobody watches thus pays for logging, not for the records, and
a burst folds in one pass that skips every update of an object freed later in the same backlog
(its end state is the tombstone either way). Reads see exactly the model an eager fold makes.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from memlab.core.events import EVENT_KINDS, expand
from memlab.core.ownership_graph import TERMINAL_TASK_STATES, build_graph
from memlab.core.state_records import (
    CREATOR_HOLDS,
    NO_HOLDERS,
    ObjectRecord,
    copy_record,
)
from memlab.core.task_fold import RECORD_FOLDS, TaskFold

__all__ = ["LiveRecords", "StateModel"]


class LiveRecords(NamedTuple):
    """The model's records by id, shared with the model (see :meth:`StateModel.records`)."""

    objects: Mapping[str, ObjectRecord]
    tasks: Mapping[str, dict[str, Any]]
    workers: Mapping[str, dict[str, Any]]
    nodes: Mapping[str, dict[str, Any]]
    actors: Mapping[str, dict[str, Any]]


_STATE_AFTER = {
    "object.spilled": "spilled",
    "object.reconstructing": "reconstructing",
    "object.reconstructed": "ready",
}
_NODE_STATS = ("store_used", "spilled_bytes", "num_objects")
_TERMINAL_TASK_STATES = TERMINAL_TASK_STATES
_OBJECT_STATES = frozenset({"pending", "ready", "spilled", "lost", "reconstructing", "failed"})


class StateModel(TaskFold):
    """Folds events into the records that ``memlab.state`` serves.

    Attributes:
        log_dropped: Events pushed out of the bounded log.
    """

    def __init__(
        self,
        max_log: int = 20_000,
        max_finished_tasks: int = 10_000,
        max_dead_workers: int = 1_000,
        max_tombstones: int = 100_000,
        max_backlog: int = 50_000,
    ) -> None:
        """Create an empty model.

        Args:
            max_log: Bound on the event log.
            max_finished_tasks: Bound on kept tasks in a terminal state (oldest evicted first).
            max_dead_workers: Bound on kept records of dead workers.
            max_tombstones: How many freed object ids are remembered to ignore late events.
            max_backlog: How many logged events may wait unfolded (bounds the backlog's memory
                and the pause of the first read after a long unwatched burst).
        """
        for name, value in (
            ("max_log", max_log),
            ("max_finished_tasks", max_finished_tasks),
            ("max_backlog", max_backlog),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value!r}; pass e.g. 10_000")
        self.max_log = max_log
        self.max_finished_tasks = max_finished_tasks
        self.max_dead_workers = max_dead_workers
        self.max_tombstones = max_tombstones
        self.max_backlog = max_backlog
        self.log_dropped = 0
        self._malformed = 0
        # Logged, not yet folded, in order: (None, event dict) or (proc, positional record).
        self._backlog: list[tuple[str | None, Any]] = []
        # While a backlog folds: ids it frees later, whose earlier updates need not be folded.
        self._freed_ahead: frozenset[str] | set[str] = frozenset()
        self._seq = 0
        # Kept as the dicts folded (packing them saved memory but measured slower end to end).
        # Dicts, and (seq, proc, record) for hot records folded positionally (apply_batch).
        self._log: deque[Any] = deque(maxlen=max_log)
        self._objects: dict[str, ObjectRecord] = {}
        self._freed: OrderedDict[str, None] = OrderedDict()
        self._tasks: dict[str, dict[str, Any]] = {}
        self._done_tasks: OrderedDict[str, None] = OrderedDict()  # terminal tasks, oldest first
        self._workers: dict[str, dict[str, Any]] = {}
        self._dead_workers: OrderedDict[str, None] = OrderedDict()
        self._nodes: dict[str, dict[str, Any]] = {}
        self._actors: dict[str, dict[str, Any]] = {}
        # Owners seen dying (bounded): an actor.created folded after its owner's death (ingested
        # batches fold after the driver's own events) must not show a live actor.
        self._dead_owners: OrderedDict[str, None] = OrderedDict()

    # ------------------------------------------------------------------ folding

    def apply(self, events: Iterable[dict[str, Any]]) -> None:
        """Log events, in order, and queue them for the fold (see the module docstring).

        The model takes ownership of the event dicts (the caller must not reuse them): each is
        logged as it is, stamped with a ``"seq"`` number (1, 2, ...). Unknown
        kinds are logged only. An event missing a field its kind needs is logged and counted in
        ``malformed``; it never raises, so one bad emitter cannot stop the collector.

        Args:
            events: Event dicts as made by :class:`memlab.core.events.EventBuffer`.
        """
        for event in events:
            self._log_dict(event)
        if len(self._backlog) >= self.max_backlog:
            self._catch_up()

    def _log_dict(self, event: dict[str, Any]) -> None:
        self._seq += 1
        event["seq"] = self._seq  # the model owns the dicts it is given: no copy per event
        if len(self._log) == self.max_log:
            self.log_dropped += 1
        self._log.append(event)
        self._backlog.append((None, event))

    def apply_batch(self, batch: Iterable[Any], proc: str) -> None:
        """Log and queue a batch as drained from one process's ``EventBuffer``: dicts and
        positional records (see :mod:`memlab.core.events`), in order, like :meth:`apply` of their
        :func:`~memlab.core.events.expand`.

        The hot records (a task's submission and end, two per task) stay tuples: the log keeps
        them as ``(seq, proc, record)``, made dicts only when read (:meth:`events`), and they
        fold straight from the tuple. Building, checking and logging a dict per event was most
        of the collector's time per task.

        Args:
            batch: What one process's buffer drained; the model takes ownership of it.
            proc: The process that emitted the batch.
        """
        log = self._log
        backlog = self._backlog
        folds = RECORD_FOLDS
        for event in batch:
            fold = folds.get(event[0]) if type(event) is tuple and event else None
            if fold is None or len(event) != fold[1]:
                for expanded in expand([event], proc):
                    self._log_dict(expanded)
                continue
            self._seq += 1
            if len(log) == self.max_log:
                self.log_dropped += 1
            log.append((self._seq, proc, event))
            backlog.append((proc, event))
        if len(backlog) >= self.max_backlog:
            self._catch_up()

    @property
    def malformed(self) -> int:
        """Events whose fields could not be folded (kept in the log, model unchanged)."""
        self._catch_up()
        return self._malformed

    def _catch_up(self) -> None:
        """Fold the backlog, in order; every read of the records calls this first."""
        backlog = self._backlog
        if not backlog:
            return
        self._backlog = []
        self._freed_ahead = _freed_in(backlog)
        folds = RECORD_FOLDS
        try:
            for proc, event in backlog:
                try:
                    if proc is None:
                        handler = _HANDLERS.get(event.get("kind", ""))
                        if handler is not None:
                            handler(self, event)
                    else:
                        folds[event[0]][0](self, proc, event)
                except (KeyError, TypeError, ValueError, AttributeError):
                    self._malformed += 1
        finally:
            self._freed_ahead = frozenset()

    def _object(self, event: dict[str, Any]) -> ObjectRecord | None:
        """The record an object event updates (created if unknown), or None if freed."""
        return self._object_by_id(event["object_id"])

    def _object_by_id(self, oid: str) -> ObjectRecord | None:
        if oid in self._freed or oid in self._freed_ahead:
            return None
        rec = self._objects.get(oid)
        if rec is None:
            rec = self._objects[oid] = ObjectRecord(oid)
        return rec

    def _created(
        self, oid: str, owner: str, task_id: str | None, call_site: str | None
    ) -> ObjectRecord | None:
        rec = self._object_by_id(oid)
        if rec is None:
            return None
        # Attribute access, not rec[...]: these run for every task and put.
        rec.owner = owner
        rec.task_id = task_id
        rec.call_site = call_site
        if rec.holders is NO_HOLDERS:
            rec.holders = CREATOR_HOLDS
        return rec

    @staticmethod
    def _ready(rec: ObjectRecord, size: int | None, node: str | None) -> None:
        rec.state = "ready"
        rec.error = None
        if size is not None:
            rec.size = size
        if node is None:
            rec.inline = True  # the value lives in its owner's memory
        elif node not in rec.nodes:
            rec.nodes = (node, *rec.nodes)  # the sealing node holds the primary copy

    def _on_object_created(self, ev: dict[str, Any]) -> None:
        rec = self._created(ev["object_id"], ev["owner"], ev.get("task_id"), ev.get("call_site"))
        if rec is None:
            return
        if ev.get("size") is not None:
            rec["size"] = ev["size"]
        # A placeholder already moved on by later events keeps its state.
        if ev.get("state") == "ready" and rec["state"] == "pending":
            self._ready(rec, ev.get("size"), ev.get("node"))

    def _on_object_ready(self, ev: dict[str, Any]) -> None:
        rec = self._object(ev)
        if rec is None:
            return
        self._ready(rec, ev.get("size"), ev.get("node"))

    def _on_object_holders(self, ev: dict[str, Any]) -> None:
        rec = self._object(ev)
        if rec is None:
            return
        rec["holders"] = {
            "local": max(0, int(ev.get("local") or 0)),
            "tasks": max(0, int(ev.get("tasks") or 0)),
            "contained_in": list(ev.get("contained_in") or ()),
            "borrowers": list(ev.get("borrowers") or ()),
        }

    def _forget_object(self, oid: str) -> None:
        self._objects.pop(oid, None)
        self._freed[oid] = None
        if len(self._freed) > self.max_tombstones:
            self._freed.popitem(last=False)

    def _on_object_freed(self, ev: dict[str, Any]) -> None:
        # One event per flush names every object freed since the last one.
        for oid in ev["object_ids"]:
            self._forget_object(oid)

    def _set_object_state(self, ev: dict[str, Any], state: str) -> ObjectRecord | None:
        rec = self._object(ev)
        if rec is not None:
            rec["state"] = state
            if ev.get("size") is not None:
                rec["size"] = ev["size"]
        return rec

    def _on_object_failed(self, ev: dict[str, Any]) -> None:
        rec = self._set_object_state(ev, "failed")
        if rec is not None:
            rec["error"] = ev.get("error")

    def _on_object_restored(self, ev: dict[str, Any]) -> None:
        rec = self._set_object_state(ev, "ready")
        node = ev.get("node")
        if rec is not None and node is not None and node not in rec["nodes"]:
            rec["nodes"] = (*rec["nodes"], node)

    def _on_object_promoted(self, ev: dict[str, Any]) -> None:
        # Its primary died with a node; this copy is the primary now.
        rec = self._set_object_state(ev, "ready")
        if rec is not None:
            node = ev["node"]
            rec["nodes"] = (node, *(n for n in rec["nodes"] if n != node))

    def _on_object_evicted(self, ev: dict[str, Any]) -> None:
        rec = self._object(ev)
        if rec is not None and ev.get("node") in rec["nodes"]:
            rec["nodes"] = tuple(n for n in rec["nodes"] if n != ev["node"])

    def _on_object_lost(self, ev: dict[str, Any]) -> None:
        rec = self._set_object_state(ev, "lost")
        if rec is not None:
            rec["nodes"] = ()

    def _on_object_state(self, ev: dict[str, Any]) -> None:
        self._set_object_state(ev, _STATE_AFTER[ev["kind"]])

    _on_object_spilled = _on_object_reconstructing = _on_object_reconstructed = _on_object_state

    def _on_owner_died(self, ev: dict[str, Any]) -> None:
        # Fate-sharing (DESIGN §3.4): the owner's objects are gone and their copies removed.
        owner = ev["owner"]
        for oid in [oid for oid, rec in self._objects.items() if rec["owner"] == owner]:
            self._forget_object(oid)
        for actor in self._actors.values():  # its actors die with it (it cannot say so)
            if actor["owner"] == owner:
                actor["state"] = "dead"
        self._dead_owners[owner] = None
        if len(self._dead_owners) > self.max_dead_workers:
            self._dead_owners.popitem(last=False)

    def _on_worker_started(self, ev: dict[str, Any]) -> None:
        wid = ev["worker_id"]
        self._dead_workers.pop(wid, None)
        rec = self._workers[wid] = dict.fromkeys(("exitcode", "signal", "cause"))
        rec.update(worker_id=wid, node=ev.get("node"), pid=ev.get("pid"), state="alive")

    def _on_worker_died(self, ev: dict[str, Any]) -> None:
        wid = ev["worker_id"]
        rec = self._workers.setdefault(wid, {"worker_id": wid, "node": None, "pid": None})
        rec["state"] = "dead"
        for key in ("node", "pid"):
            if ev.get(key) is not None:
                rec[key] = ev[key]
        for key in ("exitcode", "signal", "cause"):
            rec[key] = ev.get(key)
        self._dead_workers[wid] = None
        while len(self._dead_workers) > self.max_dead_workers:
            old, _ = self._dead_workers.popitem(last=False)
            self._workers.pop(old, None)

    def _node(self, node_id: str) -> dict[str, Any]:
        rec = self._nodes.get(node_id)
        if rec is None:
            rec = self._nodes[node_id] = dict.fromkeys(_NODE_STATS, 0)
            rec.update(node_id=node_id, alive=True, store_capacity=None, pid=None)
        return rec

    def _on_node_started(self, ev: dict[str, Any]) -> None:
        rec = self._node(ev["node_id"])
        rec.update(alive=True, pid=ev.get("pid"), store_capacity=ev.get("store_capacity"))

    def _on_node_died(self, ev: dict[str, Any]) -> None:
        node_id = ev["node_id"]
        self._node(node_id)["alive"] = False
        # Copies in a dead node's store are gone; the owner reports which objects are lost.
        for rec in self._objects.values():
            if node_id in rec["nodes"]:
                rec["nodes"] = tuple(n for n in rec["nodes"] if n != node_id)

    def _on_node_store(self, ev: dict[str, Any]) -> None:
        rec = self._node(ev["node_id"])
        for key in _NODE_STATS:
            if ev.get(key) is not None:
                rec[key] = max(0, int(ev[key]))

    def _on_actor(self, ev: dict[str, Any]) -> None:
        aid = ev["actor_id"]
        rec = self._actors.setdefault(
            aid,
            {
                "actor_id": aid,
                "name": None,
                "worker": None,
                "owner": None,
                "state": "alive",
                "restarts": 0,
            },
        )
        if rec["state"] == "dead" and ev["kind"] != "actor.died":
            return  # dead is final: a worker's late actor.created must not revive it
        for key in ("name", "worker", "owner"):
            if ev.get(key) is not None:
                rec[key] = ev[key]
        kind = ev["kind"]
        rec["state"] = {"actor.died": "dead", "actor.restarting": "restarting"}.get(kind, "alive")
        if rec["owner"] in self._dead_owners:
            rec["state"] = "dead"
        rec["restarts"] += kind == "actor.restarted"

    _on_actor_created = _on_actor_restarting = _on_actor_restarted = _on_actor_died = _on_actor

    # ------------------------------------------------------------------ reading

    def objects(self) -> list[dict[str, Any]]:
        """Live objects whose creation has been seen (see ``memlab.state`` for the fields)."""
        self._catch_up()
        out = []
        for rec in self._objects.values():
            owner = rec["owner"]
            if owner is None:
                continue  # placeholder: events arrived before its object.created
            obj = copy_record(rec)
            nodes = obj.pop("nodes")
            obj["locations"] = ([f"owner:{owner}"] if obj["inline"] else []) + list(nodes)
            out.append(obj)
        return out

    def tasks(self) -> list[dict[str, Any]]:
        """Known tasks: all unfinished ones and the most recent terminal ones."""
        self._catch_up()
        return [copy_record(rec) for rec in self._tasks.values()]

    def workers(self) -> list[dict[str, Any]]:
        """Workers: alive ones and the most recent dead ones with their exit information."""
        self._catch_up()
        return [dict(rec) for rec in self._workers.values()]

    def nodes(self) -> list[dict[str, Any]]:
        """Nodes with their latest store statistics."""
        self._catch_up()
        return [dict(rec) for rec in self._nodes.values()]

    def actors(self) -> list[dict[str, Any]]:
        """Actors with their state (``alive``/``dead``) and restart count."""
        self._catch_up()
        return [dict(rec) for rec in self._actors.values()]

    def records(self) -> LiveRecords:
        """The folded records themselves, not copies: for a reader in the model's process that
        only reads them, under the lock its folds take (the collector's dashboard view, which
        would otherwise copy every object ten times a second to find the few that changed)."""
        self._catch_up()
        return LiveRecords(self._objects, self._tasks, self._workers, self._nodes, self._actors)

    @property
    def latest_seq(self) -> int:
        """Sequence number of the last applied event (0 before any)."""
        return self._seq

    def events(
        self, since: int | None = None, kinds: frozenset[str] | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """Logged events with ``seq > since`` (all kept ones when None), and the latest seq.

        When events after ``since`` already fell out of the bounded log, the result starts at
        the oldest kept one; callers see the gap in the ``seq`` numbers.

        Args:
            since: The ``seq`` of the last event already seen.
            kinds: Only events of these kinds (all when None). Others are skipped before they
                are expanded, so a reader of rare kinds pays little for a busy task stream.
        """
        log = self._log
        if since is None or not log:
            selected: Iterable[Any] = log  # dicts, and positional tuples (apply_batch)
        else:
            first = self._seq - len(log) + 1  # the log holds consecutive events up to _seq
            selected = itertools.islice(log, max(0, since - first + 1), None)
        out: list[dict[str, Any]] = []
        append = out.append
        for ev in selected:
            if type(ev) is not tuple:
                if kinds is None or ev.get("kind") in kinds:
                    append(copy_record(ev))
                continue
            # A hot record kept positionally (apply_batch): its expansion is a fresh dict
            # already, so it only takes the copy's shape (lists for sequences), in place.
            seq, proc, record = ev
            if kinds is not None and record[0] not in kinds:
                continue
            ev = expand([record], proc)[0]
            ev["seq"] = seq
            for key, value in ev.items():
                if type(value) is tuple:
                    ev[key] = list(value)
            append(ev)
        return out, self._seq

    def ownership_graph(self) -> dict[str, Any]:
        """Who owns, borrows, contains, created and holds each live object (see
        ``memlab.core.ownership_graph``)."""
        self._catch_up()
        return build_graph(self._objects, self._tasks, self._workers, self._nodes)

    # ------------------------------------------------------------------ invariants

    def validate(self) -> None:
        """Check the model's invariants.

        Raises:
            AssertionError: Naming the broken invariant and the offending record.
        """
        self._catch_up()
        for oid, rec in self._objects.items():
            assert oid not in self._freed, f"freed object {oid} is still live: {rec}"
            owner = rec["owner"]
            assert owner is None or (isinstance(owner, str) and owner), f"bad owner: {rec}"
            assert rec["state"] in _OBJECT_STATES, f"unknown object state: {rec}"
            holders = rec["holders"]
            assert holders["local"] >= 0 and holders["tasks"] >= 0, f"negative count: {rec}"
        for obj in self.objects():
            assert isinstance(obj["owner"], str) and obj["owner"], f"listed without owner: {obj}"
        for node in self._nodes.values():
            for key in _NODE_STATS:
                assert node[key] >= 0, f"negative {key}: {node}"
        assert len(self._log) <= self.max_log, "event log exceeds max_log"
        assert len(self._done_tasks) <= self.max_finished_tasks, "too many finished tasks kept"
        for tid in self._done_tasks:
            assert self._tasks[tid]["state"] in _TERMINAL_TASK_STATES, f"task {tid} not terminal"


def _freed_in(backlog: list[tuple[str | None, Any]]) -> set[str]:
    """The object ids a backlog's ``object.freed`` events forget (only well-formed ones, so
    every id returned is forgotten when the backlog folds)."""
    freed: set[str] = set()
    for proc, event in backlog:
        if proc is None and event.get("kind") == "object.freed":
            ids = event.get("object_ids")
            if isinstance(ids, (tuple, list)) and all(type(oid) is str for oid in ids):
                freed.update(ids)
    return freed


_HANDLERS: dict[str, Callable[[StateModel, dict[str, Any]], None]] = {
    kind: getattr(StateModel, "_on_" + kind.replace(".", "_")) for kind in EVENT_KINDS
}
