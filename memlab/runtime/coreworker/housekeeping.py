"""The core worker's housekeeping thread: what is batched rather than sent at once.

A mixin of ``CoreWorker``. Every ``HOUSEKEEPING_PERIOD`` the thread sends the borrow releases
and store deletes gathered since the last round, unpins store reads, emits the batched object
events (holder changes, frees), returns idle leases and fails tasks whose worker's crash report
never came. After ``QUIET_AFTER`` with nothing to do it ticks every ``IDLE_PERIOD`` instead, so
an idle runtime wakes each process 10 times a second rather than 100; the first round after a
pause comes at most that much later, and nothing on the path of a task waits for a round.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from memlab.exceptions import ConnectionClosedError

if TYPE_CHECKING:
    from collections import deque

    from memlab.core.events import EventBuffer
    from memlab.core.ownership import ReferenceTable
    from memlab.protocol.transport import Connection
    from memlab.runtime.coreworker.store_client import StoreClient

log = logging.getLogger("memlab.runtime")

#: Set (to a period in seconds) by test suites: every process checks its ownership invariants
#: that often in its housekeeping thread, and keeps the first failure for ``validate`` to report.
VALIDATE_ENV = "MEMLAB_VALIDATE_EVERY"

HOUSEKEEPING_PERIOD = 0.01
QUIET_AFTER = 0.5
IDLE_PERIOD = 0.1


class Housekeeping:
    # Owned by CoreWorker.
    proc: str
    lock: Any
    table: ReferenceTable
    events: EventBuffer
    store: StoreClient | None
    submitter: Any
    on_flush: Any
    busy: Any
    _stopped: threading.Event
    _outbox: deque[tuple[str, dict[str, Any]]]
    _releases: dict[str, list[tuple[bytes, int]]]
    _deletes: dict[str, list[bytes]]
    _dirty: set[bytes]
    _freed: list[str]
    validation_failure: str | None

    if TYPE_CHECKING:

        def validate(self) -> None: ...

        def conn_to(self, peer: str) -> Connection: ...

        def drain_outbox(self) -> None: ...

    def _housekeeping(self) -> None:
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
            self._outbox
            or self._releases
            or self._deletes
            or self._dirty
            or self._freed
            or (self.store is not None and self.store.has_pending())
            or not self.submitter.idle()
            or (self.busy is not None and self.busy())
        )

    def flush(self) -> None:
        self.flush_object_events()
        with self.lock:
            releases, self._releases = self._releases, defaultdict(list)
            deletes, self._deletes = self._deletes, defaultdict(list)
        for owner, released in releases.items():
            try:
                self.conn_to(owner).send(
                    {
                        "t": "release_borrow",
                        "oids": [oid for oid, _ in released],
                        "counts": [n for _, n in released],
                    }
                )
            except ConnectionClosedError:
                pass
        for node, oids in deletes.items():
            self.submitter.send_to_node(node, {"t": "delete", "oids": oids})
        if self.store is not None:
            self.store.flush()
        self.submitter.housekeeping()
        self.drain_outbox()
        if self.on_flush is not None:
            self.on_flush()

    def flush_object_events(self) -> None:
        """Emit one ``object.holders`` event per owned object whose holders changed, and one
        ``object.freed`` for every object freed since the last flush."""
        with self.lock:
            dirty, self._dirty = self._dirty, set()
            freed, self._freed = self._freed, []
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
