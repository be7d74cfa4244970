"""The event collector: folding in its own process, shipping, reads, subscriptions, close."""

from __future__ import annotations

import itertools
import os
import pickle
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import memlab.state
from memlab.core.events import EventBuffer
from memlab.exceptions import EventsUnavailableError, RuntimeNotStartedError
from memlab.runtime import context
from memlab.runtime.events import collector_main
from memlab.runtime.events.collector import Collector
from memlab.runtime.events.collector_client import CollectorClient
from memlab.runtime.events.shipper import EventShipper, collector_address
from memlab.testing.leaks import wait_for

DEADLINE = 10.0


def ev(kind: str, proc: str = "w-1", **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "ts": time.time(), "proc": proc, **fields}


def created(oid: str, owner: str) -> dict[str, Any]:
    return {
        "object_id": oid,
        "owner": owner,
        "task_id": None,
        "call_site": None,
        "size": None,
        "state": "pending",
    }


# ------------------------------------------------------------------ the fold (in process)


def test_ingest_from_four_threads_then_snapshot_sees_all() -> None:
    collector = Collector()
    per_thread, batch = 500, 25
    start = threading.Barrier(4)

    def produce(t: int) -> None:
        start.wait()
        for b in range(0, per_thread, batch):
            collector.ingest(
                [
                    ev("object.created", proc=f"w-{t}", **created(f"{t:02x}{i:06x}", f"w-{t}"))
                    for i in range(b, b + batch)
                ],
                f"w-{t}",
                0,
            )

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(DEADLINE)
    objects = collector.snapshot("objects")
    assert len(objects) == 4 * per_thread
    assert {o["owner"] for o in objects} == {"w-0", "w-1", "w-2", "w-3"}
    assert collector.events()[1] == 4 * per_thread
    collector.model().validate()


def test_snapshot_rejects_unknown_view() -> None:
    with pytest.raises(ValueError, match="use one of"):
        Collector().snapshot("everything")


@dataclass
class _RecordingConn:
    name: str = "fake"
    replies: list[tuple[dict, dict, bytes]] | None = None

    def reply(self, request: dict, header: dict, payload: bytes = b"") -> None:
        assert self.replies is not None
        self.replies.append((request, header, payload))


def test_bad_batches_are_counted_and_dropped_and_requests_still_answered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    collector = Collector()
    conn = _RecordingConn(replies=[])
    collector.on_message(conn, {"t": "events"}, b"not a pickle")  # type: ignore[arg-type]
    collector.on_message(conn, {"t": "events"}, pickle.dumps({"a": 1}))  # type: ignore[arg-type]
    collector.on_message(
        conn,
        {"t": "events", "proc": "w-1", "dropped": 4},  # type: ignore[arg-type]
        pickle.dumps([ev("custom")]),
    )
    collector.on_message(conn, {"t": "statistics", "rid": 1}, b"")  # type: ignore[arg-type]
    collector.on_message(conn, {"t": "teleport", "rid": 2}, b"")  # type: ignore[arg-type]
    (_, ok, body), (_, error, _) = conn.replies  # type: ignore[misc]
    stats = pickle.loads(body)
    assert ok["t"] == "ok"
    assert (stats["malformed_batches"], stats["ingested"], stats["dropped"]) == (2, 1, 4)
    assert error["t"] == "error" and "teleport" in error["message"]
    assert "undecodable event batch" in caplog.text


# ------------------------------------------------------------------ a real collector process


@dataclass
class Session:
    dir: str
    secret: bytes
    proc: Any
    driver: EventBuffer
    shipper: EventShipper
    client: CollectorClient

    def worker(self, proc: str = "w-1") -> tuple[EventBuffer, EventShipper]:
        buffer = EventBuffer(proc)
        shipper = EventShipper(buffer, self.dir, self.secret, interval=0.005).start()
        self.extra.append(shipper)
        return buffer, shipper

    extra: list[EventShipper]


@pytest.fixture
def session() -> Iterator[Session]:
    path = tempfile.mkdtemp(prefix="memlab-test-", dir="/tmp")
    secret = os.urandom(32)
    proc = collector_main.spawn(path, secret)
    driver = EventBuffer("driver")
    shipper = EventShipper(driver, path, secret)
    assert shipper.connection(wait=DEADLINE) is not None, "collector did not start"
    shipper.start()
    s = Session(path, secret, proc, driver, shipper, CollectorClient(shipper), [])
    try:
        yield s
    finally:
        s.client.close()
        for sh in [shipper, *s.extra]:
            sh.close()
        collector_main.stop(proc)  # the lifeline: the collector exits at its end
        proc.wait(DEADLINE)
        shutil.rmtree(path, ignore_errors=True)


def test_a_read_sees_every_event_emitted_before_it(session: Session) -> None:
    for i in range(300):
        session.driver.emit("object.created", **created(f"{i:04x}", "driver"))
    # No wait: the read ships the driver's pending events on the connection it asks on.
    assert len(session.client.snapshot("objects")) == 300
    assert session.client.events(since=298)[0][0]["seq"] == 299


def test_events_of_other_processes_fold_in_any_order(session: Session) -> None:
    worker, _ = session.worker()
    worker.emit("task.started", task_id="t1", worker="w-1", node="node-0", attempt=0)
    wait_for(lambda: session.client.statistics()["ingested"] == 1, DEADLINE)
    session.driver.emit(
        "task.submitted",
        task_id="t1",
        name="f",
        owner="driver",
        returns=(),
        deps=(),
        call_site=None,
    )
    (task,) = session.client.snapshot("tasks")
    assert (task["name"], task["state"], task["worker"]) == ("f", "running", "w-1")


def test_a_shipper_keeps_events_until_the_collector_listens() -> None:
    path = tempfile.mkdtemp(prefix="memlab-test-", dir="/tmp")
    secret = os.urandom(32)
    buffer = EventBuffer("node-0")
    early = EventShipper(buffer, path, secret, interval=0.005).start()
    proc = None
    try:
        for i in range(5):
            buffer.emit("custom.early", i=i)
        assert not early.flush() and len(buffer) == 5  # nobody listens yet: nothing is lost
        proc = collector_main.spawn(path, secret)
        driver = EventShipper(EventBuffer("driver"), path, secret)
        assert driver.connection(wait=DEADLINE) is not None
        client = CollectorClient(driver)
        wait_for(lambda: client.statistics()["ingested"] == 5, DEADLINE)
        assert [e["i"] for e in client.events()[0]] == [0, 1, 2, 3, 4]
        driver.close()
    finally:
        early.close()
        if proc is not None:
            collector_main.stop(proc)
            proc.wait(DEADLINE)
        shutil.rmtree(path, ignore_errors=True)


def test_an_overloaded_buffer_drops_and_the_collector_counts_it(session: Session) -> None:
    buffer = EventBuffer("w-9", max_pending=10)
    for _ in range(15):
        buffer.emit("custom.burst")
    shipper = EventShipper(buffer, session.dir, session.secret)
    session.extra.append(shipper)
    assert shipper.flush()
    # Another connection's batch folds on its own reader thread: wait for it, then check.
    wait_for(lambda: session.client.statistics()["ingested"] == 10, DEADLINE)
    assert session.client.statistics()["dropped"] == 5


def test_subscriber_gets_new_events_in_batches(session: Session) -> None:
    session.driver.emit("custom.before")
    received: list[dict] = []
    calls: list[int] = []
    got_all = threading.Event()

    def on_events(batch: list[dict]) -> None:
        calls.append(len(batch))
        received.extend(batch)
        if len(received) >= 50:
            got_all.set()

    session.client.subscribe(on_events, max_rate_hz=20)
    worker, _ = session.worker()
    for i in range(50):
        worker.emit("custom.tick", i=i)
    assert got_all.wait(DEADLINE)
    assert [e["i"] for e in received] == list(range(50))  # nothing from before subscribing
    assert len(calls) < 50  # batched, not one call per event


def test_subscriber_of_some_kinds_gets_only_those(session: Session) -> None:
    received: list[dict] = []
    got = threading.Event()

    def on_events(batch: list[dict]) -> None:
        received.extend(batch)
        if any(e["kind"] == "object.freed" for e in batch):
            got.set()

    session.client.subscribe(on_events, max_rate_hz=20, kinds=["object.lost", "object.freed"])
    worker, _ = session.worker()
    tid, oid = b"\x01" * 16, b"\x02" * 16
    for _ in range(20):  # a task stream, recorded positionally as the runtime does
        worker.record("task.submitted", tid, "f", "w-1", (oid,), (), None)
    worker.emit("object.lost", object_id=oid.hex())
    worker.emit("object.freed", object_ids=(oid.hex(),))
    assert got.wait(DEADLINE)
    assert [e["kind"] for e in received] == ["object.lost", "object.freed"]
    tasks, _ = session.client.events(kinds="task.submitted")  # one kind, passed bare
    assert len(tasks) == 20 and tasks[0]["task_id"] == tid.hex()


def test_an_unknown_kind_is_refused_with_the_known_ones(session: Session) -> None:
    with pytest.raises(ValueError, match=r"unknown event kinds \['object.lots'\].*object.lost"):
        session.client.subscribe(lambda batch: None, kinds=["object.lots"])
    with pytest.raises(ValueError, match="unknown event kinds"):
        session.client.events(kinds=["task.finish"])


def test_subscriber_rate_is_bounded(session: Session) -> None:
    stamps: list[float] = []
    enough = threading.Event()

    def on_events(batch: list[dict]) -> None:
        stamps.append(time.monotonic())
        if len(stamps) >= 3:
            enough.set()

    session.client.subscribe(on_events, max_rate_hz=20)
    worker, _ = session.worker()
    stop = threading.Event()

    def flood() -> None:
        while not stop.is_set():
            worker.emit("custom.tick")
            stop.wait(0.001)

    feeder = threading.Thread(target=flood)
    feeder.start()
    try:
        assert enough.wait(DEADLINE)
    finally:
        stop.set()
        feeder.join(DEADLINE)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert min(gaps) >= 1 / 20 * 0.9


def test_unsubscribe_stops_delivery(session: Session) -> None:
    first = threading.Event()
    received: list[dict] = []

    def on_events(batch: list[dict]) -> None:
        received.extend(batch)
        first.set()

    unsubscribe = session.client.subscribe(on_events, max_rate_hz=50)
    session.driver.emit("custom.one")
    assert first.wait(DEADLINE)
    unsubscribe()
    # A second subscriber proves that later events were published, yet the first saw none.
    seen_later = threading.Event()
    session.client.subscribe(lambda batch: seen_later.set(), max_rate_hz=50)
    session.driver.emit("custom.two")
    assert seen_later.wait(DEADLINE)
    assert [e["kind"] for e in received] == ["custom.one"]


def test_raising_subscriber_is_removed_and_does_not_break_others(
    session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    bad_calls: list[int] = []
    good: list[dict] = []
    good_got_both = threading.Event()

    def bad(batch: list[dict]) -> None:
        bad_calls.append(len(batch))
        raise RuntimeError("subscriber bug")

    def on_events(batch: list[dict]) -> None:
        good.extend(batch)
        if len(good) >= 2:
            good_got_both.set()

    session.client.subscribe(bad, max_rate_hz=50)
    session.client.subscribe(on_events, max_rate_hz=50)
    session.driver.emit("custom.one")
    wait_for(lambda: len(good) >= 1 and bool(bad_calls), DEADLINE)
    session.driver.emit("custom.two")
    assert good_got_both.wait(DEADLINE)
    assert len(bad_calls) == 1
    assert "unsubscribed" in caplog.text


def test_close_joins_the_thread_and_is_idempotent(session: Session) -> None:
    client = session.client
    client.subscribe(lambda batch: None)
    thread = client._thread
    assert thread is not None and thread.is_alive()
    started = time.monotonic()
    client.close()
    client.close()
    assert not thread.is_alive()
    assert time.monotonic() - started < 2.5
    with pytest.raises(RuntimeError, match="closed"):
        client.subscribe(lambda batch: None)


def test_reads_raise_a_typed_error_once_the_collector_is_gone(session: Session) -> None:
    session.proc.kill()
    session.proc.wait(DEADLINE)
    with pytest.raises(EventsUnavailableError, match="collector process is gone"):
        session.client.snapshot("objects")
    session.driver.emit("custom.after")  # emitting still never raises
    assert not session.shipper.flush()


def test_the_collector_exits_at_the_end_of_its_lifeline(session: Session) -> None:
    assert os.path.exists(collector_address(session.dir))
    session.proc.stdin.close()
    assert session.proc.wait(DEADLINE) == 0


def test_the_collector_ignores_sigint(session: Session) -> None:
    session.proc.send_signal(signal.SIGINT)  # a notebook's Ctrl-C reaches the process group
    assert session.client.snapshot("nodes") == []


# ------------------------------------------------------------------ memlab.state


class _FakeRuntime:
    def __init__(self, collector: CollectorClient | None) -> None:
        self.collector = collector


@pytest.fixture
def installed(session: Session) -> Iterator[Session]:
    context.set_runtime(_FakeRuntime(session.client))
    try:
        yield session
    finally:
        context.set_runtime(None)


STATE_CALLS = [
    memlab.state.objects,
    memlab.state.tasks,
    memlab.state.workers,
    memlab.state.nodes,
    memlab.state.actors,
    memlab.state.events,
    memlab.state.ownership_graph,
    lambda: memlab.state.subscribe(lambda batch: None),
]


@pytest.mark.parametrize("call", STATE_CALLS)
def test_state_raises_without_a_runtime(call) -> None:
    assert context.current_runtime() is None
    with pytest.raises(RuntimeNotStartedError, match=r"memlab\.init\(\)"):
        call()


@pytest.mark.parametrize("call", STATE_CALLS)
def test_state_raises_a_typed_error_when_events_are_off(call) -> None:
    context.set_runtime(_FakeRuntime(None))
    try:
        with pytest.raises(EventsUnavailableError, match=r"events=False.*events=True"):
            call()
    finally:
        context.set_runtime(None)


def test_state_reads_the_installed_runtime(installed: Session) -> None:
    installed.driver.emit(
        "object.created",
        object_id="aa",
        owner="driver",
        task_id=None,
        call_site="cell[1]:1",
        size=3,
        state="ready",
    )
    node, _ = installed.worker("node-0")
    node.emit("worker.started", worker_id="w-1", node="node-0", pid=9)
    node.emit("node.started", node_id="node-0", pid=8, store_capacity=64)
    wait_for(lambda: len(memlab.state.events()) == 3, DEADLINE)
    assert [o["object_id"] for o in memlab.state.objects()] == ["aa"]
    assert [w["worker_id"] for w in memlab.state.workers()] == ["w-1"]
    assert [n["node_id"] for n in memlab.state.nodes()] == ["node-0"]
    assert memlab.state.tasks() == [] and memlab.state.actors() == []
    assert [e["seq"] for e in memlab.state.events()] == [1, 2, 3]
    assert [e["seq"] for e in memlab.state.events(since=2)] == [3]
    graph = memlab.state.ownership_graph()
    assert {"src": "process:driver", "dst": "object:aa", "kind": "owns"} in graph["edges"]

    got = threading.Event()
    unsubscribe = memlab.state.subscribe(lambda batch: got.set())
    installed.driver.emit("object.freed", object_ids=("aa",))
    assert got.wait(DEADLINE)
    unsubscribe()
    assert memlab.state.objects() == []
