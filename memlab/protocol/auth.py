"""Mutual HMAC-SHA256 challenge that authenticates a fresh socket before any frame is parsed.

Exchange (fixed lengths, raw bytes, nothing decoded)::

    server                                           client
      | -- MAGIC (5) + server_nonce (32) -------------> |  client checks MAGIC
      | <-- HMAC(secret, b"client" + server_nonce) ---- |
      |     + client_nonce (32)                          |
      | server checks with compare_digest                |
      | -- HMAC(secret, b"server" + client_nonce) ----> |  client checks with compare_digest

Invariants:
    * Neither side parses, decodes or unpickles a single byte here: every read has a fixed
      length and is only compared, so an unauthenticated peer cannot reach msgpack or pickle.
    * The server proves knowledge of the secret only after the client has proved it, so the
      server cannot be used as an oracle; the b"client"/b"server" labels stop a peer from
      reflecting one side's challenge back at it.
    * The whole exchange has one deadline; any failure or timeout raises
      :class:`~memlab.exceptions.AuthenticationError` and the caller closes the socket.
      On success the socket is back in blocking mode (timeout ``None``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from typing import TYPE_CHECKING

from memlab.exceptions import AuthenticationError, ConnectionClosedError, HandshakeAbandonedError

if TYPE_CHECKING:
    import socket

__all__ = ["MAGIC", "client_handshake", "server_handshake"]

MAGIC = b"MLAB1"
_NONCE = 32
_DIGEST = 32


def _mac(secret: bytes, label: bytes, nonce: bytes) -> bytes:
    return hmac.new(secret, label + nonce, hashlib.sha256).digest()


def _check_secret(secret: bytes) -> None:
    if not isinstance(secret, bytes) or not secret:
        raise ValueError(
            "the session secret must be non-empty bytes; pass the secret the runtime "
            "generated for this session (e.g. os.urandom(32))"
        )


def _recv_exact(
    sock: socket.socket,
    size: int,
    deadline: float,
    step: str,
    closed: type[Exception] = AuthenticationError,
    reset: type[Exception] | None = None,
    vanished: bool = False,
) -> bytes:
    """Read exactly size bytes before deadline, or raise AuthenticationError naming the step.

    ``closed`` is raised instead when the peer closes or resets the connection: for the
    server's challenge, which it sends before checking anything, that means the server died.
    ``reset`` is raised when the peer resets it (a process that died; a server refusing a
    wrong secret closes cleanly instead). With ``vanished`` (the server reading the client's
    answer) either is ``HandshakeAbandonedError``: a client with another secret answers.
    """
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AuthenticationError(
                f"handshake timed out waiting for {step}; the peer is silent or not a memlab "
                "process - check that both sides belong to the same session"
            )
        sock.settimeout(remaining)
        try:
            n = sock.recv_into(view[got:])
        except TimeoutError as exc:
            raise AuthenticationError(
                f"handshake timed out waiting for {step}; the peer is silent or not a memlab "
                "process - check that both sides belong to the same session"
            ) from exc
        except OSError as exc:
            if vanished and isinstance(exc, ConnectionError):
                raise HandshakeAbandonedError(
                    f"peer reset the connection before {step}: it went away while connecting"
                ) from exc
            if reset is not None and isinstance(exc, ConnectionResetError):
                raise reset(
                    "server", f"it reset the connection during the handshake: {exc}"
                ) from exc
            if closed is not AuthenticationError and isinstance(exc, ConnectionError):
                raise closed(
                    "server", f"it reset the connection during the handshake: {exc}"
                ) from exc
            raise AuthenticationError(f"handshake failed while reading {step}: {exc}") from exc
        if not n:
            if vanished:
                raise HandshakeAbandonedError(
                    f"peer closed the connection before {step} ({got} of {size} bytes): it "
                    "went away while connecting"
                )
            if closed is not AuthenticationError:
                raise closed("server", f"it closed the connection before {step}")
            raise AuthenticationError(
                f"peer closed the connection during the handshake ({step}, {got} of {size} "
                "bytes); it probably holds a different session secret"
            )
        got += n
    return bytes(buf)


def _send(sock: socket.socket, data: bytes, deadline: float, step: str) -> None:
    sock.settimeout(max(deadline - time.monotonic(), 1e-3))
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError) as exc:
        raise HandshakeAbandonedError(f"peer went away before {step} could be sent: {exc}") from exc
    except OSError as exc:  # includes TimeoutError
        raise AuthenticationError(f"handshake failed while sending {step}: {exc}") from exc


def server_handshake(sock: socket.socket, secret: bytes, timeout: float = 5.0) -> None:
    """Authenticate the client on a freshly accepted socket (server side).

    Args:
        sock: The accepted stream socket; nothing may have been read from it yet.
        secret: The per-session secret shared by all processes of the session.
        timeout: Seconds for the whole exchange.

    Raises:
        AuthenticationError: The client failed the challenge, closed, or was too slow.
            The caller must close the socket.
    """
    _check_secret(secret)
    deadline = time.monotonic() + timeout
    server_nonce = os.urandom(_NONCE)
    _send(sock, MAGIC + server_nonce, deadline, "the server challenge")
    answer = _recv_exact(sock, _DIGEST + _NONCE, deadline, "the client's answer", vanished=True)
    if not hmac.compare_digest(answer[:_DIGEST], _mac(secret, b"client", server_nonce)):
        raise AuthenticationError(
            "client failed the HMAC challenge: it does not hold this session's secret "
            "(a process of another session, or a stale secret)"
        )
    _send(sock, _mac(secret, b"server", answer[_DIGEST:]), deadline, "the server proof")
    sock.settimeout(None)


def client_handshake(sock: socket.socket, secret: bytes, timeout: float = 5.0) -> None:
    """Authenticate the server on a freshly connected socket (client side).

    Args:
        sock: The connected stream socket; nothing may have been read from it yet.
        secret: The per-session secret shared by all processes of the session.
        timeout: Seconds for the whole exchange.

    Raises:
        AuthenticationError: The server is not a memlab server of this protocol version,
            rejected our answer, failed its own proof, or was too slow. The caller must close
            the socket.
    """
    _check_secret(secret)
    deadline = time.monotonic() + timeout
    challenge = _recv_exact(
        sock, len(MAGIC) + _NONCE, deadline, "the server challenge", closed=ConnectionClosedError
    )
    if not hmac.compare_digest(challenge[: len(MAGIC)], MAGIC):
        raise AuthenticationError(
            f"server did not open with the {MAGIC!r} handshake; it is not a memlab server or "
            "runs another protocol version - check the socket path and the memlab versions"
        )
    client_nonce = os.urandom(_NONCE)
    answer = _mac(secret, b"client", challenge[len(MAGIC) :]) + client_nonce
    _send(sock, answer, deadline, "the client's answer")
    proof = _recv_exact(sock, _DIGEST, deadline, "the server proof", reset=ConnectionClosedError)
    if not hmac.compare_digest(proof, _mac(secret, b"server", client_nonce)):
        raise AuthenticationError(
            "server failed the HMAC challenge: it does not hold this session's secret; "
            "refusing to talk to it"
        )
    sock.settimeout(None)
