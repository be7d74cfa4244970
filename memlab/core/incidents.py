"""Recovery incidents: failure events grouped into what a person reads as one story.

Owns the dashboard's recovery timeline. A death (worker, node, owner, actor) opens an
incident; what follows from it joins that incident as steps, in the order recovery goes::

    died ──► lost ──► promoted (a surviving copy became the primary)
                 └──► retried ──► reconstructing ──► reconstructed
                 └──► failed (no copy, no lineage or budget left)     owner_died ──► holders
                                                                      get OwnerDiedError

Pure: :meth:`IncidentTracker.handle` takes one event dict (as ``memlab.state.events`` gives
them, only of :data:`INCIDENT_KINDS`) and updates the incidents. Grouping is by time and
relation, because events from many processes arrive interleaved: a death joins the incident
opened less than ``merge_window`` seconds before it (a node's death brings its workers' deaths
and their owners' deaths), and every follow-up event joins the latest open incident. An
incident is open while objects it lost are unresolved, or until ``quiet`` seconds pass with
nothing new. An ``object.lost`` with no incident open (e.g. copies dropped by a test) opens one.

Invariants (checked by :meth:`IncidentTracker.validate`):
    * At most ``max_incidents`` are kept (oldest dropped first), each with at most
      ``max_items`` ids listed per step (``count`` stays exact).
    * An incident's ``pending`` objects are a subset of its ``lost`` ones.
    * ``started_at <= ended_at`` for every incident.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["INCIDENT_KINDS", "STEP_ORDER", "IncidentTracker"]

_DEATHS = frozenset({"worker.died", "node.died", "owner.died", "actor.died"})
_FOLLOW_UPS = frozenset(
    {
        "object.lost",
        "object.promoted",
        "task.retried",
        "object.reconstructing",
        "object.reconstructed",
        "object.failed",
        "task.failed",
        "actor.restarting",
        "actor.restarted",
    }
)
# A task failure belongs to an incident only when the system failed it, not the user's code.
_CRASHES = (
    "WorkerCrashedError",
    "ObjectLostError",
    "ObjectReconstructionFailedError",
    "OwnerDiedError",
    "ActorDiedError",
)
#: The event kinds the tracker reads (a reader filters the log by these).
INCIDENT_KINDS: frozenset[str] = _DEATHS | _FOLLOW_UPS

#: Steps in the order recovery goes; an incident lists the ones that happened in this order.
STEP_ORDER = (
    "died",
    "lost",
    "promoted",
    "retried",
    "reconstructing",
    "reconstructed",
    "restarted",
    "failed",
    "owner_died",
)

_STEP_OF = {
    "worker.died": "died",
    "node.died": "died",
    "actor.died": "died",
    "object.lost": "lost",
    "object.promoted": "promoted",
    "task.retried": "retried",
    "object.reconstructing": "reconstructing",
    "object.reconstructed": "reconstructed",
    "actor.restarting": "restarted",
    "actor.restarted": "restarted",
    "object.failed": "failed",
    "task.failed": "failed",
    "owner.died": "owner_died",
}

#: ``owned_by(owner)``: what the dashboard last saw the owner own, as ``(object_id, size,
#: borrowers)``; an owner's death takes those objects, and their borrowers get OwnerDiedError.
OwnedBy = Callable[[str], list[tuple[str, int, list[str]]]]


def _nothing_owned(owner: str) -> list[tuple[str, int, list[str]]]:
    return []


class IncidentTracker:
    """Groups failure and recovery events into incidents (see the module docstring)."""

    def __init__(
        self,
        merge_window: float = 2.0,
        quiet: float = 5.0,
        max_incidents: int = 50,
        max_items: int = 50,
        owned_by: OwnedBy = _nothing_owned,
    ) -> None:
        """Create a tracker with no incidents.

        Args:
            merge_window: Deaths less than this many seconds after an incident opened join it.
            quiet: An incident with nothing unresolved closes after this many seconds without
                a new event of its own.
            max_incidents: How many incidents are kept (the oldest are dropped).
            max_items: How many ids each step lists (its count stays exact).
            owned_by: What an owner owned when it died (see :data:`OwnedBy`).
        """
        self.merge_window = merge_window
        self.quiet = quiet
        self.max_incidents = max_incidents
        self.max_items = max_items
        self.owned_by = owned_by
        self._incidents: list[dict[str, Any]] = []
        self._next_id = 1
        # Per incident id: objects it lost and those not yet recovered (sets, not shipped).
        self._lost: dict[str, set[str]] = {}
        self._pending: dict[str, set[str]] = {}
        self.changed = False

    def incidents(self) -> list[dict[str, Any]]:
        """The incidents, oldest first (live records: readers copy before mutating)."""
        return self._incidents

    # ------------------------------------------------------------------ folding

    def handle(self, ev: dict[str, Any]) -> None:
        """Fold one event; kinds outside :data:`INCIDENT_KINDS` are ignored."""
        kind = ev.get("kind")
        step = _STEP_OF.get(kind)  # type: ignore[arg-type]
        if step is None:
            return
        ts = float(ev.get("ts") or 0.0)
        inc = self._current(ts)
        if kind in _DEATHS:
            if kind == "owner.died":
                self._owner_died(inc, ev, ts)
                return
            if inc is None or ts - inc["started_at"] > self.merge_window:
                inc = self._open(ts, _title(ev), kind)
            elif kind == "node.died" and inc["cause"] != "node.died":
                inc["title"], inc["cause"] = _title(ev), kind  # the node is the bigger cause
            self._step(inc, "died", ts, _who(ev), ev)
            return
        if kind in ("task.failed", "object.failed") and not any(
            e in str(ev.get("error")) for e in _CRASHES
        ):
            return  # a user error is not a failure of the system
        if inc is None:
            if kind != "object.lost":
                return  # a retry of a user error, a late rebuild: no failure to tell
            inc = self._open(ts, "objects lost", kind)
        oid = ev.get("object_id")
        if kind == "object.lost" and oid:
            self._lost[inc["id"]].add(oid)
            self._pending[inc["id"]].add(oid)
        elif kind in ("object.promoted", "object.reconstructed", "object.failed") and oid:
            self._pending[inc["id"]].discard(oid)
        if kind == "object.failed" and oid:
            inc["failed_objects"] += 1
        item = oid or ev.get("task_id") or ev.get("actor_id") or "?"
        self._step(inc, step, ts, item, ev)

    def _current(self, ts: float) -> dict[str, Any] | None:
        """The latest incident if still open at ``ts``."""
        if not self._incidents:
            return None
        inc = self._incidents[-1]
        if self._pending[inc["id"]] or ts - inc["ended_at"] <= self.quiet:
            return inc
        return None

    def _open(self, ts: float, title: str, cause: str) -> dict[str, Any]:
        iid = f"incident-{self._next_id}"
        self._next_id += 1
        inc: dict[str, Any] = {
            "id": iid,
            "title": title,
            "cause": cause,
            "started_at": ts,
            "ended_at": ts,
            "duration": 0.0,
            "state": "recovered",
            "steps": [],
            "lost": 0,
            "pending": 0,
            "failed_objects": 0,
            "holders": [],
            "owner_bytes": 0,
        }
        self._incidents.append(inc)
        self._lost[iid] = set()
        self._pending[iid] = set()
        while len(self._incidents) > self.max_incidents:
            old = self._incidents.pop(0)
            del self._lost[old["id"]], self._pending[old["id"]]
        return inc

    def _owner_died(self, inc: dict[str, Any] | None, ev: dict[str, Any], ts: float) -> None:
        owner = str(ev.get("owner"))
        owned = self.owned_by(owner)
        if not owned:
            return  # every dying worker is an owner; one that owned nothing has no story
        if inc is None or ts - inc["started_at"] > self.merge_window:
            inc = self._open(ts, f"owner {owner} died", "owner.died")
        holders = sorted({b for _, _, borrowers in owned for b in borrowers})
        inc["holders"] = sorted({*inc["holders"], *holders})
        inc["owner_bytes"] += sum(size for _, size, _ in owned)
        for oid, _, _ in owned:
            self._step(inc, "owner_died", ts, oid, ev)

    def _step(
        self, inc: dict[str, Any], step: str, ts: float, item: str, ev: dict[str, Any]
    ) -> None:
        self.changed = True
        for s in inc["steps"]:
            if s["kind"] == step:
                break
        else:
            s = {"kind": step, "first": ts, "last": ts, "count": 0, "items": [], "details": []}
            inc["steps"].append(s)
            inc["steps"].sort(key=lambda x: STEP_ORDER.index(x["kind"]))
        s["count"] += 1
        s["first"] = min(s["first"], ts)
        s["last"] = max(s["last"], ts)
        if len(s["items"]) < self.max_items:
            s["items"].append(item)
            detail = ev.get("cause") or ev.get("reason") or ev.get("error")
            if detail and len(s["details"]) < 5 and detail not in s["details"]:
                s["details"].append(str(detail)[:200])
        inc["ended_at"] = max(inc["ended_at"], ts)
        inc["started_at"] = min(inc["started_at"], ts)
        inc["duration"] = inc["ended_at"] - inc["started_at"]
        iid = inc["id"]
        inc["lost"] = len(self._lost[iid])
        inc["pending"] = len(self._pending[iid])
        if inc["pending"]:
            inc["state"] = "recovering"
        elif inc["failed_objects"] or any(x["kind"] == "owner_died" for x in inc["steps"]):
            inc["state"] = "failed"
        else:
            inc["state"] = "recovered"

    # ------------------------------------------------------------------ invariants

    def validate(self) -> None:
        """Check the invariants in the module docstring.

        Raises:
            AssertionError: Naming the broken invariant and the incident.
        """
        assert len(self._incidents) <= self.max_incidents, "too many incidents kept"
        for inc in self._incidents:
            iid = inc["id"]
            assert self._pending[iid] <= self._lost[iid], f"{iid}: pending objects not lost"
            assert inc["started_at"] <= inc["ended_at"], f"{iid}: ends before it starts"
            for s in inc["steps"]:
                assert len(s["items"]) <= min(s["count"], self.max_items), (
                    f"{iid}: step {s['kind']} lists too many items"
                )


def _who(ev: dict[str, Any]) -> str:
    return str(ev.get("node_id") or ev.get("worker_id") or ev.get("actor_id") or "?")


def _title(ev: dict[str, Any]) -> str:
    kind = ev["kind"]
    if kind == "node.died":
        return f"node {ev.get('node_id')} died"
    if kind == "worker.died":
        cause = ev.get("cause")
        return f"worker {ev.get('worker_id')} died" + (f" ({cause})" if cause else "")
    return f"actor {ev.get('name') or ev.get('actor_id')} died"
