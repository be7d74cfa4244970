"""Authenticated Unix-socket connections: framed send, request/reply, and a listener.

Threading model (plain threads on blocking sockets; one thread hop less per round trip than
an event loop, which is what the control plane's latency is made of)::

    any thread ── send()/request() ──[send lock]── sendall ──► peer
                                                                 │
    peer ──► reader thread ── FrameReader.read() ── "rr" in header? ─yes─► waiter of request()
                                                           └─no──► on_message(conn, header, payload)

    Listener: accept thread ──► one short-lived handshake thread per socket
                                 ──► on_connection(conn) ──► conn.start()

Invariants:
    * No frame of a peer is parsed (let alone handed to ``on_message``) before the peer passed
      :func:`~memlab.protocol.auth.server_handshake` / ``client_handshake``.
    * Frames from one connection reach ``on_message`` in arrival order, on that connection's
      reader thread; a frame sent by one thread is never interleaved with another's.
    * ``close()`` is idempotent: the first caller (any thread) shuts the socket down, fails
      every pending request with ``ConnectionClosedError`` and runs ``on_close`` exactly once.
    * A misbehaving peer (malformed frame, EOF, reset) closes only its own connection; an
      exception from ``on_message`` is logged and the connection stays up.
    * The socket fd is released only after both the reader thread and every sender are done
      with it, so a closed fd number can never be reused under a thread still using it.
"""

from __future__ import annotations

import _thread
import contextlib
import itertools
import logging
import socket
import threading
from collections.abc import Callable

from memlab.exceptions import ConnectionClosedError, ProtocolError
from memlab.protocol.frames import FrameReader, encode

__all__ = ["CloseHandler", "Connection", "MessageHandler"]

log = logging.getLogger("memlab.protocol")

MessageHandler = Callable[["Connection", dict[str, object], bytes], None]
CloseHandler = Callable[["Connection", "BaseException | None"], None]

# Bursts of small frames from several senders fill the default ~200 KiB buffer quickly; the
# kernel caps this at net.core.wmem_max / rmem_max.
_SOCKET_BUFFER = 1 << 20


def _tune(sock: socket.socket) -> None:
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)


class _Waiter:
    """One pending request: a pre-acquired lock the reader thread releases (cheaper than Event)."""

    __slots__ = ("error", "header", "lock", "payload")

    def __init__(self) -> None:
        self.lock = _thread.allocate_lock()
        self.lock.acquire()
        self.header: dict[str, object] | None = None
        self.payload: bytes = b""
        self.error: BaseException | None = None


class Connection:
    """One authenticated, framed, bidirectional connection to another memlab process.

    Attributes:
        name: Label for messages and logs.
        peer: Free slot the runtime fills in after its own hello message.
        closed: True once ``close()`` ran (for whatever reason).
    """

    def __init__(
        self,
        sock: socket.socket,
        name: str,
        on_message: MessageHandler,
        on_close: CloseHandler,
    ) -> None:
        """Wrap an already authenticated, connected stream socket.

        Args:
            sock: Connected socket; it is put in blocking mode and owned by this object.
            name: Label for messages and logs.
            on_message: Called on the reader thread for every frame that is not a reply.
            on_close: Called exactly once, with ``None`` for a clean close or the error.
        """
        self.name = name
        self.peer: str | None = None
        self.closed = False
        sock.settimeout(None)
        _tune(sock)
        self._sock = sock
        self._sendall = sock.sendall
        self._reader = FrameReader(sock)
        self._on_message = on_message
        self._on_close = on_close
        self._send_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._pending: dict[int, _Waiter] = {}
        self._rids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._reader_ident: int | None = None

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<Connection {self.name!r} peer={self.peer!r} {state}>"

    def _who(self) -> str:
        return self.peer or self.name

    def start(self) -> None:
        """Start the daemon reader thread; frames are read (and dispatched) only after this.

        Raises:
            RuntimeError: The connection was already started.
            ConnectionClosedError: The connection is closed.
        """
        with self._state_lock:
            if self.closed:
                raise ConnectionClosedError(self._who(), "start() on a closed connection")
            if self._thread is not None:
                raise RuntimeError(f"connection {self.name!r} was already started; start it once")
            self._thread = threading.Thread(
                target=self._run, name=f"memlab-reader-{self.name}", daemon=True
            )
            self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the reader thread to exit (after ``close()`` or the peer's EOF).

        Returns:
            True if no reader thread is left running.
        """
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return thread is None
        thread.join(timeout)
        return not thread.is_alive()

    def send(self, header: dict[str, object], payload: bytes | memoryview = b"") -> None:
        """Send one frame; thread-safe, returns once the kernel has all the bytes.

        Raises:
            ConnectionClosedError: The connection is closed or broke while sending (then it
                is closed).
            ValueError: The frame cannot be encoded (see ``frames.encode``).
        """
        frames = encode(header, payload)
        with self._send_lock:
            if self.closed:
                raise ConnectionClosedError(self._who(), "the connection is closed")
            try:
                if len(frames) == 1:
                    self._sendall(frames[0])
                else:
                    for buf in frames:
                        self._sendall(buf)
                return
            except OSError as exc:
                error = exc
        # Close outside the send lock: on_close may run here and may send elsewhere.
        closed = ConnectionClosedError(self._who(), f"send failed: {error}")
        closed.__cause__ = error
        self.close(closed)
        raise ConnectionClosedError(self._who(), f"send failed: {error}") from error

    def request(
        self,
        header: dict[str, object],
        payload: bytes | memoryview = b"",
        timeout: float | None = None,
    ) -> tuple[dict[str, object], bytes]:
        """Send a request and wait for the reply whose ``"rr"`` equals the request's ``"rid"``.

        Args:
            header: Request header; a copy gets a fresh int ``"rid"``.
            payload: Raw payload bytes.
            timeout: Seconds to wait for the reply; ``None`` waits until the connection closes.

        Returns:
            The reply's ``(header, payload)``.

        Raises:
            ConnectionClosedError: The connection closed before the reply arrived.
            TimeoutError: No reply within ``timeout`` (a later reply is dropped).
            RuntimeError: Called from this connection's own reader thread (it would deadlock).
        """
        if self._reader_ident == threading.get_ident():
            raise RuntimeError(
                f"request() on {self.name!r} from its own reader thread would wait forever for "
                "a reply only that thread can read; hand the work to another thread"
            )
        rid = next(self._rids)
        header = {**header, "rid": rid}
        waiter = _Waiter()
        with self._state_lock:
            if self.closed:
                raise ConnectionClosedError(self._who(), "the connection is closed")
            self._pending[rid] = waiter
        try:
            self.send(header, payload)
        except BaseException:
            self._pending.pop(rid, None)
            raise
        try:
            arrived = waiter.lock.acquire(True, -1 if timeout is None else max(timeout, 0.0))
        except BaseException:  # KeyboardInterrupt in a notebook: forget the waiter
            self._pending.pop(rid, None)
            raise
        if not arrived:
            if self._pending.pop(rid, None) is not None:
                raise TimeoutError(
                    f"no reply from {self._who()} to {header.get('t')!r} (rid {rid}) within "
                    f"{timeout} s; the peer is busy or stuck - raise the timeout or check it"
                )
            # The reader thread (or close) already claimed the waiter: the outcome is imminent.
            waiter.lock.acquire()
        if waiter.error is not None:
            raise waiter.error
        return waiter.header, waiter.payload  # type: ignore[return-value]

    def reply(
        self,
        request_header: dict[str, object],
        header: dict[str, object],
        payload: bytes | memoryview = b"",
    ) -> None:
        """Send ``header`` (plus ``"rr"``) as the reply to the request ``request_header``.

        Raises:
            ValueError: ``request_header`` has no ``"rid"`` (it was sent with ``send``).
            ConnectionClosedError: As for ``send``.
        """
        try:
            rid = request_header["rid"]
        except KeyError:
            raise ValueError(
                f"cannot reply to {request_header.get('t')!r}: it carries no 'rid', so the "
                "sender used send() and waits for no reply; answer with send() instead"
            ) from None
        self.send({**header, "rr": rid}, payload)

    def close(self, reason: BaseException | None = None) -> None:
        """Close the connection; idempotent and callable from any thread.

        Args:
            reason: ``None`` for a deliberate/clean close, else the error that ended it;
                passed to ``on_close`` and chained into the errors of pending requests.
        """
        with self._state_lock:
            if self.closed:
                return
            self.closed = True
            pending, self._pending = self._pending, {}
            started = self._thread is not None
        # shutdown() wakes the reader (EOF) and any sender blocked in sendall (EPIPE).
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        with self._send_lock:
            # The fd is really released when the reader's buffered file is closed too.
            self._sock.close()
        if not started:
            self._reader.close()
        why = "closed locally" if reason is None else f"{type(reason).__name__}: {reason}"
        for waiter in pending.values():
            error = ConnectionClosedError(self._who(), why)
            error.__cause__ = reason
            waiter.error = error
            waiter.lock.release()
        try:
            self._on_close(self, reason)
        except Exception:
            log.exception("on_close handler of connection %r raised", self.name)

    def _run(self) -> None:
        self._reader_ident = threading.get_ident()
        read = self._reader.read
        on_message = self._on_message
        reason: BaseException | None = None
        try:
            while True:
                header, payload = read()
                rr = header.get("rr")
                if rr is not None:
                    if type(rr) is not int:
                        raise ProtocolError(
                            f"reply frame carries a non-int 'rr' ({rr!r}); the peer is not "
                            "speaking the memlab protocol"
                        )
                    waiter = self._pending.pop(rr, None)
                    if waiter is None:
                        log.debug("%s: dropped reply rr=%r with no waiter (timed out)", self, rr)
                    else:
                        waiter.header = header
                        waiter.payload = payload
                        waiter.lock.release()
                    continue
                try:
                    on_message(self, header, payload)
                except Exception:
                    log.exception(
                        "on_message handler of connection %r raised on a %r frame; the "
                        "connection stays open",
                        self.name,
                        header["t"],
                    )
        except EOFError:
            reason = None
        except ProtocolError as exc:
            log.warning("dropping connection %r: %s", self.name, exc)
            reason = exc
        except OSError as exc:
            # After a local close() the socket error is only the echo of our own shutdown.
            if not self.closed:
                reason = ConnectionClosedError(self._who(), f"read failed: {exc}")
                reason.__cause__ = exc
        except BaseException as exc:  # never let the reader thread die silently
            log.exception("reader thread of connection %r failed", self.name)
            reason = exc
        finally:
            self._reader.close()
            self.close(reason)
