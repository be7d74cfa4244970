"""The driver's collector: concurrent ingest, snapshots, rate-limited subscriptions, close."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import memlab.state
from memlab.exceptions import RuntimeNotStartedError
from memlab.runtime import global_state
from memlab.runtime.collector import Collector

DEADLINE = 5.0


def ev(kind: str, proc: str = "w-1", **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "ts": time.time(), "proc": proc, **fields}


def wait_for(predicate, timeout: float = DEADLINE) -> None:
    """Wait until ``predicate()`` holds, polling a condition rather than sleeping blindly."""
    deadline = time.monotonic() + timeout
    done = threading.Event()
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        done.wait(0.01)


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.close()
    assert c._thread is None or not c._thread.is_alive(), "publisher thread leaked"
    c.model().validate()


def test_ingest_from_four_threads_then_snapshot_sees_all(collector: Collector) -> None:
    per_thread, batch = 500, 25
    start = threading.Barrier(4)

    def produce(t: int) -> None:
        start.wait()
        for b in range(0, per_thread, batch):
            collector.ingest(
                [
                    ev(
                        "object.created",
                        proc=f"w-{t}",
                        object_id=f"{t:02x}{i:06x}",
                        owner=f"w-{t}",
                        task_id=None,
                        call_site=None,
                        size=None,
                        state="pending",
                    )
                    for i in range(b, b + batch)
                ]
            )

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(DEADLINE)
    objects = collector.snapshot("objects")
    assert len(objects) == 4 * per_thread
    assert {o["owner"] for o in objects} == {"w-0", "w-1", "w-2", "w-3"}
    assert collector.dropped == 0
    _, latest = collector.events()
    assert latest == 4 * per_thread


def test_local_events_fold_before_ingested_ones(collector: Collector) -> None:
    collector.local.emit(
        "task.submitted",
        task_id="t1",
        name="f",
        owner="driver",
        returns=[],
        deps=[],
        call_site=None,
    )
    collector.ingest([ev("task.started", task_id="t1", worker="w-1", node="n0", attempt=0)])
    (task,) = collector.snapshot("tasks")
    assert (task["name"], task["state"]) == ("f", "running")
    kinds = [e["kind"] for e in collector.events()[0]]
    assert kinds == ["task.submitted", "task.started"]


def test_ingest_drops_and_counts_when_too_many_pending() -> None:
    c = Collector(max_pending=10)
    try:
        c.ingest([ev("custom") for _ in range(11)])  # more than may ever wait
        assert c.dropped == 11
        c.ingest([ev("custom") for _ in range(8)])
        assert c.dropped == 11
        assert c.events()[1] == 8
        assert c.statistics()["dropped_ingest"] == 11
    finally:
        c.close()


def test_snapshot_rejects_unknown_view(collector: Collector) -> None:
    with pytest.raises(ValueError, match="use one of"):
        collector.snapshot("everything")


def test_subscriber_gets_new_events_in_batches(collector: Collector) -> None:
    collector.local.emit("custom.before")
    received: list[dict] = []
    calls: list[int] = []
    got_all = threading.Event()

    def on_events(batch: list[dict]) -> None:
        calls.append(len(batch))
        received.extend(batch)
        if len(received) >= 50:
            got_all.set()

    collector.subscribe(on_events, max_rate_hz=20)
    collector.ingest([ev("custom.tick", i=i) for i in range(50)])
    assert got_all.wait(DEADLINE)
    assert [e["i"] for e in received] == list(range(50))  # nothing from before subscribing
    assert len(calls) < 50  # batched, not one call per event


def test_subscriber_rate_is_bounded(collector: Collector) -> None:
    stamps: list[float] = []
    enough = threading.Event()

    def on_events(batch: list[dict]) -> None:
        stamps.append(time.monotonic())
        if len(stamps) >= 3:
            enough.set()

    collector.subscribe(on_events, max_rate_hz=20)
    stop = threading.Event()

    def flood() -> None:
        while not stop.is_set():
            collector.ingest([ev("custom.tick")])
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


def test_unsubscribe_stops_delivery(collector: Collector) -> None:
    first = threading.Event()
    received: list[dict] = []

    def on_events(batch: list[dict]) -> None:
        received.extend(batch)
        first.set()

    unsubscribe = collector.subscribe(on_events, max_rate_hz=50)
    collector.ingest([ev("custom.one")])
    assert first.wait(DEADLINE)
    unsubscribe()
    # A second subscriber proves that later events were published, yet the first saw none.
    seen_later = threading.Event()
    collector.subscribe(lambda batch: seen_later.set(), max_rate_hz=50)
    collector.ingest([ev("custom.two")])
    assert seen_later.wait(DEADLINE)
    assert [e["kind"] for e in received] == ["custom.one"]


def test_raising_subscriber_is_removed_and_does_not_break_others(
    collector: Collector, caplog: pytest.LogCaptureFixture
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

    collector.subscribe(bad, max_rate_hz=50)
    collector.subscribe(on_events, max_rate_hz=50)
    collector.ingest([ev("custom.one")])
    wait_for(lambda: len(good) >= 1 and bad_calls)
    collector.ingest([ev("custom.two")])
    assert good_got_both.wait(DEADLINE)
    assert len(bad_calls) == 1
    assert "unsubscribed" in caplog.text
    assert collector.statistics()["subscribers"] == 1


def test_close_joins_the_thread_and_is_idempotent() -> None:
    c = Collector()
    c.subscribe(lambda batch: None)
    thread = c._thread
    assert thread is not None and thread.is_alive()
    started = time.monotonic()
    c.close()
    c.close()
    assert not thread.is_alive()
    assert time.monotonic() - started < 2.5
    with pytest.raises(RuntimeError, match="closed"):
        c.subscribe(lambda batch: None)


# ------------------------------------------------------------------ memlab.state


class _FakeRuntime:
    def __init__(self, collector: Collector) -> None:
        self.collector = collector


@pytest.fixture
def installed(collector: Collector) -> Iterator[Collector]:
    global_state.set_runtime(_FakeRuntime(collector))
    try:
        yield collector
    finally:
        global_state.set_runtime(None)


@pytest.mark.parametrize(
    "call",
    [
        memlab.state.objects,
        memlab.state.tasks,
        memlab.state.workers,
        memlab.state.nodes,
        memlab.state.actors,
        memlab.state.events,
        memlab.state.ownership_graph,
        lambda: memlab.state.subscribe(lambda batch: None),
    ],
)
def test_state_raises_without_a_runtime(call) -> None:
    assert global_state.current_runtime() is None
    with pytest.raises(RuntimeNotStartedError, match=r"memlab\.init\(\)"):
        call()


def test_state_reads_the_installed_runtime(installed: Collector) -> None:
    installed.local.emit(
        "object.created",
        object_id="aa",
        owner="driver",
        task_id=None,
        call_site="cell[1]:1",
        size=3,
        state="ready",
    )
    installed.ingest([ev("worker.started", "node-0", worker_id="w-1", node="node-0", pid=9)])
    installed.ingest([ev("node.started", "node-0", node_id="node-0", pid=8, store_capacity=64)])
    assert [o["object_id"] for o in memlab.state.objects()] == ["aa"]
    assert [w["worker_id"] for w in memlab.state.workers()] == ["w-1"]
    assert [n["node_id"] for n in memlab.state.nodes()] == ["node-0"]
    assert memlab.state.tasks() == [] and memlab.state.actors() == []
    events = memlab.state.events()
    assert [e["seq"] for e in events] == [1, 2, 3]
    assert [e["seq"] for e in memlab.state.events(since=2)] == [3]
    graph = memlab.state.ownership_graph()
    assert {"src": "process:driver", "dst": "object:aa", "kind": "owns"} in graph["edges"]

    got = threading.Event()
    unsubscribe = memlab.state.subscribe(lambda batch: got.set())
    installed.local.emit("object.freed", object_ids=["aa"])
    assert got.wait(DEADLINE)
    unsubscribe()
    assert memlab.state.objects() == []
