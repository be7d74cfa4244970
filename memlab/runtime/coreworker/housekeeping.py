"""The core worker's housekeeping thread: what is batched rather than sent at once.

Built and started by ``CoreWorker``. Every ``HOUSEKEEPING_PERIOD`` the thread sends the borrow
releases and store deletes gathered since the last round (``refcounting``), unpins store reads,
emits the batched object events (holder changes, frees), returns idle leases, fails tasks whose
worker's crash report never came, and calls the worker's ``on_flush`` hook. After
``QUIET_AFTER`` with nothing to do it ticks every ``IDLE_PERIOD`` instead, so an idle runtime
wakes each process 10 times a second rather than 100; the first round after a pause comes at
most that much later, and nothing on the path of a task waits for a round.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from memlab.exceptions import ConnectionClosedError
from memlab.runtime.coreworker.ports import WorkerHooks

if TYPE_CHECKING:
    from memlab.core.events import EventBuffer
    from memlab.core.ownership import ReferenceTable
    from memlab.runtime.coreworker.peers import Peers
    from memlab.runtime.coreworker.ports import Scheduling
    from memlab.runtime.coreworker.refcounting import RefCounting
    from memlab.runtime.coreworker.store_client import StoreClient

log = logging.getLogger("memlab.runtime")

#: Set (to a period in seconds) by test suites: every process checks its ownership invariants
#: that often in its housekeeping thread, and keeps the first failure for ``validate`` to report.
VALIDATE_ENV = "MEMLAB_VALIDATE_EVERY"

HOUSEKEEPING_PERIOD = 0.01
QUIET_AFTER = 0.5
IDLE_PERIOD = 0.1


class Housekeeping:
    """The housekeeping thread of one process, and what it flushes."""

    def __init__(
        self,
        proc: str,
        lock: threading.RLock,
        table: ReferenceTable,
        events: EventBuffer,
        peers: Peers,
        refs: RefCounting,
        scheduling: Scheduling,
        validate: Callable[[], None],
    ) -> None:
        self.proc = proc
        self.lock = lock
        self.table = table
        self.events = events
        self.peers = peers
        self.refs = refs
        self.scheduling = scheduling
        self.validate = validate  # the core's invariant check
        self.store: StoreClient | None = None
        self.hooks = WorkerHooks()
        self.validation_failure: str | None = None  # the first periodic check that failed
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"memlab-housekeeping-{proc}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """End the thread (after its current round), unless called from it."""
        self._stopped.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=2)

    def attach_store(self, store: StoreClient) -> None:
        self.store = store

    def use_hooks(self, hooks: WorkerHooks) -> None:
        self.hooks = hooks

    def _run(self) -> None:
        quiet_rounds, quiet_limit = 0, round(QUIET_AFTER / HOUSEKEEPING_PERIOD)
        validate_every = float(os.environ.get(VALIDATE_ENV, "0") or 0)
        next_validation = time.monotonic() + validate_every
        while not self._stopped.wait(
            IDLE_PERIOD if quiet_rounds >= quiet_limit else HOUSEKEEPING_PERIOD
        ):
            try:
                self.flush()
            except Exception:  # keep the thread alive whatever one round hits
                log.exception("%s: housekeeping round failed", self.proc)
            quiet_rounds = quiet_rounds + 1 if self._quiet() else 0
            if validate_every and time.monotonic() >= next_validation:
                next_validation = time.monotonic() + validate_every
                self._validate_in_background()

    def _validate_in_background(self) -> None:
        try:
            self.validate()
        except AssertionError as exc:
            if self.validation_failure is None:
                self.validation_failure = f"{self.proc} (periodic check): {exc}"
            log.error("%s: ownership invariant broken: %s", self.proc, exc)

    def _quiet(self) -> bool:
        """Nothing waits for a housekeeping round: no queued message, release, delete or
        event, no task or lease in flight here, and no task running here."""
        return not (
            self.peers.outbox
            or self.refs.has_pending()
            or (self.store is not None and self.store.has_pending())
            or not self.scheduling.idle()
            or self.hooks.busy()
        )

    def flush(self) -> None:
        self.flush_object_events()
        with self.lock:
            releases, deletes = self.refs.take_batches()
        for owner, released in releases.items():
            try:
                self.peers.conn_to(owner).send(
                    {
                        "t": "release_borrow",
                        "oids": [oid for oid, _ in released],
                        "counts": [n for _, n in released],
                    }
                )
            except ConnectionClosedError:
                pass
        for node, oids in deletes.items():
            self.peers.send_or_drop(node, {"t": "delete", "oids": oids})
        if self.store is not None:
            self.store.flush()
        self.scheduling.housekeeping()
        self.peers.drain_outbox()
        self.hooks.on_flush()

    def flush_deletes(self) -> None:
        """Send the batched store deletes and view releases now (a ``put`` needs the room)."""
        with self.lock:
            deletes = self.refs.take_deletes()
        for node, oids in deletes.items():
            self.peers.send_or_drop(node, {"t": "delete", "oids": oids})
        if self.store is not None:
            self.store.flush()

    def flush_object_events(self) -> None:
        """Emit one ``object.holders`` event per owned object whose holders changed, and one
        ``object.freed`` for every object freed since the last flush."""
        with self.lock:
            dirty, freed = self.refs.take_object_events()
            if not self.events.enabled:
                return
            if freed:
                self.events.emit("object.freed", object_ids=tuple(freed))
            holders = []
            for oid in dirty:
                entry = self.table.get(oid)
                if entry is not None and entry.owned:
                    holders.append((oid, entry.holders()))
        for oid, held in holders:
            self.events.emit("object.holders", object_id=oid.hex(), **held)
