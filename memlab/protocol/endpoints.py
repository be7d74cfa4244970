"""Endpoints of the control plane: ``Listener`` accepts authenticated connections on a Unix
socket, ``connect`` opens one. Both authenticate (mutual HMAC) before a ``Connection`` exists,
so no frame of an unauthenticated peer is ever parsed.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from memlab.exceptions import AuthenticationError, ConnectionClosedError, HandshakeAbandonedError
from memlab.protocol.auth import _check_secret, client_handshake, server_handshake
from memlab.protocol.transport import CloseHandler, Connection, MessageHandler

__all__ = ["Listener", "connect"]

log = logging.getLogger("memlab.protocol")
_UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL


class Listener:
    """Accepts authenticated connections on a Unix socket (mode 0600).

    Attributes:
        path: Filesystem path of the socket.
        rejected: Number of peers that failed or timed out the handshake.
    """

    def __init__(
        self,
        path: str,
        secret: bytes,
        on_connection: Callable[[Connection], None],
        on_message: MessageHandler,
        on_close: CloseHandler,
        name: str = "listener",
        handshake_timeout: float = 5.0,
    ) -> None:
        """Bind, listen and start the accept thread.

        Args:
            path: Where to create the socket; must not exist yet.
            secret: The per-session secret peers must prove they hold.
            on_connection: Called with each authenticated connection before it starts
                reading, so it can be registered before its first message arrives.
            on_message: ``on_message`` of every accepted connection.
            on_close: ``on_close`` of every accepted connection.
            name: Prefix of the accepted connections' names.
            handshake_timeout: Seconds a new peer has to complete the handshake.

        Raises:
            ValueError: The path is too long for a Unix socket, or the secret is empty.
            OSError: The socket cannot be created at ``path``.
        """
        _check_secret(secret)
        if len(os.fsencode(path)) > _UNIX_PATH_MAX:
            raise ValueError(
                f"socket path {path!r} is longer than the {_UNIX_PATH_MAX} bytes a Unix socket "
                "allows; use a shorter session directory (e.g. under /tmp)"
            )
        self.path = path
        self.name = name
        self.rejected = 0
        self._secret = secret
        self._handshake_timeout = handshake_timeout
        self._on_connection = on_connection
        self._on_message = on_message
        self._on_close = on_close
        self._lock = threading.Lock()
        self._closed = False
        self._closed_event = threading.Event()
        self._count = itertools.count(1)
        self._connections: dict[Connection, None] = {}  # insertion-ordered set
        self._handshaking: set[socket.socket] = set()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # On Linux bind() creates the file with the socket inode's mode, so there is no
            # window in which another user could connect; chmod below covers other systems.
            with contextlib.suppress(OSError):
                os.fchmod(sock.fileno(), 0o600)
            sock.bind(path)
            os.chmod(path, 0o600)
            sock.listen(128)
        except OSError as exc:
            sock.close()
            raise OSError(
                exc.errno,
                f"cannot listen on {path}: {exc.strerror}; remove a stale socket file or pick "
                "a fresh session directory",
            ) from exc
        stat = os.stat(path)
        self._identity = (stat.st_dev, stat.st_ino)
        self._sock = sock
        self._thread = threading.Thread(
            target=self._accept_loop, name=f"memlab-accept-{name}", daemon=True
        )
        self._thread.start()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        count = len(self._connections)
        return f"<Listener {self.name!r} {self.path!r} {state} connections={count}>"

    def connections(self) -> list[Connection]:
        """Snapshot of the open connections accepted by this listener."""
        with self._lock:
            return list(self._connections)

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError as exc:
                if self._closed:
                    return
                # EMFILE and friends: back off instead of spinning on a failing accept().
                log.warning("listener %r: accept failed (%s); retrying", self.name, exc)
                self._closed_event.wait(0.05)
                continue
            with self._lock:
                if self._closed:
                    client.close()
                    return
                self._handshaking.add(client)
            threading.Thread(
                target=self._admit, args=(client,), name=f"memlab-auth-{self.name}", daemon=True
            ).start()

    def _admit(self, client: socket.socket) -> None:
        try:
            server_handshake(client, self._secret, self._handshake_timeout)
        except AuthenticationError as exc:
            with self._lock:
                self._handshaking.discard(client)
                if not self._closed:
                    self.rejected += 1
            client.close()
            # A peer that vanished mid-handshake is a process that died while connecting (a
            # killed node's workers do this): routine, unlike one that failed the check.
            level = logging.DEBUG if isinstance(exc, HandshakeAbandonedError) else logging.WARNING
            log.log(level, "listener %r rejected a peer: %s", self.name, exc)
            return
        with self._lock:
            self._handshaking.discard(client)
            if self._closed:
                client.close()
                return
            conn = Connection(
                client, f"{self.name}#{next(self._count)}", self._on_message, self._forget
            )
            self._connections[conn] = None
        try:
            self._on_connection(conn)
        except Exception as exc:
            log.exception("on_connection of listener %r raised; dropping the peer", self.name)
            conn.close(exc)
            return
        with contextlib.suppress(ConnectionClosedError):  # closed by on_connection or close()
            conn.start()

    def _forget(self, conn: Connection, reason: BaseException | None) -> None:
        with self._lock:
            self._connections.pop(conn, None)
        self._on_close(conn, reason)

    def close(self) -> None:
        """Stop accepting, close every connection and remove the socket file; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            handshaking = list(self._handshaking)
            connections = list(self._connections)
        self._closed_event.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes accept() with EINVAL on Linux
        if self._thread is not threading.current_thread():
            self._thread.join(2.0)
        self._sock.close()
        for client in handshaking:  # their handshake fails at once and closes them
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
        for conn in connections:
            conn.close()
        with contextlib.suppress(OSError):
            stat = os.stat(self.path)
            # Unlink only our own socket, not one a newer listener bound at the same path.
            if (stat.st_dev, stat.st_ino) == self._identity:
                os.unlink(self.path)


def connect(
    path: str,
    secret: bytes,
    name: str,
    on_message: MessageHandler,
    on_close: CloseHandler,
    timeout: float = 5.0,
) -> Connection:
    """Connect to a :class:`Listener`, authenticate both ways and start the reader thread.

    Args:
        path: The listener's socket path.
        secret: The per-session secret.
        name: Label of the new connection.
        on_message: Called on the reader thread for every frame that is not a reply.
        on_close: Called exactly once when the connection closes.
        timeout: Seconds for connecting and for the handshake, each.

    Returns:
        The started connection.

    Raises:
        ConnectionClosedError: Nobody listens at ``path`` (its ``peer`` is the path).
        AuthenticationError: The handshake failed.
    """
    _check_secret(secret)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deadline = time.monotonic() + timeout
    try:
        while True:
            sock.settimeout(max(deadline - time.monotonic(), 1e-3))
            try:
                sock.connect(path)
                break
            except BlockingIOError:
                # A full accept backlog makes a Unix connect() fail with EAGAIN instead of
                # waiting; retry until the deadline.
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.001)
    except OSError as exc:
        sock.close()
        if isinstance(exc, (FileNotFoundError, ConnectionRefusedError)):
            why = f"nobody listens at {path} ({exc.strerror}); is the process serving it running?"
        elif exc.errno == errno.EAGAIN or isinstance(exc, TimeoutError):
            why = f"{path} did not accept within {timeout} s; its process is overloaded or stuck"
        else:
            why = f"cannot connect to {path}: {exc}"
        raise ConnectionClosedError(path, why) from exc
    try:
        client_handshake(sock, secret, timeout)
        conn = Connection(sock, name, on_message, on_close)
    except BaseException:
        sock.close()
        raise
    conn.start()
    return conn
