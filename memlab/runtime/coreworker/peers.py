"""Connections to the other processes of a session, and the registry of message handlers.

One ``Peers`` per process. It listens on the process's socket, connects to a peer on first use
(``conn_to``: one connection per peer, so messages to a peer keep their order, which the handoff
rule relies on, DESIGN §3), names a connection by the peer's ``hello``, dispatches each message to
the handler registered for its kind (``register``), and tells the listeners registered with
``on_peer_lost`` when a connection closes.

Sending after unlocking: services decide messages while holding the core's lock and queue them
(``send_later``); ``drain_outbox`` sends them once the lock is released. A send can block on a
full socket, and blocking while holding the lock could deadlock with a peer's reader thread,
which needs the lock to answer.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from memlab.exceptions import AuthenticationError, ConnectionClosedError
from memlab.protocol.endpoints import Listener, connect
from memlab.protocol.transport import Connection
from memlab.runtime.coreworker.ports import Handler, PeerLostListener

log = logging.getLogger("memlab.runtime")

#: Called (without the lock) for a queued message whose peer could not be reached.
Undeliverable = Callable[[str, dict[str, Any]], None]


def _drop(peer: str, header: dict[str, Any]) -> None:
    pass


class Peers:
    """This process's connections, handlers and outbox."""

    def __init__(self, proc: str, kind: str, node_id: str, session_dir: str, secret: bytes) -> None:
        self.proc = proc
        self.kind = kind
        self.node_id = node_id
        self.session_dir = session_dir
        self.secret = secret
        self.connections: dict[str, Connection] = {}
        #: Processes and nodes known dead: their info (a node's is ``{"node": id}``).
        self.dead: dict[str, dict[str, Any]] = {}
        #: Messages queued under the lock; a caller may test it to skip an empty drain.
        self.outbox: deque[tuple[str, dict[str, Any]]] = deque()
        self.undeliverable: Undeliverable = _drop
        self._handlers: dict[str, Handler] = {"hello": self.on_hello}
        self._lost_listeners: list[PeerLostListener] = []
        self._connect_lock = threading.Lock()
        self.listener: Listener | None = None

    def listen(self) -> None:
        """Start accepting connections (once every service has registered its handlers)."""
        self.listener = Listener(
            self.address(self.proc),
            self.secret,
            self._on_accept,
            self._dispatch,
            self._on_close,
            name=self.proc,
        )

    # -- registry ------------------------------------------------------------------------------

    def register(self, kind: str, handler: Handler, *, replace: bool = False) -> None:
        """Route messages of ``kind`` to ``handler``. A kind has one handler: taking over one
        (the driver extends ``hello`` and ``worker_died``) must say so with ``replace``."""
        if kind in self._handlers and not replace:
            raise ValueError(f"{self.proc}: a handler for {kind!r} is registered already")
        self._handlers[kind] = handler

    def on_peer_lost(self, listener: PeerLostListener) -> None:
        """Call ``listener(peer, conn)`` whenever a named connection closes."""
        self._lost_listeners.append(listener)

    def set_undeliverable(self, callback: Undeliverable) -> None:
        """What to do with a queued message whose peer is gone (default: drop it)."""
        self.undeliverable = callback

    # -- connections ---------------------------------------------------------------------------

    def address(self, proc: str) -> str:
        return os.path.join(self.session_dir, f"{proc}.sock")

    def conn_to(self, peer: str) -> Connection:
        conn = self.connections.get(peer)
        if conn is not None and not conn.closed:
            return conn
        if peer in self.dead:
            raise ConnectionClosedError(peer, "the process has died")
        with self._connect_lock:
            conn = self.connections.get(peer)
            if conn is not None and not conn.closed:
                return conn
            try:
                conn = connect(
                    self.address(peer), self.secret, self.proc, self._dispatch, self._on_close
                )
            except AuthenticationError as exc:
                # Every process of a session holds the same secret: a failed handshake with
                # one of them means it died during it.
                raise ConnectionClosedError(peer, f"its handshake failed: {exc}") from exc
            conn.peer = peer
            conn.send(
                {
                    "t": "hello",
                    "proc": self.proc,
                    "kind": self.kind,
                    "pid": os.getpid(),
                    "node": self.node_id,
                }
            )
            self.connections[peer] = conn
            return conn

    def send_or_drop(self, peer: str, header: dict[str, Any]) -> None:
        """Send now; a peer that is gone needs the message no more (a node's deletes)."""
        try:
            self.conn_to(peer).send(header)
        except ConnectionClosedError:
            pass

    def _on_accept(self, conn: Connection) -> None:
        pass  # the peer's first message is ``hello``; until then it is anonymous

    def on_hello(self, conn: Connection, h: dict[str, Any], payload: bytes) -> None:
        """Name an accepted connection after the peer that opened it."""
        conn.peer = h["proc"]
        self.connections.setdefault(h["proc"], conn)

    def _dispatch(self, conn: Connection, h: dict[str, Any], payload: bytes) -> None:
        handler = self._handlers.get(h["t"])
        if handler is None:
            log.warning("%s: unknown message %r from %s", self.proc, h["t"], conn.peer)
            return
        handler(conn, h, payload)

    def _on_close(self, conn: Connection, error: BaseException | None) -> None:
        peer = conn.peer
        if peer is None:
            return
        if self.connections.get(peer) is conn:
            del self.connections[peer]
        for listener in self._lost_listeners:
            listener(peer, conn)

    # -- send after unlock ---------------------------------------------------------------------

    def send_later(self, peer: str, header: dict[str, Any]) -> None:
        """Queue a message (called with the lock held); ``drain_outbox`` sends it."""
        self.outbox.append((peer, header))

    def drain_outbox(self) -> None:
        """Send what was queued under the lock; call with the lock released."""
        outbox = self.outbox
        while outbox:
            try:
                peer, header = outbox.popleft()
            except IndexError:
                return
            try:
                self.conn_to(peer).send(header)
            except ConnectionClosedError:
                self.undeliverable(peer, header)

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
        for conn in list(self.connections.values()):
            conn.close()
