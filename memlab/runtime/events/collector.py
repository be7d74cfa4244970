"""The session's event collector: folds every process's events into one live state model.

Runs in a process of its own (:mod:`memlab.runtime.events.collector_main`), so the fold, the model's
memory and its garbage-collector time never land on the driver, whose thread is the bottleneck
of task submission, nor on the workers. Every process ships batches here
(:mod:`memlab.runtime.events.shipper`); the driver reads snapshots back by request
(:mod:`memlab.runtime.events.collector_client`).

::

    driver, node managers, workers ──"events" (pickled batch)──► reader thread per connection
                                                                  │ log + backlog (under _lock)
                                                                  ▼
                      "snapshot" / "events_since" / "statistics" ◄── StateModel
                        (a snapshot first folds the backlog)
                      "view" ◄── DashboardView (aggregated dashboard data, as deltas)

The model folds lazily (see :mod:`memlab.core.state_model`): ingesting a batch logs it, and the
records are brought up to date when a snapshot asks for them or the backlog reaches its bound.
A session nobody watches thus spends the collector's CPU on decoding and logging, which matters
on a small machine where every core also runs workers.

Invariants:
    * Batches fold in arrival order per connection; across connections in any order. The model
      upserts and never regresses a record (see :mod:`memlab.core.state_model`), so a worker's
      event folded before its owner's is harmless.
    * A request on a connection is answered after every batch that connection sent before it:
      a process that ships and then asks sees its own events in the answer.
    * The model is touched only under ``_lock``; replies are pickled copies, never live records.
    * A batch that cannot be decoded is counted in ``malformed_batches`` and dropped; the
      connection and the other processes' events are unaffected.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
from typing import Any

from memlab.core.dashboard_view import INCIDENT_KINDS, SECTIONS, DashboardView
from memlab.core.state_model import StateModel
from memlab.protocol.transport import Connection

__all__ = ["SNAPSHOTS", "Collector"]

logger = logging.getLogger(__name__)

#: The views :meth:`Collector.snapshot` serves.
SNAPSHOTS = frozenset({"objects", "tasks", "workers", "nodes", "actors", "ownership_graph"})


class Collector:
    """Folds ingested event batches into a :class:`StateModel` and serves reads of it."""

    def __init__(self, max_log: int = 20_000) -> None:
        """Create a collector with an empty model.

        Args:
            max_log: Bound on the model's event log (recent history for the live stream; the
                state itself lives in the model's records, so the log need not be long).
        """
        self._model = StateModel(max_log=max_log)
        self._lock = threading.Lock()
        self._ingested = 0
        self._malformed_batches = 0
        # Each process reports how many events its own buffer dropped (overload), cumulatively.
        self._dropped_by: dict[str, int] = {}
        self._view: DashboardView | None = None  # made when a dashboard first asks

    # ------------------------------------------------------------------ input

    def ingest(self, batch: list[Any], proc: str | None = None, dropped: int = 0) -> None:
        """Take a batch of events from one process (logged now, folded when read).

        Args:
            batch: Events as drained from that process's ``EventBuffer`` (dicts and positional
                records); the collector takes ownership of them.
            proc: The shipping process: stamped on events that do not name theirs, and the
                owner of the drop count.
            dropped: How many events that process's buffer has dropped so far.
        """
        with self._lock:
            self._model.apply_batch(batch, proc or "unknown")
            self._ingested += len(batch)
            if proc is not None:
                self._dropped_by[proc] = dropped

    # ------------------------------------------------------------------ reads

    def model(self) -> StateModel:
        """The live model (tests and shutdown only: other threads keep folding into it)."""
        return self._model

    def snapshot(self, what: str) -> Any:
        """A fresh copy of one view of the model.

        Args:
            what: One of :data:`SNAPSHOTS`.

        Raises:
            ValueError: If ``what`` names no view.
        """
        if what not in SNAPSHOTS:
            raise ValueError(
                f"unknown snapshot {what!r}; use one of {', '.join(sorted(SNAPSHOTS))}"
            )
        with self._lock:
            return getattr(self._model, what)()

    def events(
        self, since: int | None = None, kinds: frozenset[str] | None = None
    ) -> tuple[list[dict], int]:
        """Logged events with ``seq > since`` (all kept ones when None), only of ``kinds`` if
        given, and the latest seq."""
        with self._lock:
            return self._model.events(since, kinds)

    def view(self, since: int | None = None, sections: list[str] | None = None) -> dict[str, Any]:
        """The dashboard's view data that changed after version ``since`` (see
        :mod:`memlab.core.dashboard_view`), refreshed first if due.

        The aggregation runs here, in the collector's process, so a dashboard costs the kernel
        one small request per tick instead of the raw event stream. Refreshes are bounded in
        rate and in CPU share however many dashboards ask, and build only the ``sections``
        asked for (default: all).
        """
        wanted = SECTIONS if sections is None else tuple(sections)
        with self._lock:
            view = self._view
            if view is None:
                view = self._view = DashboardView()
            now = time.monotonic()
            started = time.perf_counter()
            refreshed = view.due(now, self._model.latest_seq, wanted)
            if refreshed:
                records = self._model.records()
                events, _ = self._model.events(view.event_cursor, INCIDENT_KINDS)
                view.refresh(records, events, self._model.latest_seq, now, sections=wanted)
            delta = view.delta(since, wanted)
            if refreshed:  # the fold it forced, the refresh and the delta: what spacing bounds
                view.last_cost = time.perf_counter() - started
            return delta

    def statistics(self) -> dict[str, int]:
        """Counters for overload and health: what was ingested, dropped, or malformed."""
        with self._lock:
            return {
                "ingested": self._ingested,
                "dropped": sum(self._dropped_by.values()),
                "malformed_batches": self._malformed_batches,
                "log_dropped": self._model.log_dropped,
                "malformed": self._model.malformed,
                "latest_seq": self._model.latest_seq,
            }

    # ------------------------------------------------------------------ wire

    def on_message(self, conn: Connection, header: dict[str, Any], payload: bytes) -> None:
        """Serve one frame from an authenticated peer (called on its reader thread)."""
        kind = header.get("t")
        if kind == "events":
            proc = header.get("proc") or conn.name
            try:
                batch = pickle.loads(payload)
                if not isinstance(batch, list):
                    raise TypeError(f"an events batch is a list, not {type(batch).__name__}")
            except Exception:
                logger.exception("undecodable event batch from %s dropped", conn.name)
                with self._lock:
                    self._malformed_batches += 1
                return
            self.ingest(batch, proc, header.get("dropped", 0))
            return
        if "rid" not in header:
            return  # hello and other notices need no answer
        try:
            if kind == "snapshot":
                body: Any = self.snapshot(header["what"])
            elif kind == "events_since":
                kinds = header.get("kinds")
                body = self.events(header.get("since"), None if kinds is None else frozenset(kinds))
            elif kind == "view":
                body = self.view(header.get("since"), header.get("sections"))
            elif kind == "statistics":
                body = self.statistics()
            else:
                raise ValueError(f"the collector does not serve {kind!r} requests")
        except Exception as exc:  # answer with the error: the caller raises it, we keep serving
            conn.reply(header, {"t": "error", "type": type(exc).__name__, "message": str(exc)})
            return
        conn.reply(header, {"t": "ok"}, pickle.dumps(body, protocol=5))
