"""``memlab.state`` while a runtime runs: the records front ends rely on, fed by real events."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

import memlab
from memlab.testing.faults import gated
from memlab.testing.leaks import wait_for


@memlab.remote
def make(n: int) -> np.ndarray:
    return np.zeros(n)


@memlab.remote
def nested(x: Any) -> Any:
    inner = memlab.put("owned by a worker")
    return [inner]


def test_object_records(rt: Any) -> None:
    small = memlab.put({"a": 1})
    big = make.remote(50_000)  # 400 KB: in the store
    memlab.get(big)
    holder = memlab.put([small])

    def records() -> dict[str, dict]:
        return {o["object_id"]: o for o in memlab.state.objects()}

    big_hex = big.hex()
    wait_for(
        lambda: records().get(big_hex, {}).get("state") == "ready",
        5,
        message="task result ready in state",
    )
    objs = records()
    s, b = objs[small.hex()], objs[big_hex]
    for record in (s, b):
        assert set(record) >= {
            "object_id",
            "owner",
            "size",
            "state",
            "locations",
            "call_site",
            "holders",
        }
        assert record["owner"] == "driver"
        assert "test_state.py" in record["call_site"]
    assert s["locations"] == ["owner:driver"]
    assert b["locations"] == ["node-0"] and b["size"] > 400_000
    assert s["holders"]["local"] == 1 and s["holders"]["contained_in"] == [holder.hex()]
    del big
    wait_for(lambda: big_hex not in records(), 2, message="freed object leaves the table")


def _task_named(name: str) -> dict | None:
    return next((t for t in memlab.state.tasks() if t["name"] == name), None)


def test_a_short_task_reports_its_start_with_its_end(rt: Any) -> None:
    memlab.get(make.options(name="short-start").remote(1))
    wait_for(
        lambda: (_task_named("short-start") or {}).get("state") == "finished",
        5,
        message="finished task record",
    )
    task = _task_named("short-start")
    assert task is not None
    assert task["node"] == "node-0" and task["worker"].startswith("w-")
    assert task["submitted_at"] <= task["started_at"] <= task["finished_at"]


def test_a_long_task_is_shown_running_while_it_runs(rt: Any, tmp_path: Any) -> None:
    gate = tmp_path / "gate"
    ref = memlab.remote(gated).options(name="long-start").remote(7, str(gate))
    wait_for(
        lambda: (_task_named("long-start") or {}).get("state") == "running",
        5,
        message="the running task announced by its worker",
    )
    task = _task_named("long-start")
    assert task is not None and task["node"] == "node-0" and task["started_at"] is not None
    gate.touch()
    assert memlab.get(ref) == 7
    wait_for(
        lambda: (_task_named("long-start") or {}).get("state") == "finished",
        5,
        message="finished task record",
    )


def test_tasks_workers_nodes(rt: Any) -> None:
    ref = make.options(name="state-probe").remote(10)
    memlab.get(ref)
    wait_for(
        lambda: any(
            t["name"] == "state-probe" and t["state"] == "finished" for t in memlab.state.tasks()
        ),
        5,
        message="finished task record",
    )
    task = next(t for t in memlab.state.tasks() if t["name"] == "state-probe")
    assert task["worker"].startswith("w-") and task["attempt"] == 0

    def alive() -> list[dict]:
        return [w for w in memlab.state.workers() if w["state"] == "alive"]

    wait_for(lambda: len(alive()) == 2, 10, message="both workers reported alive")
    workers = alive()
    assert len(workers) == 2 and all(w["pid"] > 0 and w["node"] == "node-0" for w in workers)
    wait_for(lambda: bool(memlab.state.nodes()), 5, message="node record")
    node = memlab.state.nodes()[0]
    assert node["node_id"] == "node-0" and node["alive"] is True
    assert node["store_capacity"] == rt.options.object_store_memory
    assert {"store_used", "spilled_bytes"} <= set(node)


def test_worker_owned_objects_and_graph(rt: Any) -> None:
    outer = nested.remote(None)  # created_by edge: outer -> its task
    inner = memlab.get(outer)[0]
    wait_for(
        lambda: any(o["object_id"] == inner.hex() for o in memlab.state.objects()),
        5,
        message="worker-owned object reported",
    )
    record = next(o for o in memlab.state.objects() if o["object_id"] == inner.hex())
    assert record["owner"] == inner.owner
    wait_for(
        lambda: (
            "driver"
            in next((o for o in memlab.state.objects() if o["object_id"] == inner.hex()), record)[
                "holders"
            ]["borrowers"]
        ),
        5,
        message="driver shown as borrower",
    )
    graph = memlab.state.ownership_graph()
    kinds = {e["kind"] for e in graph["edges"]}
    assert {"owns", "borrows", "created_by"} <= kinds
    ids = {n["id"] for n in graph["nodes"]}
    assert all(e["src"] in ids and e["dst"] in ids for e in graph["edges"])


def test_events_and_subscribe(rt: Any) -> None:
    got: list[dict] = []
    seen = threading.Event()

    def on_events(batch: list[dict]) -> None:
        got.extend(batch)
        if any(e["kind"] == "task.finished" for e in batch):
            seen.set()

    unsubscribe = memlab.state.subscribe(on_events)
    try:
        memlab.get(make.remote(1))
        assert seen.wait(5), "subscriber saw no task.finished event"
    finally:
        unsubscribe()
    kinds = {e["kind"] for e in memlab.state.events()}
    assert {"task.submitted", "task.finished"} <= kinds
    assert all("ts" in e and "proc" in e for e in got)


def test_driver_objects_and_events_are_shipped_in_order(rt: Any) -> None:
    before = memlab.state.events()
    since = before[-1]["seq"] if before else 0
    refs = [memlab.put(i) for i in range(100)]
    ids = {r.hex() for r in refs}
    # No wait: a read ships the driver's pending events before it asks.
    assert ids <= {o["object_id"] for o in memlab.state.objects()}
    created = [
        e
        for e in memlab.state.events(since)
        if e["kind"] == "object.created" and e["object_id"] in ids
    ]
    assert [e["object_id"] for e in created] == [r.hex() for r in refs]
