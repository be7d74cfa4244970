"""The driver's event collector: gathers every process's events into one live state model.

Owns the driver's :class:`~memlab.core.state_model.StateModel`, the driver's own
:class:`~memlab.core.events.EventBuffer` (``local``), the queue of batches ingested from other
processes, and the publisher thread that feeds subscribers (widgets, the web dashboard).

::

    driver code ──local.emit()──► local buffer ─┐
    socket reader threads ──ingest(batch)──► pending batches ─┤ fold (under _lock)
                                                              ▼
                      snapshot()/events() ◄── StateModel ──► publisher thread ──► subscribers
                                                              (≤ max_rate_hz calls each)

Invariants:
    * ``ingest`` and ``local.emit`` never wait for a fold: they append to a queue. Beyond
      ``max_pending`` waiting events, new batches are dropped and counted in ``dropped``.
    * The model is touched only under ``_lock``; readers get fresh copies, never live records.
    * Each fold applies the driver's local events before ingested ones: a remote process can
      only report on a task or object after the driver's emit for it (submission, ``put``).
    * Subscribers are called on the publisher thread, outside the lock. One that raises is
      logged and removed; the others keep receiving.
    * ``close`` is idempotent and bounded in time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from memlab.core.events import EventBuffer
from memlab.core.state_model import StateModel

__all__ = ["Collector"]

logger = logging.getLogger(__name__)

_SNAPSHOTS = frozenset({"objects", "tasks", "workers", "nodes", "actors", "ownership_graph"})
# How often the publisher folds when nobody is due, so buffers never fill up unread.
_FOLD_INTERVAL = 0.2
_JOIN_TIMEOUT = 2.0


class _Subscriber:
    __slots__ = ("active", "callback", "interval", "next_due", "since")

    def __init__(self, callback: Callable[[list[dict]], None], interval: float, since: int):
        self.callback = callback
        self.interval = interval
        self.since = since
        self.next_due = time.monotonic() + interval
        self.active = True


class Collector:
    """Collects events from the driver and every other process into one state model.

    Attributes:
        proc: The driver's process id, stamped on ``local`` events.
        local: The driver's own emitter; the runtime calls ``collector.local.emit(...)``.
    """

    def __init__(
        self, proc: str = "driver", max_log: int = 20_000, max_pending: int = 100_000
    ) -> None:
        """Create a collector with an empty model; no thread starts until one is needed.

        Args:
            proc: Process id of the driver.
            max_log: Bound on the model's event log (recent history for the live stream; the
                state itself lives in the model's records, so the log need not be long).
            max_pending: Bound on events waiting to be folded, per source (local, ingested).
        """
        self.proc = proc
        self.local = EventBuffer(proc, max_pending=max_pending)
        self.max_pending = max_pending
        self._model = StateModel(max_log=max_log)
        # Called before every snapshot so the driver's batched events are in it (runtime sets it).
        self.before_snapshot: Callable[[], None] | None = None
        self._lock = threading.RLock()  # guards _model
        self._batches: deque[list[dict]] = deque()
        self._count_lock = threading.Lock()  # guards _pending_count and _dropped only
        self._pending_count = 0
        self._dropped = 0
        self._ingested = 0
        self._subs: dict[int, _Subscriber] = {}
        self._subs_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._closed = False

    # ------------------------------------------------------------------ input

    @property
    def dropped(self) -> int:
        """Ingested events dropped because ``max_pending`` were already waiting."""
        return self._dropped

    def ingest(self, batch: list[dict]) -> None:
        """Queue a batch of events from another process (called from socket reader threads).

        Returns at once; folding happens on the next read or publisher tick. When
        ``max_pending`` events are already waiting, the whole batch is dropped and counted.

        Args:
            batch: Events as drained from that process's ``EventBuffer``; the collector takes
                ownership of the list, so the caller must not reuse it.
        """
        if not batch:
            return
        n = len(batch)
        with self._count_lock:
            if self._pending_count + n > self.max_pending:
                self._dropped += n
                return
            self._pending_count += n
            self._ingested += n
        self._batches.append(batch)
        if self._thread is None and not self._closed:
            self._start_thread()

    def _fold(self) -> StateModel:
        """Fold everything pending into the model; returns it (caller holds ``_lock``)."""
        model = self._model
        model.apply(self.local.drain())
        batches = self._batches
        taken = 0
        while batches:
            batch = batches.popleft()
            taken += len(batch)
            model.apply(batch)
        if taken:
            with self._count_lock:
                self._pending_count -= taken
        return model

    # ------------------------------------------------------------------ reads

    def model(self) -> StateModel:
        """Fold pending events and return the live model.

        The model keeps changing under other threads' folds; prefer :meth:`snapshot`, which
        copies under the lock. Use this only where no other thread folds (tests, shutdown).
        """
        with self._lock:
            return self._fold()

    def snapshot(self, what: str) -> Any:
        """Fold pending events and return a fresh copy of one view of the model.

        Args:
            what: One of ``"objects"``, ``"tasks"``, ``"workers"``, ``"nodes"``, ``"actors"``,
                ``"ownership_graph"``.

        Raises:
            ValueError: If ``what`` names no view.
        """
        if what not in _SNAPSHOTS:
            raise ValueError(
                f"unknown snapshot {what!r}; use one of {', '.join(sorted(_SNAPSHOTS))}"
            )
        if self.before_snapshot is not None:
            self.before_snapshot()
        with self._lock:
            return getattr(self._fold(), what)()

    def events(self, since: int | None = None) -> tuple[list[dict], int]:
        """Logged events with ``seq > since`` (all kept ones when None), and the latest seq."""
        if self.before_snapshot is not None:
            self.before_snapshot()
        with self._lock:
            return self._fold().events(since)

    def statistics(self) -> dict[str, int]:
        """Counters for overload and health: what was ingested, dropped, or malformed."""
        with self._lock:
            return {
                "ingested": self._ingested,
                "dropped_ingest": self._dropped,
                "dropped_local": self.local.dropped,
                "pending": self._pending_count + len(self.local),
                "log_dropped": self._model.log_dropped,
                "malformed": self._model.malformed,
                "latest_seq": self._model.latest_seq,
                "subscribers": len(self._subs),
            }

    # ------------------------------------------------------------------ subscriptions

    def subscribe(
        self,
        callback: Callable[[list[dict]], None],
        max_rate_hz: float = 10.0,
        since: int | None = None,
    ) -> Callable[[], None]:
        """Call ``callback(new_events)`` from the publisher thread as events arrive.

        Events are batched: each subscriber is called at most ``max_rate_hz`` times a second,
        and only when there is something new. A callback that raises is logged and removed.

        Args:
            callback: Receives a non-empty list of fresh event dicts, in ``seq`` order.
            max_rate_hz: Upper bound on calls per second for this subscriber.
            since: Deliver events after this seq (e.g. the seq of a snapshot just taken);
                default: only events folded after this call.

        Returns:
            A function that unsubscribes; once it returns no new call starts.

        Raises:
            ValueError: If ``max_rate_hz`` is not positive.
            RuntimeError: If the collector is closed.
        """
        if not max_rate_hz > 0:
            raise ValueError(f"max_rate_hz must be > 0, got {max_rate_hz!r}; pass e.g. 10.0")
        if self._closed:
            raise RuntimeError(
                "this collector is closed (the runtime shut down); start memlab again with "
                "memlab.init() and subscribe to its collector"
            )
        if since is None:
            with self._lock:
                since = self._fold().latest_seq
        sub = _Subscriber(callback, 1.0 / max_rate_hz, since)
        with self._subs_lock:
            self._subs[id(sub)] = sub
        if self._thread is None:
            self._start_thread()
        self._wake.set()

        def unsubscribe() -> None:
            sub.active = False
            with self._subs_lock:
                self._subs.pop(id(sub), None)

        return unsubscribe

    def _start_thread(self) -> None:
        with self._subs_lock:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(
                target=self._run, name="memlab-event-publisher", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while not self._closed:
            # Cleared before the work, so a wake-up that arrives during it is not lost.
            self._wake.clear()
            with self._lock:
                model = self._fold()
                latest = model.latest_seq
            now = time.monotonic()
            with self._subs_lock:
                subs = list(self._subs.values())
            for sub in subs:
                if sub.next_due <= now:
                    self._deliver(sub, latest)
            now = time.monotonic()
            timeout = min([_FOLD_INTERVAL, *(s.next_due - now for s in subs if s.active)])
            self._wake.wait(max(timeout, 0.001))

    def _deliver(self, sub: _Subscriber, latest: int) -> None:
        sub.next_due = time.monotonic() + sub.interval
        if not sub.active or sub.since >= latest:
            return
        with self._lock:
            batch, sub.since = self._model.events(sub.since)
        if not batch or not sub.active:
            return
        try:
            sub.callback(batch)
        except Exception:
            logger.exception(
                "memlab event subscriber %r raised and was unsubscribed; fix the callback "
                "and subscribe again",
                sub.callback,
            )
            sub.active = False
            with self._subs_lock:
                self._subs.pop(id(sub), None)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Stop the publisher thread and drop all subscribers. Idempotent, bounded in time."""
        self._closed = True
        with self._subs_lock:
            for sub in self._subs.values():
                sub.active = False
            self._subs.clear()
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=_JOIN_TIMEOUT)
