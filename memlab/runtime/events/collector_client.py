"""The driver's view of the collector process: snapshots, the event log, and subscriptions.

``memlab.state`` and the front ends read through this client; the model itself lives in the
collector process (:mod:`memlab.runtime.events.collector`). Every read first ships the driver's
pending events on the same connection it then asks on, so an answer always includes what the driver
did before the call (a ``put`` is in the next ``objects()``).

::

    memlab.state.objects() ──► before_read() (driver's batched object events)
                           ──► shipper.flush() ──► request "snapshot" ──► collector ──► copy
    subscribe(cb) ──► publisher thread: per subscriber, ≤ max_rate_hz requests "events_since"
                                        ──► cb(new events)

Invariants:
    * Subscribers are called on the publisher thread, never on the caller's. One that raises is
      logged and removed; the others keep receiving.
    * The publisher asks only when a subscriber is due, so an idle dashboard costs a request per
      subscriber per tick and nothing else.
    * ``close`` is idempotent and bounded in time.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from memlab.core.dashboard_view import check_sections
from memlab.core.events import checked_kinds
from memlab.exceptions import ConnectionClosedError, EventsUnavailableError
from memlab.runtime.events.collector import SNAPSHOTS
from memlab.runtime.events.shipper import EventShipper

__all__ = ["CollectorClient"]

logger = logging.getLogger(__name__)

# A large model takes a while to copy; a collector that needs longer than this is stuck.
_REQUEST_TIMEOUT = 30.0
# How long the publisher sleeps when no subscriber is due (it is woken on subscribe).
_IDLE_TICK = 0.5
_JOIN_TIMEOUT = 2.0


class _Subscriber:
    __slots__ = ("active", "callback", "interval", "kinds", "next_due", "since")

    def __init__(
        self,
        callback: Callable[[list[dict]], None],
        interval: float,
        since: int,
        kinds: list[str] | None,
    ) -> None:
        self.callback = callback
        self.interval = interval
        self.since = since
        self.kinds = kinds
        self.next_due = time.monotonic() + interval
        self.active = True


class CollectorClient:
    """Reads the session's state from the collector process."""

    def __init__(
        self, shipper: EventShipper, before_read: Callable[[], None] | None = None
    ) -> None:
        """Wrap the driver's shipper (whose connection carries the requests).

        Args:
            shipper: The driver's event shipper.
            before_read: Called before every read, so events the driver batches itself (holder
                changes, frees) are emitted before they are shipped.
        """
        self.shipper = shipper
        self.before_read = before_read
        self._subs: dict[int, _Subscriber] = {}
        self._subs_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._closed = False

    # ------------------------------------------------------------------ reads

    def _request(self, operation: str, header: dict[str, Any], flush: bool = True) -> Any:
        if flush:
            if self.before_read is not None:
                self.before_read()
            self.shipper.flush()
        conn = self.shipper.connection()  # connected at start: no waiting for it here
        if conn is None:
            raise EventsUnavailableError(operation, "the session's collector process is gone")
        try:
            reply, payload = conn.request(header, timeout=_REQUEST_TIMEOUT)
        except ConnectionClosedError as exc:
            raise EventsUnavailableError(
                operation, f"the session's collector process is gone ({exc})"
            ) from exc
        if reply.get("t") == "error":
            if reply.get("type") == "ValueError":
                raise ValueError(reply.get("message"))
            raise EventsUnavailableError(operation, f"the collector failed: {reply.get('message')}")
        return pickle.loads(payload)

    def snapshot(self, what: str) -> Any:
        """A fresh copy of one view of the model.

        Args:
            what: One of ``"objects"``, ``"tasks"``, ``"workers"``, ``"nodes"``, ``"actors"``,
                ``"ownership_graph"``.

        Raises:
            ValueError: If ``what`` names no view.
            EventsUnavailableError: If the collector process cannot answer.
        """
        if what not in SNAPSHOTS:
            raise ValueError(
                f"unknown snapshot {what!r}; use one of {', '.join(sorted(SNAPSHOTS))}"
            )
        return self._request(f"memlab.state.{what}()", {"t": "snapshot", "what": what})

    def events(
        self, since: int | None = None, kinds: Iterable[str] | None = None
    ) -> tuple[list[dict], int]:
        """Logged events with ``seq > since`` (all kept ones when None), only of ``kinds`` if
        given, and the latest seq.

        Raises:
            ValueError: If ``kinds`` names a kind memlab does not emit.
        """
        return self._events(since, None if kinds is None else checked_kinds(kinds))

    def _events(self, since: int | None, kinds: list[str] | None) -> tuple[list[dict], int]:
        header: dict[str, Any] = {"t": "events_since", "since": since}
        if kinds is not None:
            header["kinds"] = kinds  # already checked
        return self._request("memlab.state.events()", header)

    def view(
        self, since: int | None = None, sections: Iterable[str] | None = None
    ) -> dict[str, Any]:
        """The dashboard's aggregated view data changed after version ``since`` (all of it for
        None), computed in the collector process (see :mod:`memlab.core.dashboard_view`).

        A first read (``since`` None) includes everything the driver did before the call, like
        the other reads; later ones do not first flush the driver's pending events: a view
        polled ten times a second may lag by one shipping tick (10 ms), and forcing a flush
        per poll would cost the driver's submission thread.

        Args:
            since: The ``version`` of the last answer applied.
            sections: Only these sections (see ``memlab.core.dashboard_view.SECTIONS``).

        Raises:
            ValueError: If ``since`` is not a version or a section is unknown.
            EventsUnavailableError: If the collector process cannot answer.
        """
        if since is not None and (type(since) is not int or since < 0):
            raise ValueError(f"since must be a view version (an int >= 0) or None, got {since!r}")
        header: dict[str, Any] = {"t": "view", "since": since}
        if sections is not None:
            header["sections"] = check_sections(sections)
        return self._request("memlab.state.view()", header, flush=since is None)

    def statistics(self) -> dict[str, int]:
        """The collector's counters, plus what the driver's own buffer dropped and shipped."""
        stats = self._request("collector statistics", {"t": "statistics"})
        stats["driver_dropped"] = self.shipper.buffer.dropped
        stats["driver_shipped"] = self.shipper.shipped
        return stats

    # ------------------------------------------------------------------ subscriptions

    def subscribe(
        self,
        callback: Callable[[list[dict]], None],
        max_rate_hz: float = 10.0,
        since: int | None = None,
        kinds: Iterable[str] | None = None,
    ) -> Callable[[], None]:
        """Call ``callback(new_events)`` from the publisher thread as events arrive.

        Events are batched: each subscriber is called at most ``max_rate_hz`` times a second,
        and only when there is something new. A callback that raises is logged and removed.

        Args:
            callback: Receives a non-empty list of fresh event dicts, in ``seq`` order.
            max_rate_hz: Upper bound on calls per second for this subscriber.
            since: Deliver events after this seq (e.g. the seq of a snapshot just taken);
                default: only events folded after this call.
            kinds: Deliver only events of these kinds (default: all). The collector filters
                before it builds the event dicts, so watching rare kinds costs the driver
                little even under a stream of task events.

        Returns:
            A function that unsubscribes; once it returns no new call starts.

        Raises:
            ValueError: If ``max_rate_hz`` is not positive, or ``kinds`` names a kind memlab
                does not emit.
            RuntimeError: If the client is closed (the runtime shut down).
        """
        if not max_rate_hz > 0:
            raise ValueError(f"max_rate_hz must be > 0, got {max_rate_hz!r}; pass e.g. 10.0")
        wanted = None if kinds is None else checked_kinds(kinds)
        if self._closed:
            raise RuntimeError(
                "this collector is closed (the runtime shut down); start memlab again with "
                "memlab.init() and subscribe to its collector"
            )
        if since is None:
            since = self._request("memlab.state.subscribe()", {"t": "statistics"})["latest_seq"]
        sub = _Subscriber(callback, 1.0 / max_rate_hz, since, wanted)
        with self._subs_lock:
            self._subs[id(sub)] = sub
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="memlab-event-publisher", daemon=True
                )
                self._thread.start()
        self._wake.set()

        def unsubscribe() -> None:
            sub.active = False
            with self._subs_lock:
                self._subs.pop(id(sub), None)

        return unsubscribe

    def _run(self) -> None:
        while not self._closed:
            self._wake.clear()  # before the work, so a wake-up during it is not lost
            now = time.monotonic()
            with self._subs_lock:
                subs = list(self._subs.values())
            for sub in subs:
                if sub.next_due <= now and not self._closed:
                    self._deliver(sub)
            now = time.monotonic()
            timeout = min([_IDLE_TICK, *(s.next_due - now for s in subs if s.active)])
            self._wake.wait(max(timeout, 0.001))

    def _deliver(self, sub: _Subscriber) -> None:
        sub.next_due = time.monotonic() + sub.interval
        if not sub.active:
            return
        try:
            batch, latest = self._events(sub.since, sub.kinds)
        except EventsUnavailableError:
            return  # the session is ending; close() stops this thread
        sub.since = max(sub.since, latest)
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
