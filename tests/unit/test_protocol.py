"""Tests of memlab.protocol over real Unix sockets: frames, authentication, connections."""

from __future__ import annotations

import array
import logging
import os
import pickle
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator

import msgpack
import pytest

import memlab.protocol as protocol
from memlab.exceptions import AuthenticationError, ConnectionClosedError, ProtocolError
from memlab.protocol import (
    Connection,
    FrameReader,
    Listener,
    client_handshake,
    connect,
    encode,
)

SECRET = b"s" * 32
DEADLINE = 10.0


def wait_until(predicate: Callable[[], object], timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout} s")
        time.sleep(0.002)


class Recorder:
    """Collects what a side's callbacks saw; waits on a condition instead of sleeping."""

    def __init__(self, handler: Callable[[Connection, dict, bytes], None] | None = None) -> None:
        self.cond = threading.Condition()
        self.messages: list[tuple[Connection, dict, bytes]] = []
        self.closes: list[tuple[Connection, BaseException | None]] = []
        self.handler = handler

    def on_message(self, conn: Connection, header: dict, payload: bytes) -> None:
        with self.cond:
            self.messages.append((conn, header, payload))
            self.cond.notify_all()
        if self.handler is not None:
            self.handler(conn, header, payload)

    def on_close(self, conn: Connection, reason: BaseException | None) -> None:
        with self.cond:
            self.closes.append((conn, reason))
            self.cond.notify_all()

    def wait(self, predicate: Callable[[Recorder], bool], timeout: float = DEADLINE) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: predicate(self), timeout), "timed out waiting"


def echo(conn: Connection, header: dict, payload: bytes) -> None:
    if "rid" in header:
        conn.reply(header, {"t": "echo", "got": header["t"]}, payload)


@pytest.fixture
def sockdir() -> Iterator[str]:
    # pytest's tmp_path can exceed the 107-byte limit of a Unix socket path.
    path = tempfile.mkdtemp(prefix="mlp-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    fds = set(os.listdir("/proc/self/fd"))
    before = set(threading.enumerate())  # only this test's threads count, not earlier tests'
    yield
    wait_until(
        lambda: (
            not [
                t for t in threading.enumerate() if t.name.startswith("memlab-") and t not in before
            ]
        )
    )
    wait_until(lambda: set(os.listdir("/proc/self/fd")) <= fds)


@pytest.fixture
def server(sockdir: str) -> Iterator[tuple[Listener, Recorder]]:
    rec = Recorder(echo)
    listener = Listener(
        os.path.join(sockdir, "s.sock"), SECRET, lambda c: None, rec.on_message, rec.on_close
    )
    yield listener, rec
    listener.close()


def client(path: str, rec: Recorder | None = None, name: str = "client") -> Connection:
    rec = rec or Recorder()
    return connect(path, SECRET, name, rec.on_message, rec.on_close)


def raw_authenticated(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    client_handshake(sock, SECRET)
    return sock


# ----------------------------------------------------------------------------------- frames


def test_frames_roundtrip_small_large_and_typed_buffers() -> None:
    a, b = socket.socketpair()
    try:
        big = os.urandom(300_000)
        doubles = array.array("d", range(10_000))  # itemsize 8: len() != nbytes
        sent = [
            ({"t": "a", "k": b"\x00\xff", "s": "é"}, b""),
            ({"t": "b"}, b"xyz"),
            ({"t": "c"}, memoryview(big)),
            ({"t": "d"}, memoryview(doubles)),
        ]
        reader = FrameReader(b)

        def write() -> None:  # the frames exceed the socket buffer: write while we read
            for header, payload in sent:
                for buf in encode(header, payload):
                    a.sendall(buf)

        writer = threading.Thread(target=write)
        writer.start()
        for header, payload in sent:
            got_header, got_payload = reader.read()
            assert got_header == header
            assert type(got_header.get("k", b"")) is bytes
            assert got_payload == bytes(payload)
        writer.join()
        assert len(encode({"t": "b"}, b"xyz")) == 1  # small frame: one buffer, one syscall
        assert len(encode({"t": "c"}, big)) == 2  # large payload: not copied
        a.close()
        with pytest.raises(EOFError):
            reader.read()
        reader.close()
    finally:
        a.close()
        b.close()


def test_encode_refuses_headers_the_peer_would_reject() -> None:
    with pytest.raises(ValueError, match="'t'"):
        encode({"type": "x"})
    with pytest.raises(ValueError, match="payload"):
        encode({"t": "x", "obj": object()})


# ------------------------------------------------------------------------- request / reply


def test_request_reply_round_trip(server: tuple[Listener, Recorder]) -> None:
    listener, _ = server
    rec = Recorder()
    conn = client(listener.path, rec)
    header, payload = conn.request({"t": "ping", "n": 1}, b"body", timeout=5)
    assert header["t"] == "echo" and header["got"] == "ping" and payload == b"body"
    assert header["rr"] > 0
    assert rec.messages == []  # replies go to the waiter, never to on_message
    conn.close()


def test_pipelined_sends_from_two_threads_arrive_complete_and_in_order(
    server: tuple[Listener, Recorder],
) -> None:
    listener, rec = server
    conn = client(listener.path)
    per_thread = 5_000

    def blast(tag: str) -> None:
        for i in range(per_thread):
            conn.send({"t": "seq", "w": tag, "i": i}, b"p" * (i % 50))

    threads = [threading.Thread(target=blast, args=(tag,)) for tag in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rec.wait(lambda r: len(r.messages) == 2 * per_thread)
    for tag in "ab":
        got = [(h["i"], p) for _, h, p in rec.messages if h["w"] == tag]
        assert got == [(i, b"p" * (i % 50)) for i in range(per_thread)]
    conn.close()


def test_request_timeout_drops_the_late_reply(sockdir: str) -> None:
    release = threading.Event()

    def slow(conn: Connection, header: dict, payload: bytes) -> None:
        if header["t"] == "slow":
            release.wait(DEADLINE)
            conn.reply(header, {"t": "late"})
        else:
            echo(conn, header, payload)

    srv = Recorder(slow)
    listener = Listener(
        os.path.join(sockdir, "s"), SECRET, lambda c: None, srv.on_message, srv.on_close
    )
    rec = Recorder()
    conn = client(listener.path, rec)
    with pytest.raises(TimeoutError, match="slow"):
        conn.request({"t": "slow"}, timeout=0.05)
    release.set()
    # Frames are ordered: once this reply is in, the late one has been read (and dropped).
    assert conn.request({"t": "next"}, timeout=5)[0]["got"] == "next"
    assert rec.messages == []
    conn.close()
    listener.close()


# --------------------------------------------------------------------------- authentication


def test_wrong_secret_is_rejected_and_listener_keeps_serving(
    server: tuple[Listener, Recorder],
) -> None:
    listener, _ = server
    rec = Recorder()
    with pytest.raises(AuthenticationError):
        connect(listener.path, b"wrong" * 8, "bad", rec.on_message, rec.on_close)
    wait_until(lambda: listener.rejected == 1)
    assert listener.connections() == []
    conn = client(listener.path)
    assert conn.request({"t": "ping"}, timeout=5)[0]["got"] == "ping"
    conn.close()


def test_a_peer_gone_mid_handshake_is_dropped_quietly_a_wrong_secret_loudly(
    server: tuple[Listener, Recorder],
    caplog: pytest.LogCaptureFixture,
) -> None:
    listener, _ = server
    caplog.set_level(logging.DEBUG, logger="memlab.protocol")
    for linger in (False, True):  # closed before or after reading the challenge
        peer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        peer.connect(listener.path)
        if linger:
            peer.recv(37, socket.MSG_WAITALL)
        peer.close()  # a process killed while connecting
    wait_until(lambda: listener.rejected == 2)
    with pytest.raises(AuthenticationError):
        connect(listener.path, b"wrong" * 8, "bad", Recorder().on_message, Recorder().on_close)
    wait_until(lambda: listener.rejected == 3)

    def rejections(level: int) -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if "rejected a peer" in r.getMessage() and r.levelno == level
        ]

    wait_until(lambda: len(rejections(logging.WARNING)) == 1)
    assert "HMAC" in rejections(logging.WARNING)[0]
    assert len(rejections(logging.DEBUG)) == 2
    assert all("went away" in m for m in rejections(logging.DEBUG))


def test_client_refuses_a_server_with_another_secret(sockdir: str) -> None:
    rec = Recorder()
    listener = Listener(
        os.path.join(sockdir, "s"), b"other" * 8, lambda c: None, rec.on_message, rec.on_close
    )
    with pytest.raises(AuthenticationError, match="secret"):
        client(listener.path)
    listener.close()


def test_garbage_and_silent_peers_are_dropped_before_anything_is_decoded(
    sockdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[str] = []

    def forbidden(name: str) -> Callable[..., object]:
        def call(*args: object, **kwargs: object) -> object:
            decoded.append(name)
            raise AssertionError(f"{name} called before authentication")

        return call

    monkeypatch.setattr(msgpack, "unpackb", forbidden("msgpack.unpackb"))
    monkeypatch.setattr(pickle, "loads", forbidden("pickle.loads"))
    rec = Recorder()
    connected: list[Connection] = []
    listener = Listener(
        os.path.join(sockdir, "s"),
        SECRET,
        connected.append,
        rec.on_message,
        rec.on_close,
        handshake_timeout=0.2,
    )
    # A well-formed frame carrying a pickle, sent instead of the handshake answer.
    frame = b"".join(bytes(b) for b in encode({"t": "x", "pad": "z" * 64}, pickle.dumps(object)))
    peers = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(3)]
    try:
        for peer in peers:
            peer.settimeout(DEADLINE)
            peer.connect(listener.path)
        peers[0].sendall(frame)  # garbage right away
        assert peers[1].recv(37, socket.MSG_WAITALL)[:5] == b"MLAB1"
        peers[1].sendall(frame)  # garbage after reading the challenge
        # peers[2] stays silent: the handshake times out
        wait_until(lambda: listener.rejected == 3)
        # Each was hung up on, and none received more than the challenge (no server proof).
        assert [len(drain(peer)) for peer in peers] == [37, 0, 37]
        assert decoded == [] and rec.messages == [] and connected == []
    finally:
        for peer in peers:
            peer.close()
        listener.close()


def drain(peer: socket.socket) -> bytes:
    """Read until the server hangs up (EOF, or a reset when it left our bytes unread)."""
    data = b""
    while True:
        try:
            chunk = peer.recv(4096)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


# ------------------------------------------------------------------------- malformed frames

_PREFIX = struct.Struct("<IQ")


def _frame(header: bytes, payload: bytes = b"") -> bytes:
    return _PREFIX.pack(len(header), len(payload)) + header + payload


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(_PREFIX.pack(protocol.MAX_HEADER_BYTES + 1, 0), id="header-too-long"),
        pytest.param(_PREFIX.pack(4, protocol.MAX_PAYLOAD_BYTES + 1), id="payload-too-long"),
        pytest.param(_frame(b"\xc1\xc1\xc1"), id="header-not-msgpack"),
        pytest.param(_frame(msgpack.packb(["t", "x"])), id="header-is-a-list"),
        pytest.param(_frame(msgpack.packb({"type": "x"})), id="header-without-t"),
        pytest.param(_frame(msgpack.packb({"t": 7})), id="t-not-a-str"),
        pytest.param(_frame(msgpack.packb({"t": "x"}) + b"\x00"), id="trailing-bytes"),
        pytest.param(_frame(msgpack.packb({"t": "x", "rr": [1]})), id="rr-not-an-int"),
    ],
)
def test_malformed_frame_closes_only_that_connection(
    server: tuple[Listener, Recorder], data: bytes
) -> None:
    listener, rec = server
    good = client(listener.path, name="good")
    wait_until(lambda: len(listener.connections()) == 1)
    bad = raw_authenticated(listener.path)
    try:
        wait_until(lambda: len(listener.connections()) == 2)
        bad.sendall(data)
        rec.wait(lambda r: len(r.closes) == 1)
        ((closed_conn, reason),) = rec.closes
        assert isinstance(reason, ProtocolError)
        assert closed_conn.closed and closed_conn not in listener.connections()
        assert bad.recv(1) == b""  # the server hung up on the bad peer
        assert good.request({"t": "still-there"}, timeout=5)[0]["got"] == "still-there"
        assert rec.messages[-1][1]["t"] == "still-there"
    finally:
        bad.close()
        good.close()


# ------------------------------------------------------------------------ failures, close


def test_pending_request_fails_when_the_peer_dies(sockdir: str) -> None:
    srv = Recorder()  # never replies
    listener = Listener(
        os.path.join(sockdir, "s"), SECRET, lambda c: None, srv.on_message, srv.on_close
    )
    rec = Recorder()
    conn = client(listener.path, rec)
    outcome: list[BaseException] = []

    def ask() -> None:
        try:
            conn.request({"t": "never"})
        except BaseException as exc:
            outcome.append(exc)

    asker = threading.Thread(target=ask)
    asker.start()
    srv.wait(lambda r: len(r.messages) == 1)
    listener.connections()[0].close()  # the peer's end of the socket goes away
    asker.join(DEADLINE)
    assert len(outcome) == 1 and isinstance(outcome[0], ConnectionClosedError)
    rec.wait(lambda r: len(r.closes) == 1)
    assert rec.closes[0][1] is None  # a clean EOF from the peer
    with pytest.raises(ConnectionClosedError):
        conn.send({"t": "after"})
    listener.close()


_DOOMED_PEER = """
import sys, threading
from memlab.protocol import Listener
got = threading.Event()
listener = Listener(sys.argv[1], bytes.fromhex(sys.argv[2]), lambda c: None,
                    lambda c, h, p: got.set(), lambda c, r: None)
print("ready", flush=True)
got.wait(30)
print("got", flush=True)
threading.Event().wait(30)  # never replies; killed by the test
"""


def test_pending_request_fails_when_the_peer_process_is_killed(sockdir: str) -> None:
    path = os.path.join(sockdir, "peer.sock")
    peer = subprocess.Popen(
        [sys.executable, "-c", _DOOMED_PEER, path, SECRET.hex()],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert peer.stdout is not None
        assert peer.stdout.readline().strip() == "ready"
        rec = Recorder()
        conn = client(path, rec)
        outcome: list[BaseException] = []

        def ask() -> None:
            try:
                conn.request({"t": "never-answered"})
            except BaseException as exc:
                outcome.append(exc)

        asker = threading.Thread(target=ask)
        asker.start()
        assert peer.stdout.readline().strip() == "got"
        peer.send_signal(signal.SIGKILL)
        asker.join(DEADLINE)
        assert len(outcome) == 1 and isinstance(outcome[0], ConnectionClosedError)
        rec.wait(lambda r: len(r.closes) == 1)
        assert conn.closed
    finally:
        peer.kill()
        peer.wait(DEADLINE)
        if peer.stdout is not None:
            peer.stdout.close()


def test_request_from_the_reader_thread_is_refused(server: tuple[Listener, Recorder]) -> None:
    listener, _ = server
    errors: list[BaseException] = []

    def nested(conn: Connection, header: dict, payload: bytes) -> None:
        try:
            conn.request({"t": "nested"}, timeout=1)
        except BaseException as exc:
            errors.append(exc)

    rec = Recorder(nested)
    conn = client(listener.path, rec)
    wait_until(lambda: len(listener.connections()) == 1)
    listener.connections()[0].send({"t": "push"})
    rec.wait(lambda r: len(r.messages) == 1)
    wait_until(lambda: errors)
    assert isinstance(errors[0], RuntimeError) and "reader thread" in str(errors[0])
    conn.close()


def test_on_message_raising_does_not_kill_the_connection(
    sockdir: str, caplog: pytest.LogCaptureFixture
) -> None:
    def handler(conn: Connection, header: dict, payload: bytes) -> None:
        if header["t"] == "boom":
            raise RuntimeError("handler bug")
        echo(conn, header, payload)

    srv = Recorder(handler)
    listener = Listener(
        os.path.join(sockdir, "s"), SECRET, lambda c: None, srv.on_message, srv.on_close
    )
    conn = client(listener.path)
    with caplog.at_level("ERROR", logger="memlab.protocol"):
        conn.send({"t": "boom"})
        assert conn.request({"t": "ok"}, timeout=5)[0]["got"] == "ok"
    assert any(r.name == "memlab.protocol" and r.exc_info for r in caplog.records)
    assert srv.closes == [] and not conn.closed
    conn.close()
    listener.close()


def test_close_is_idempotent_and_on_close_runs_once(server: tuple[Listener, Recorder]) -> None:
    listener, srv = server
    rec = Recorder()
    conn = client(listener.path, rec)
    closers = [threading.Thread(target=conn.close) for _ in range(4)]
    for t in closers:
        t.start()
    conn.close()
    for t in closers:
        t.join()
    conn.close(RuntimeError("late"))
    assert conn.join(DEADLINE)
    assert len(rec.closes) == 1 and rec.closes[0] == (conn, None)
    srv.wait(lambda r: len(r.closes) == 1)  # the peer saw a clean EOF
    assert srv.closes[0][1] is None
    with pytest.raises(ConnectionClosedError):
        conn.request({"t": "x"})
    listener.close()
    listener.close()
    assert not os.path.exists(listener.path)


def test_close_wakes_a_sender_blocked_on_a_peer_that_does_not_read(sockdir: str) -> None:
    stuck = threading.Event()

    def block(conn: Connection, header: dict, payload: bytes) -> None:
        stuck.wait(DEADLINE)  # the server's reader stops reading

    srv = Recorder(block)
    listener = Listener(
        os.path.join(sockdir, "s"), SECRET, lambda c: None, srv.on_message, srv.on_close
    )
    conn = client(listener.path)
    conn.send({"t": "first"})
    errors: list[BaseException] = []

    def flood() -> None:
        try:
            conn.send({"t": "big"}, bytes(32 << 20))  # far beyond the socket buffers
        except BaseException as exc:
            errors.append(exc)

    sender = threading.Thread(target=flood)
    sender.start()
    srv.wait(lambda r: len(r.messages) == 1)
    conn.close()
    sender.join(DEADLINE)
    assert not sender.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], ConnectionClosedError)
    stuck.set()
    listener.close()


def test_listener_close_closes_its_connections_and_socket_is_private(
    server: tuple[Listener, Recorder],
) -> None:
    listener, srv = server
    assert stat.S_IMODE(os.stat(listener.path).st_mode) == 0o600
    rec = Recorder()
    conn = client(listener.path, rec)
    wait_until(lambda: len(listener.connections()) == 1)
    listener.close()
    rec.wait(lambda r: len(r.closes) == 1)
    assert listener.connections() == [] and len(srv.closes) == 1
    assert not os.path.exists(listener.path)
    with pytest.raises(ConnectionClosedError, match="nobody listens"):
        client(listener.path)
    conn.close()


def test_connect_to_a_missing_path_names_the_path(sockdir: str) -> None:
    path = os.path.join(sockdir, "absent")
    with pytest.raises(ConnectionClosedError) as info:
        client(path)
    assert info.value.peer == path
