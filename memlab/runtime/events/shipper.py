"""Ships one process's events to the session's collector process, off the runtime's threads.

Every process of a session (driver, node managers, workers) emits into its own
:class:`~memlab.core.events.EventBuffer`; its shipper drains that buffer every ``interval``
seconds and sends the batch, pickled, over its own authenticated connection to the collector
(``<session_dir>/collector.sock``). Folding happens there, so no runtime process spends its
cores (or its garbage collector's time) on the state model.

::

    runtime threads ──emit()──► EventBuffer ──drain() every 10 ms──► shipper thread
                                                                     │ pickle, send
                                                                     ▼
                                             collector process (memlab.runtime.events.collector)

Invariants:
    * Shipping never blocks a runtime thread: only the shipper's own thread (or an explicit
      :meth:`flush`) sends, so a slow collector backs events up in the bounded buffer, where
      overload drops and counts them (``EventBuffer.dropped``), never slows tasks.
    * Events leave in emission order: drains and sends happen under one lock, on one connection.
    * Until the collector accepts a connection (it may start after this process), events stay
      in the buffer; none is drained into a batch that cannot be sent.
    * ``close`` ships what is left (best effort, bounded in time) and stops the thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import threading
import time
from typing import Any

from memlab.core.events import EventBuffer
from memlab.exceptions import ConnectionClosedError, ProtocolError
from memlab.protocol.endpoints import connect
from memlab.protocol.transport import Connection

__all__ = ["COLLECTOR", "EventShipper", "collector_address"]

log = logging.getLogger("memlab.events")

#: The collector's process id, as peers name it.
COLLECTOR = "collector"

# Events per frame: bounds the pickling pause and the frame size (a few hundred KiB).
_CHUNK = 2_000
# After a failed connect, wait this long before the next attempt (the collector may be starting).
_RETRY = 0.05
# After this long with no event, drain every _IDLE_INTERVAL: an idle process wakes 10 times a
# second, not 100; the first events after a pause wait at most that long.
_QUIET_AFTER = 0.5
_IDLE_INTERVAL = 0.1


def collector_address(session_dir: str) -> str:
    """The collector's socket path in a session directory."""
    return os.path.join(session_dir, f"{COLLECTOR}.sock")


class EventShipper:
    """Drains one :class:`EventBuffer` to the collector on a thread of its own.

    Attributes:
        buffer: The process's event buffer.
        shipped: Events sent so far.
    """

    def __init__(
        self,
        buffer: EventBuffer,
        session_dir: str,
        secret: bytes,
        interval: float = 0.01,
    ) -> None:
        """Prepare a shipper; nothing connects or runs until :meth:`start` or :meth:`flush`.

        Args:
            buffer: The buffer to drain (its ``proc`` names this process to the collector).
            session_dir: The session directory holding the collector's socket.
            secret: The per-session secret.
            interval: Seconds between drains.
        """
        self.buffer = buffer
        self.shipped = 0
        self._path = collector_address(session_dir)
        self._secret = secret
        self._interval = interval
        self._lock = threading.Lock()  # one drain-and-send at a time, in order
        self._conn: Connection | None = None
        self._retry_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> EventShipper:
        """Start the shipping thread (idempotent); returns self."""
        if self._thread is None and self.buffer.enabled:
            self._thread = threading.Thread(
                target=self._run, name="memlab-event-shipper", daemon=True
            )
            self._thread.start()
        return self

    def connection(self, wait: float = 0.0) -> Connection | None:
        """The connection to the collector, connecting if needed.

        Args:
            wait: Seconds to keep retrying while the collector is not (yet) listening.

        Returns:
            The open connection, or None if the collector cannot be reached now.
        """
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        deadline = time.monotonic() + wait
        while True:
            now = time.monotonic()
            if now >= self._retry_at:
                try:
                    conn = connect(
                        self._path,
                        self._secret,
                        f"{self.buffer.proc}->collector",
                        _ignore_message,
                        _ignore_close,
                    )
                except (ConnectionClosedError, ProtocolError, OSError):
                    self._retry_at = now + _RETRY
                else:
                    conn.peer = COLLECTOR
                    self._conn = conn
                    return conn
            if now >= deadline or self._stop.is_set():
                return None
            self._stop.wait(min(_RETRY, max(deadline - now, 0.0)))

    def flush(self) -> bool:
        """Ship everything emitted so far, now, on the calling thread.

        Returns:
            True if the buffer was sent (or empty), False if the collector is unreachable.
        """
        with self._lock:
            if not len(self.buffer):
                return True
            conn = self.connection()
            if conn is None:
                return False
            batch = self.buffer.drain()
            try:
                for start in range(0, len(batch), _CHUNK):
                    chunk = batch[start : start + _CHUNK]
                    conn.send(
                        {"t": "events", "proc": self.buffer.proc, "dropped": self.buffer.dropped},
                        pickle.dumps(chunk, protocol=5),
                    )
                    self.shipped += len(chunk)
            except ConnectionClosedError:
                # The collector is gone (shutdown, or it crashed): what was drained is lost,
                # like any overload drop; the next flush reconnects if it comes back.
                return False
            return True

    def _run(self) -> None:
        quiet_rounds, quiet_limit = 0, round(_QUIET_AFTER / self._interval)
        while not self._stop.wait(
            _IDLE_INTERVAL if quiet_rounds >= quiet_limit else self._interval
        ):
            quiet_rounds = 0 if len(self.buffer) else quiet_rounds + 1
            try:
                self.flush()
            except Exception:  # keep shipping whatever one round hits
                log.exception("%s: shipping events failed", self.buffer.proc)

    def close(self, timeout: float = 1.0) -> None:
        """Ship what is left (best effort), stop the thread and close the connection."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        with contextlib.suppress(Exception):
            self.flush()
        conn = self._conn
        if conn is not None:
            conn.close()


def _ignore_message(conn: Connection, header: dict[str, Any], payload: bytes) -> None:
    """The collector only replies to requests; replies never reach on_message."""


def _ignore_close(conn: Connection, error: BaseException | None) -> None:
    """A lost collector is noticed at the next send; nothing to clean up here."""
