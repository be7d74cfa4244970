"""The task half of the state model's fold: task records from task events.

:class:`TaskFold` is mixed into :class:`memlab.core.state_model.StateModel`, which owns the
records and dispatches events to the ``_on_task_*`` handlers here by kind. A task event about an
unknown task creates its record (events from different processes arrive in any order); an event
of an older attempt than the record's is stale and ignored; ended tasks are kept, oldest evicted
first, up to ``max_finished_tasks``.

The two hot kinds, a task's submission and its end, also fold straight from the positional
records processes ship (:meth:`TaskFold._fold_submitted`, :meth:`TaskFold._fold_finished`,
listed in :data:`RECORD_FOLDS`), without an event dict; both paths share one fold per kind.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from memlab.core.events import EVENT_FIELDS
from memlab.core.ownership_graph import TERMINAL_TASK_STATES
from memlab.core.state_records import ObjectRecord, new_task

__all__ = ["RECORD_FOLDS", "TaskFold"]

_KEEP = object()  # "the event does not say": the record keeps its value


def _hex(value: Any) -> Any:
    return value.hex() if type(value) is bytes else value


def _hexes(values: Any) -> tuple[Any, ...]:
    return tuple([v.hex() if type(v) is bytes else v for v in values or ()])


class TaskFold:
    """Task handlers of the state model (see the module docstring)."""

    # Owned by StateModel.__init__.
    _tasks: dict[str, dict[str, Any]]
    _done_tasks: OrderedDict[str, None]
    max_finished_tasks: int

    if TYPE_CHECKING:  # the object side of the model, which a task's returns update

        def _created(
            self, oid: str, owner: str, task_id: str | None, call_site: str | None
        ) -> ObjectRecord | None: ...

        def _object_by_id(self, oid: str) -> ObjectRecord | None: ...

        @staticmethod
        def _ready(rec: ObjectRecord, size: int | None, node: str | None) -> None: ...

    def _task(self, ev: dict[str, Any]) -> dict[str, Any] | None:
        """The record a task event updates (created if unknown), or None for a stale attempt."""
        return self._task_at(ev["task_id"], ev.get("attempt"))

    def _task_at(self, tid: str, attempt: int | None) -> dict[str, Any] | None:
        rec = self._tasks.get(tid)
        if rec is None:
            rec = self._tasks[tid] = new_task(tid)
        if attempt is not None and attempt < rec["attempt"]:
            return None
        return rec

    def _settle_task(self, rec: dict[str, Any], state: str, ts: Any) -> None:
        rec["state"] = state
        rec["finished_at"] = ts
        tid = rec["task_id"]
        done = self._done_tasks
        if tid in done:
            done.move_to_end(tid)
        else:
            done[tid] = None
        while len(self._done_tasks) > self.max_finished_tasks:
            old, _ = self._done_tasks.popitem(last=False)
            self._tasks.pop(old, None)

    def _unsettle_task(self, rec: dict[str, Any]) -> None:
        self._done_tasks.pop(rec["task_id"], None)
        rec["finished_at"] = None
        rec["error"] = None

    def _on_task_submitted(self, ev: dict[str, Any]) -> None:
        rec = self._task(ev)
        if rec is None:
            return
        self._submitted(
            rec,
            ev.get("name"),
            ev.get("owner", ev.get("proc")),
            ev.get("call_site"),
            ev.get("ts"),
            ev.get("returns"),
            ev.get("deps"),
        )

    def _submitted(
        self,
        rec: dict[str, Any],
        name: str | None,
        owner: str | None,
        call_site: str | None,
        ts: float | None,
        returns: Any,
        deps: Any,
    ) -> None:
        rec["name"] = name
        rec["owner"] = owner
        rec["call_site"] = call_site
        rec["submitted_at"] = ts
        rec["returns"] = tuple(returns or ())
        rec["deps"] = tuple(deps or ())
        # The submission announces its return objects: no object.created is sent for them.
        for oid in rec["returns"]:
            self._created(oid, owner, rec["task_id"], call_site)  # type: ignore[arg-type]

    def _on_task_started(self, ev: dict[str, Any]) -> None:
        rec = self._task(ev)
        if rec is None:
            return
        attempt = ev.get("attempt", rec["attempt"])
        if rec["state"] in TERMINAL_TASK_STATES and attempt == rec["attempt"]:
            # A late start of an attempt that already ended (the owner's "finished" overtook the
            # worker's batched "started"): keep the end, but learn where and when it ran.
            rec["node"] = rec["node"] or ev.get("node")
            rec["worker"] = rec["worker"] or ev.get("worker")
            rec["started_at"] = rec["started_at"] or ev.get("ts")
            return
        self._unsettle_task(rec)
        rec.update(state="running", worker=ev.get("worker"), node=ev.get("node"), attempt=attempt)
        rec["started_at"] = ev.get("ts")

    @staticmethod
    def _started_unannounced(rec: dict[str, Any], started_at: Any, node: str | None) -> None:
        # A task that ended before its worker announced the start: its end event says it.
        if rec["started_at"] is None and started_at is not None:
            rec["started_at"] = started_at
            rec["node"] = node

    def _on_task_finished(self, ev: dict[str, Any]) -> None:
        sub = ev.get("submitted")
        if sub is not None:  # a task that ended before its owner's flush: one event for both
            sub = (
                sub["name"],
                sub["owner"] or ev.get("proc"),
                sub["call_site"],
                sub["submitted_at"],
                sub["returns"],
                sub["deps"],
            )
        self._finished(
            ev["task_id"],
            ev.get("ts"),
            ev.get("worker", _KEEP),
            ev.get("attempt"),
            ev.get("results"),
            ev.get("started_at"),
            ev.get("node"),
            sub,
        )

    def _finished(
        self,
        tid: str,
        ts: Any,
        worker: Any,
        attempt: int | None,
        results: Any,
        started_at: Any,
        node: str | None,
        submitted: tuple[Any, ...] | None,
    ) -> None:
        rec = self._task_at(tid, attempt)
        if rec is None:
            return
        if submitted is not None:
            self._submitted(rec, *submitted)
        self._started_unannounced(rec, started_at, node)
        # The finish reports its results' readiness: no object.ready is sent for them.
        for oid, size, where in results or ():
            obj = self._object_by_id(oid.hex() if type(oid) is bytes else oid)
            if obj is not None:
                self._ready(obj, size, where)
        if worker is not _KEEP:
            rec["worker"] = worker
        if attempt is not None:
            rec["attempt"] = attempt
        self._settle_task(rec, "finished", ts)

    # Positional records (apply_batch): the same folds, fields unpacked from the tuple and raw
    # bytes ids made hex here rather than in an expanded dict.
    def _fold_submitted(self, proc: str, record: tuple[Any, ...]) -> None:
        _, ts, tid, name, owner, returns, deps, call_site = record
        rec = self._task_at(_hex(tid), None)
        self._submitted(
            rec,  # type: ignore[arg-type]
            name,
            owner,
            call_site,
            ts,
            _hexes(returns),
            _hexes(deps),
        )

    def _fold_finished(self, proc: str, record: tuple[Any, ...]) -> None:
        _, ts, tid, worker, attempt, results, started_at, node, sub = record
        if sub is not None:  # the held task.submitted record, carried
            _, sub_ts, _, name, owner, returns, deps, call_site = sub
            sub = (name, owner or proc, call_site, sub_ts, _hexes(returns), _hexes(deps))
        self._finished(_hex(tid), ts, worker, attempt, results, started_at, node, sub)

    def _on_task_failed(self, ev: dict[str, Any]) -> None:
        rec = self._task(ev)
        if rec is not None:
            self._started_unannounced(rec, ev.get("started_at"), ev.get("node"))
            rec["worker"] = ev.get("worker", rec["worker"])
            rec["attempt"] = ev.get("attempt", rec["attempt"])
            self._settle_task(rec, "failed", ev.get("ts"))
            rec["error"] = ev.get("error")

    def _on_task_retried(self, ev: dict[str, Any]) -> None:
        rec = self._task(ev)
        if rec is not None:
            self._unsettle_task(rec)
            rec.update(state="pending", worker=None, node=None, started_at=None)
            rec["attempt"] = ev.get("attempt", rec["attempt"])

    def _on_task_cancelled(self, ev: dict[str, Any]) -> None:
        rec = self._task(ev)
        if rec is not None:
            self._settle_task(rec, "cancelled", ev.get("ts"))


# Kinds StateModel.apply_batch folds from positional records: (fold, record length incl. kind
# and ts).
RECORD_FOLDS: dict[str, tuple[Callable[[Any, str, tuple[Any, ...]], None], int]] = {
    "task.submitted": (TaskFold._fold_submitted, len(EVENT_FIELDS["task.submitted"]) + 2),
    "task.finished": (TaskFold._fold_finished, len(EVENT_FIELDS["task.finished"]) + 2),
}
