"""Security of a session (DESIGN §8): private files, and sockets that drop unauthenticated or
malformed peers before a single byte is unpickled, while the runtime keeps working.

Every runtime socket is attacked: the driver's, the node manager's and a worker's. After each
attack the connection must have been dropped by the server, the marker file that the attack's
pickle would create must not exist, no process of the session may have died, the attacked
socket must still accept an authenticated peer, and tasks in flight must return their values.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pickle
import socket
import stat
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

import memlab
from memlab.protocol.auth import MAGIC, client_handshake
from memlab.protocol.endpoints import connect
from memlab.protocol.frames import FrameReader, encode
from memlab.testing import gated
from memlab.testing.leaks import session_processes, wait_for

HANDSHAKE_TIMEOUT = 5.0  # the listeners' default (memlab.protocol.transport.Listener)
CHALLENGE = len(MAGIC) + 32  # what a server sends before the client has proved anything
PREFIX = struct.Struct("<IQ")  # frame prefix: header length, payload length


held = memlab.remote(gated)  # stays in flight until the test opens the gate


@memlab.remote
def square(x: int) -> int:
    return x * x


class _TouchOnUnpickle:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return open, (self.path, "w")  # unpickling creates the file: code execution


def exploit_payload(marker: Path) -> bytes:
    """A pickle that creates ``marker`` when unpickled (it references only ``io.open``)."""
    return pickle.dumps(_TouchOnUnpickle(str(marker)), protocol=5)


def runtime_sockets(rt: Any) -> dict[str, str]:
    """The driver's, node-0's and one worker's socket paths, waiting for the workers to listen."""
    wait_for(
        lambda: glob.glob(os.path.join(rt.session_dir, "w-*.sock")),
        30,
        message="a worker socket in the session dir",
    )
    worker = sorted(glob.glob(os.path.join(rt.session_dir, "w-*.sock")))[0]
    return {
        "driver": os.path.join(rt.session_dir, "driver.sock"),
        "node": os.path.join(rt.session_dir, "node-0.sock"),
        "worker": worker,
    }


def read_until_dropped(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything the server sent until it dropped the connection, and how long that took.

    A reset counts as dropped: Linux resets a Unix socket whose peer closed with unread data.
    """
    start = time.monotonic()
    deadline = start + timeout
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"the server kept the connection open for {timeout} s")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            break
        except TimeoutError:
            continue
        if not chunk:
            break
        data += chunk
    return data, time.monotonic() - start


def assert_only_challenge(data: bytes) -> None:
    """The server sent at most its challenge: no proof, no frame, nothing derived from input."""
    assert len(data) <= CHALLENGE, data
    assert data == MAGIC[: len(data)] or data.startswith(MAGIC), data


def unix_socket(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    return sock


def read_exactly(sock: socket.socket, size: int) -> bytes:
    sock.settimeout(HANDSHAKE_TIMEOUT)
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "the server closed before sending its challenge"
        data += chunk
    return data


def send_quietly(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(data)  # the server may drop us before everything is written


def assert_accepts_authenticated_peer(path: str, secret: bytes) -> None:
    closed = threading.Event()
    conn = connect(
        path, secret, "security-test", lambda c, h, p: None, lambda c, reason: closed.set()
    )
    assert not conn.closed
    conn.close()
    assert closed.wait(5)


@contextlib.contextmanager
def runtime_survives(rt: Any, tmp_path: Path, sockets: dict[str, str]) -> Iterator[None]:
    """Tasks in flight during the body return their values, no session process died, every
    attacked socket still serves authenticated peers, and new tasks run."""
    before = {p.pid for p in session_processes()}
    gate = tmp_path / "gate"
    refs = [held.remote(i, str(gate)) for i in range(3)]
    try:
        yield
    finally:
        gate.touch()
    assert memlab.get(refs, timeout=30) == [0, 1, 2]
    assert {p.pid for p in session_processes()} == before, "a session process died"
    for path in sockets.values():
        assert_accepts_authenticated_peer(path, rt.secret)
    assert memlab.get([square.remote(i) for i in range(8)], timeout=30) == [i * i for i in range(8)]


# ------------------------------------------------------------------------------- file modes


def test_session_dir_sockets_and_arena_are_private(rt: Any) -> None:
    sockets = runtime_sockets(rt)
    info = os.stat(rt.session_dir)
    assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700
    assert info.st_uid == os.getuid()
    every_socket = glob.glob(os.path.join(rt.session_dir, "*.sock"))
    assert set(sockets.values()) <= set(every_socket)
    for path in every_socket:
        info = os.stat(path)
        assert stat.S_ISSOCK(info.st_mode), path
        assert stat.S_IMODE(info.st_mode) == 0o600, (path, oct(info.st_mode))
        assert info.st_uid == os.getuid(), path
    arena = rt.nodes.info["node-0"]["arena"]
    assert arena.startswith("/dev/shm/") and os.path.basename(rt.session_dir) in arena
    info = os.stat(arena)
    assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600, oct(info.st_mode)
    assert info.st_uid == os.getuid()


# ------------------------------------------------------------------------------- no secret


@pytest.mark.parametrize("target", ["driver", "node", "worker"])
def test_garbage_without_the_secret_is_dropped(rt: Any, tmp_path: Path, target: str) -> None:
    sockets = runtime_sockets(rt)
    with runtime_survives(rt, tmp_path, sockets):
        for garbage in (os.urandom(64), b"\x00" * 4096, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 3):
            with unix_socket(sockets[target]) as sock:
                send_quietly(sock, garbage)
                data, elapsed = read_until_dropped(sock, HANDSHAKE_TIMEOUT + 3)
            assert_only_challenge(data)
            assert elapsed < HANDSHAKE_TIMEOUT, "rejected only by the timeout, not the check"


@pytest.mark.parametrize("target", ["driver", "node", "worker"])
def test_pickle_frame_without_the_secret_is_never_unpickled(
    rt: Any, tmp_path: Path, target: str
) -> None:
    probe = tmp_path / "probe"
    pickle.loads(exploit_payload(probe)).close()  # the payload really runs code when unpickled
    assert probe.exists()
    marker = tmp_path / "marker"
    payload = exploit_payload(marker)
    # Shaped like a real task push: a worker would unpickle the payload as the task's function.
    header = {
        "t": "push",
        "tid": b"\x01" * 16,
        "name": "x",
        "att": 0,
        "fn": b"\x02" * 16,
        "fnlen": len(payload),
        "deps": [],
        "nret": 1,
    }
    frame = b"".join(bytes(part) for part in encode(header, payload))
    sockets = runtime_sockets(rt)
    with runtime_survives(rt, tmp_path, sockets):
        with unix_socket(sockets[target]) as sock:  # sent blind, before reading the challenge
            send_quietly(sock, frame * 4)
            data, _ = read_until_dropped(sock, HANDSHAKE_TIMEOUT + 3)
        assert_only_challenge(data)
        with unix_socket(sockets[target]) as sock:  # sent after reading the challenge
            assert read_exactly(sock, CHALLENGE).startswith(MAGIC)
            send_quietly(sock, frame)
            data, _ = read_until_dropped(sock, HANDSHAKE_TIMEOUT + 3)
        assert data == b""
    assert not marker.exists(), "an unauthenticated payload was unpickled"


def test_silent_peers_are_dropped_within_the_handshake_timeout(rt: Any, tmp_path: Path) -> None:
    sockets = runtime_sockets(rt)
    with runtime_survives(rt, tmp_path, sockets):
        silent = {name: unix_socket(path) for name, path in sockets.items()}
        results: dict[str, tuple[bytes, float]] = {}

        def watch(name: str) -> None:
            results[name] = read_until_dropped(silent[name], HANDSHAKE_TIMEOUT + 3)

        watchers = [threading.Thread(target=watch, args=(n,)) for n in silent]
        for t in watchers:
            t.start()
        for t in watchers:
            t.join(HANDSHAKE_TIMEOUT + 5)
        for sock in silent.values():
            sock.close()
        assert set(results) == set(sockets), f"not dropped: {set(sockets) - set(results)}"
        for name, (data, elapsed) in results.items():
            assert len(data) == CHALLENGE and data.startswith(MAGIC), (name, data)
            assert elapsed <= HANDSHAKE_TIMEOUT + 1, (name, elapsed)


# ------------------------------------------------------------------------------- with the secret


def _frame(header: Any, payload: bytes = b"") -> bytes:
    head = msgpack.packb(header, use_bin_type=True)
    return PREFIX.pack(len(head), len(payload)) + head + payload


MALFORMED = {
    "header not a dict": lambda p: _frame([1, 2, 3], p),
    "header without t": lambda p: _frame({"x": 1, "fnlen": len(p)}, p),
    "t not a str": lambda p: _frame({"t": 5}, p),
    "header not msgpack": lambda p: PREFIX.pack(1, len(p)) + b"\xc1" + p,
    "absurd header length": lambda p: PREFIX.pack(2**32 - 1, 0) + b"\x81",
    "absurd payload length": lambda p: PREFIX.pack(1, 2**64 - 1) + b"\x80",
}


# A harmless request each server answers: proves the connection works before the bad frame.
PROBES = {
    "driver": {"t": "add_borrower", "borrower": "security-test"},  # unknown oid: ok=False
    "node": {"t": "get"},  # unknown oid: not found
    "worker": {"t": "add_borrower", "borrower": "security-test"},
}


def assert_dropped(reader: FrameReader) -> None:
    try:
        header, _ = reader.read()
    except (EOFError, ConnectionResetError):
        return
    raise AssertionError(f"the server kept the connection and sent {header!r}")


@pytest.mark.parametrize("target", ["driver", "node", "worker"])
def test_malformed_frames_with_the_secret_drop_the_connection(
    rt: Any, tmp_path: Path, target: str
) -> None:
    marker = tmp_path / "marker"
    payload = exploit_payload(marker)
    sockets = runtime_sockets(rt)
    with runtime_survives(rt, tmp_path, sockets):
        for kind, make in [*MALFORMED.items(), ("truncated frame", None)]:
            with unix_socket(sockets[target]) as sock:
                client_handshake(sock, rt.secret)
                sock.settimeout(HANDSHAKE_TIMEOUT)
                reader = FrameReader(sock)
                try:
                    probe = {**PROBES[target], "oid": os.urandom(16), "rid": 7}
                    sock.sendall(b"".join(bytes(part) for part in encode(probe)))
                    reply, _ = reader.read()
                    assert reply.get("rr") == 7, (kind, reply)
                    if make is None:  # a prefix that promises more than ever arrives, then EOF
                        send_quietly(sock, PREFIX.pack(100, 0) + b"\x81\xa1t")
                        sock.shutdown(socket.SHUT_WR)
                    else:
                        send_quietly(sock, make(payload))
                    assert_dropped(reader)
                finally:
                    reader.close()
    assert not marker.exists(), "the payload of a malformed frame was unpickled"


# ------------------------------------------------------------------------------- frame size cap


@pytest.mark.parametrize("target", ["driver", "node", "worker"])
def test_frame_longer_than_any_real_message_drops_the_peer_at_once(
    rt: Any, tmp_path: Path, target: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A 4 GiB payload length from an authenticated peer: the server must not reserve it or
    wait for it; it drops the connection as soon as the prefix arrives, and says why."""
    from memlab.protocol.frames import MAX_PAYLOAD_BYTES

    assert MAX_PAYLOAD_BYTES < 1 << 30  # bounded by the largest real message, not by u32
    sockets = runtime_sockets(rt)
    with runtime_survives(rt, tmp_path, sockets):
        for length in (1 << 32, MAX_PAYLOAD_BYTES + 1):
            with unix_socket(sockets[target]) as sock:
                client_handshake(sock, rt.secret)
                sock.settimeout(HANDSHAKE_TIMEOUT)
                reader = FrameReader(sock)
                try:
                    head = msgpack.packb({"t": "push"}, use_bin_type=True)
                    # Only the prefix and header: a server waiting for the payload never drops.
                    send_quietly(sock, PREFIX.pack(len(head), length) + head)
                    assert_dropped(reader)
                finally:
                    reader.close()
    if target == "driver":  # the one process whose log this test can read
        reasons = [r.getMessage() for r in caplog.records if r.name == "memlab.protocol"]
        assert any(
            "dropping connection" in m and f"{1 << 32}-byte payload" in m and "largest message" in m
            for m in reasons
        ), reasons
