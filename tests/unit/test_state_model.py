"""The state model folds events into records; EventBuffer emits them without blocking."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from memlab.core.events import EVENT_FIELDS, EVENT_KINDS, EventBuffer
from memlab.core.state_model import StateModel

_ts = itertools.count(1000)


def ev(kind: str, proc: str = "driver", **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "ts": float(next(_ts)), "proc": proc, **fields}


def created(oid: str, owner: str = "driver", task_id: str | None = None) -> dict[str, Any]:
    return ev(
        "object.created",
        proc=owner,
        object_id=oid,
        owner=owner,
        task_id=task_id,
        call_site="cell[3]:1",
        size=None,
        state="pending",
    )


def holders(oid: str, local: int = 1, tasks: int = 0, contained_in=(), borrowers=()) -> dict:
    return ev(
        "object.holders",
        object_id=oid,
        local=local,
        tasks=tasks,
        contained_in=list(contained_in),
        borrowers=list(borrowers),
    )


def one(records: list[dict], key: str, value: str) -> dict:
    found = [r for r in records if r[key] == value]
    assert len(found) == 1, found
    return found[0]


@pytest.fixture
def model() -> Iterator[StateModel]:
    m = StateModel()
    yield m
    m.validate()


def test_object_created_ready_holders_then_freed_disappears(model: StateModel) -> None:
    model.apply([created("a1")])
    obj = one(model.objects(), "object_id", "a1")
    assert (obj["owner"], obj["state"], obj["size"], obj["call_site"]) == (
        "driver",
        "pending",
        None,
        "cell[3]:1",
    )

    model.apply([ev("object.ready", object_id="a1", size=800, inline=False, node="node-0")])
    model.apply([holders("a1", local=2, tasks=1, borrowers=["w-1"])])
    obj = one(model.objects(), "object_id", "a1")
    assert obj["state"] == "ready" and obj["size"] == 800
    assert obj["locations"] == ["node-0"]
    assert obj["holders"] == {"local": 2, "tasks": 1, "contained_in": [], "borrowers": ["w-1"]}

    model.apply([ev("object.freed", object_ids=["a1"])])
    assert model.objects() == []
    # A late event about a freed object must not resurrect it.
    model.apply([holders("a1", local=0)])
    assert model.objects() == []


def test_inline_object_is_located_in_its_owners_memory(model: StateModel) -> None:
    model.apply([created("b2", owner="w-7")])
    model.apply([ev("object.ready", object_id="b2", size=12, inline=True, node=None)])
    assert one(model.objects(), "object_id", "b2")["locations"] == ["owner:w-7"]


def test_task_events_carry_their_return_objects(model: StateModel) -> None:
    model.apply(
        [
            ev(
                "task.submitted",
                task_id="t9",
                name="f",
                owner="w-3",
                returns=["r1", "r2"],
                deps=[],
                call_site="cell[4]:2",
            )
        ]
    )
    for oid in ("r1", "r2"):
        obj = one(model.objects(), "object_id", oid)
        assert (obj["owner"], obj["task_id"], obj["state"], obj["call_site"]) == (
            "w-3",
            "t9",
            "pending",
            "cell[4]:2",
        )
        assert obj["holders"] == {"local": 1, "tasks": 0, "contained_in": [], "borrowers": []}
    model.apply(
        [
            ev(
                "task.finished",
                "w-3",
                task_id="t9",
                worker="w-1",
                attempt=0,
                results=[["r1", 12, None], ["r2", 4096, "node-1"]],
            )
        ]
    )
    r1, r2 = one(model.objects(), "object_id", "r1"), one(model.objects(), "object_id", "r2")
    assert (r1["state"], r1["size"], r1["locations"]) == ("ready", 12, ["owner:w-3"])
    assert (r2["state"], r2["size"], r2["locations"]) == ("ready", 4096, ["node-1"])


def test_put_is_one_created_event_in_state_ready(model: StateModel) -> None:
    model.apply(
        [
            ev(
                "object.created",
                object_id="p1",
                owner="driver",
                task_id=None,
                call_site="cell[1]:1",
                size=4096,
                state="ready",
                node="node-0",
            )
        ]
    )
    obj = one(model.objects(), "object_id", "p1")
    assert (obj["state"], obj["size"], obj["locations"]) == ("ready", 4096, ["node-0"])
    assert obj["holders"]["local"] == 1


def test_default_holders_are_shared_but_never_leak_between_objects(model: StateModel) -> None:
    model.apply([created("s1"), created("s2"), holders("s1", local=3, borrowers=["w-9"])])
    s1, s2 = one(model.objects(), "object_id", "s1"), one(model.objects(), "object_id", "s2")
    assert s1["holders"]["local"] == 3 and s1["holders"]["borrowers"] == ["w-9"]
    assert s2["holders"] == {"local": 1, "tasks": 0, "contained_in": [], "borrowers": []}
    s2["holders"]["borrowers"].append("w-evil")
    assert one(model.objects(), "object_id", "s1")["holders"]["borrowers"] == ["w-9"]
    assert one(model.objects(), "object_id", "s2")["holders"]["borrowers"] == []


def test_ready_before_created_is_merged_not_listed_without_owner(model: StateModel) -> None:
    model.apply([ev("object.ready", object_id="c3", size=5, inline=False, node="node-1")])
    assert model.objects() == []  # no owner known yet
    model.apply([created("c3", owner="w-2")])
    obj = one(model.objects(), "object_id", "c3")
    assert (obj["owner"], obj["state"], obj["locations"]) == ("w-2", "ready", ["node-1"])


def test_returned_records_are_copies(model: StateModel) -> None:
    model.apply([created("d4"), holders("d4", borrowers=["w-1"])])
    obj = model.objects()[0]
    obj["holders"]["borrowers"].append("w-evil")
    obj["state"] = "mutated"
    again = model.objects()[0]
    assert again["holders"]["borrowers"] == ["w-1"] and again["state"] == "pending"


def test_spilled_then_restored(model: StateModel) -> None:
    model.apply(
        [created("e5"), ev("object.ready", object_id="e5", size=9, inline=False, node="n0")]
    )
    model.apply([ev("object.spilled", object_id="e5", node="n0", size=9)])
    assert one(model.objects(), "object_id", "e5")["state"] == "spilled"
    model.apply([ev("object.restored", object_id="e5", node="n1", size=9)])
    obj = one(model.objects(), "object_id", "e5")
    assert obj["state"] == "ready" and obj["locations"] == ["n0", "n1"]
    model.apply([ev("object.evicted", object_id="e5", node="n1", size=9)])
    assert one(model.objects(), "object_id", "e5")["locations"] == ["n0"]


def test_lost_reconstructing_reconstructed(model: StateModel) -> None:
    model.apply([created("f6", task_id="t1")])
    model.apply([ev("object.ready", object_id="f6", size=1, inline=False, node="n0")])
    model.apply([ev("node.died", node_id="n0"), ev("object.lost", object_id="f6")])
    obj = one(model.objects(), "object_id", "f6")
    assert obj["state"] == "lost" and obj["locations"] == []
    model.apply([ev("object.reconstructing", object_id="f6")])
    assert one(model.objects(), "object_id", "f6")["state"] == "reconstructing"
    model.apply([ev("object.ready", object_id="f6", size=1, inline=False, node="n1")])
    model.apply([ev("object.reconstructed", object_id="f6")])
    obj = one(model.objects(), "object_id", "f6")
    assert obj["state"] == "ready" and obj["locations"] == ["n1"]


def test_object_failed_and_owner_died(model: StateModel) -> None:
    model.apply([created("g7"), created("h8", owner="w-9"), created("i9", owner="w-9")])
    model.apply([ev("object.failed", object_id="g7", error="ZeroDivisionError")])
    obj = one(model.objects(), "object_id", "g7")
    assert obj["state"] == "failed" and obj["error"] == "ZeroDivisionError"
    model.apply([ev("owner.died", owner="w-9")])
    assert [o["object_id"] for o in model.objects()] == ["g7"]


def test_task_life(model: StateModel) -> None:
    model.apply(
        [
            ev(
                "task.submitted",
                task_id="t1",
                name="load",
                owner="driver",
                returns=["o1"],
                deps=["o0"],
                call_site="cell[2]:4",
            )
        ]
    )
    task = one(model.tasks(), "task_id", "t1")
    assert (task["state"], task["name"], task["owner"], task["deps"]) == (
        "pending",
        "load",
        "driver",
        ["o0"],
    )
    assert task["submitted_at"] is not None and task["started_at"] is None

    model.apply([ev("task.started", "w-1", task_id="t1", worker="w-1", node="n0", attempt=0)])
    task = one(model.tasks(), "task_id", "t1")
    assert (task["state"], task["worker"], task["node"]) == ("running", "w-1", "n0")

    model.apply([ev("task.failed", "w-1", task_id="t1", worker="w-1", attempt=0, error="crash")])
    assert one(model.tasks(), "task_id", "t1")["state"] == "failed"
    model.apply([ev("task.retried", task_id="t1", attempt=1, reason="worker died")])
    task = one(model.tasks(), "task_id", "t1")
    assert (task["state"], task["attempt"], task["error"]) == ("pending", 1, None)

    model.apply([ev("task.started", "w-2", task_id="t1", worker="w-2", node="n0", attempt=1)])
    # A late event of the first attempt must not move the task.
    model.apply([ev("task.finished", "w-1", task_id="t1", worker="w-1", attempt=0)])
    assert one(model.tasks(), "task_id", "t1")["state"] == "running"
    model.apply([ev("task.finished", "w-2", task_id="t1", worker="w-2", attempt=1)])
    task = one(model.tasks(), "task_id", "t1")
    assert (task["state"], task["worker"], task["attempt"]) == ("finished", "w-2", 1)
    assert task["finished_at"] >= task["started_at"] >= task["submitted_at"]


def test_an_unannounced_start_arrives_with_the_end(model: StateModel) -> None:
    model.apply(
        [
            ev(
                "task.submitted",
                task_id="t5",
                name="f",
                owner="driver",
                returns=[],
                deps=[],
                call_site=None,
            )
        ]
    )
    model.apply(
        [
            ev(
                "task.finished",
                task_id="t5",
                worker="w-1",
                attempt=0,
                results=[],
                started_at=5.0,
                node="node-2",
            )
        ]
    )
    task = one(model.tasks(), "task_id", "t5")
    assert (task["state"], task["started_at"], task["node"], task["worker"]) == (
        "finished",
        5.0,
        "node-2",
        "w-1",
    )
    # The worker's own announcement, arriving late, changes nothing that is known.
    model.apply([ev("task.started", "w-1", task_id="t5", worker="w-1", node="node-2", attempt=0)])
    assert one(model.tasks(), "task_id", "t5")["started_at"] == 5.0


def test_task_started_before_submitted_and_cancel(model: StateModel) -> None:
    model.apply([ev("task.started", "w-1", task_id="t2", worker="w-1", node="n0", attempt=0)])
    model.apply(
        [
            ev(
                "task.submitted",
                proc="w-5",
                task_id="t2",
                name="nested",
                owner="w-5",
                returns=[],
                deps=[],
                call_site=None,
            )
        ]
    )
    task = one(model.tasks(), "task_id", "t2")
    assert (task["state"], task["name"], task["owner"]) == ("running", "nested", "w-5")
    model.apply([ev("task.cancelled", task_id="t2")])
    assert one(model.tasks(), "task_id", "t2")["state"] == "cancelled"


def test_worker_died_keeps_exit_information(model: StateModel) -> None:
    model.apply([ev("worker.started", "n0", worker_id="w-1", node="n0", pid=4242)])
    assert one(model.workers(), "worker_id", "w-1")["state"] == "alive"
    model.apply(
        [
            ev(
                "worker.died",
                "n0",
                worker_id="w-1",
                node="n0",
                pid=4242,
                exitcode=-9,
                signal=9,
                cause="killed by SIGKILL (likely the OOM killer)",
            )
        ]
    )
    worker = one(model.workers(), "worker_id", "w-1")
    assert worker == {
        "worker_id": "w-1",
        "node": "n0",
        "pid": 4242,
        "state": "dead",
        "exitcode": -9,
        "signal": 9,
        "cause": "killed by SIGKILL (likely the OOM killer)",
    }


def test_node_store_stats_and_death(model: StateModel) -> None:
    model.apply([ev("node.started", "n0", node_id="n0", pid=77, store_capacity=1 << 30)])
    model.apply(
        [ev("node.store", "n0", node_id="n0", store_used=500, spilled_bytes=64, num_objects=3)]
    )
    node = one(model.nodes(), "node_id", "n0")
    assert node == {
        "node_id": "n0",
        "alive": True,
        "pid": 77,
        "store_capacity": 1 << 30,
        "store_used": 500,
        "spilled_bytes": 64,
        "num_objects": 3,
    }
    model.apply([ev("node.died", node_id="n0")])
    assert one(model.nodes(), "node_id", "n0")["alive"] is False


def test_actor_lifecycle(model: StateModel) -> None:
    model.apply([ev("actor.created", actor_id="a1", name="Counter", worker="w-1")])
    model.apply([ev("actor.restarted", actor_id="a1", name="Counter", worker="w-2")])
    actor = one(model.actors(), "actor_id", "a1")
    assert (actor["state"], actor["worker"], actor["restarts"]) == ("alive", "w-2", 1)
    model.apply([ev("actor.died", actor_id="a1", name="Counter", worker="w-2")])
    assert one(model.actors(), "actor_id", "a1")["state"] == "dead"


def test_unknown_kind_is_logged_but_changes_nothing(model: StateModel) -> None:
    model.apply([created("j1")])
    before = (model.objects(), model.tasks(), model.workers(), model.nodes())
    model.apply([ev("object.teleported", object_id="j1", to="mars")])
    assert (model.objects(), model.tasks(), model.workers(), model.nodes()) == before
    events, latest = model.events()
    assert [e["kind"] for e in events] == ["object.created", "object.teleported"]
    assert latest == 2 and events[1]["to"] == "mars"


def test_malformed_event_is_logged_and_counted_not_raised(model: StateModel) -> None:
    model.apply([ev("object.ready", size=3)])  # no object_id
    assert model.malformed == 1
    assert model.events()[1] == 1


def test_events_since_and_bounded_log() -> None:
    model = StateModel(max_log=5)
    model.apply([ev("custom.tick", i=i) for i in range(8)])
    events, latest = model.events()
    assert latest == 8 and [e["seq"] for e in events] == [4, 5, 6, 7, 8]
    assert model.log_dropped == 3
    assert [e["seq"] for e in model.events(since=6)[0]] == [7, 8]
    assert model.events(since=8)[0] == []
    # Asking for events that already left the log gives everything kept.
    assert [e["seq"] for e in model.events(since=1)[0]] == [4, 5, 6, 7, 8]
    model.validate()


def test_finished_tasks_are_bounded_oldest_first() -> None:
    model = StateModel(max_finished_tasks=3)
    for i in range(5):
        model.apply([ev("task.finished", task_id=f"t{i}", worker="w-1", attempt=0)])
    model.apply([ev("task.started", task_id="live", worker="w-1", node="n0", attempt=0)])
    assert sorted(t["task_id"] for t in model.tasks()) == ["live", "t2", "t3", "t4"]
    model.validate()


def test_ownership_graph_small_scenario(model: StateModel) -> None:
    # driver owns A and C; w-1 borrows A; B (owned by w-1) contains A; A was created by task T,
    # which depends on C; A's primary copy is on node n0.
    model.apply(
        [
            ev("worker.started", "n0", worker_id="w-1", node="n0", pid=1),
            ev(
                "task.submitted",
                task_id="T",
                name="make_a",
                owner="driver",
                returns=["A"],
                deps=["C"],
                call_site=None,
            ),
            created("C"),
            created("A", task_id="T"),
            created("B", owner="w-1"),
            ev("object.ready", object_id="A", size=10, inline=False, node="n0"),
            holders("A", local=1, contained_in=["B"], borrowers=["w-1"]),
        ]
    )
    graph = model.ownership_graph()
    edges = {(e["src"], e["kind"], e["dst"]) for e in graph["edges"]}
    assert edges == {
        ("process:driver", "owns", "object:A"),
        ("process:driver", "owns", "object:C"),
        ("process:w-1", "owns", "object:B"),
        ("process:w-1", "borrows", "object:A"),
        ("object:B", "contains", "object:A"),
        ("object:A", "created_by", "task:T"),
        ("task:T", "depends_on", "object:C"),
        ("object:A", "located_at", "node:n0"),
    }
    kinds = {n["id"]: n["kind"] for n in graph["nodes"]}
    assert kinds == {
        "process:driver": "process",
        "process:w-1": "process",
        "object:A": "object",
        "object:B": "object",
        "object:C": "object",
        "task:T": "task",
        "node:n0": "node",
    }
    # Once B is freed, its edges go too: no edge points at a node that is not in the graph.
    model.apply([ev("object.freed", object_ids=["B"])])
    graph = model.ownership_graph()
    ids = {n["id"] for n in graph["nodes"]}
    assert all(e["src"] in ids and e["dst"] in ids for e in graph["edges"])
    assert "object:B" not in ids


def test_validate_catches_a_broken_invariant() -> None:
    model = StateModel()
    model.apply([created("k1")])
    model.validate()  # folds the backlog: the record exists now
    # Corrupt on purpose (a new dict: records share their default holders, never mutated).
    model._objects["k1"]["holders"] = {"local": -1, "tasks": 0, "contained_in": [], "borrowers": []}
    with pytest.raises(AssertionError, match="negative count"):
        model.validate()


# ------------------------------------------------------------------ EventBuffer


def test_an_owners_death_kills_its_actors_in_the_model(model: StateModel) -> None:
    model.apply(
        [
            ev("actor.created", "w-5", actor_id="a1", name="A", worker="w-5", owner="w-2"),
            ev("actor.created", "w-6", actor_id="a2", name="B", worker="w-6", owner="driver"),
            ev("owner.died", owner="w-2"),
        ]
    )
    states = {a["actor_id"]: (a["state"], a["owner"]) for a in model.actors()}
    assert states == {"a1": ("dead", "w-2"), "a2": ("alive", "driver")}
    # The creation folded after the owner's death (a worker's batch after the driver's event).
    model.apply([ev("actor.created", "w-7", actor_id="a3", name="C", worker="w-7", owner="w-2")])
    assert one(model.actors(), "actor_id", "a3")["state"] == "dead"


def test_every_kind_is_folded_without_error() -> None:
    assert frozenset(EVENT_FIELDS) == EVENT_KINDS
    ints = {"attempt", "size", "local", "tasks", "pid", "exitcode", "signal", "store_capacity"}
    ints |= {"store_used", "spilled_bytes", "num_objects"}
    lists = {"returns", "deps", "contained_in", "borrowers", "results", "object_ids"}
    submitted = {
        "submitted_at": 1.0,
        "name": "f",
        "owner": "driver",
        "returns": [],
        "deps": [],
        "call_site": None,
    }
    model = StateModel()
    for kind, fields in EVENT_FIELDS.items():
        values = {f: 1 if f in ints else [] if f in lists else "x" for f in fields}
        if "submitted" in values:
            values["submitted"] = submitted
        model.apply([ev(kind, **values)])
    assert model.malformed == 0
    model.validate()


def test_emit_stamps_kind_ts_proc() -> None:
    buf = EventBuffer("w-3f2a")
    buf.emit("object.freed", object_id="ab")
    (event,) = buf.drain()
    assert event["kind"] == "object.freed" and event["proc"] == "w-3f2a"
    assert event["object_id"] == "ab" and isinstance(event["ts"], float)
    assert buf.drain() == []


def test_emit_drops_and_counts_when_full() -> None:
    buf = EventBuffer("driver", max_pending=3)
    for i in range(5):
        buf.emit("custom", i=i)
    assert buf.dropped == 2
    assert [e["i"] for e in buf.drain()] == [0, 1, 2]
    buf.emit("custom", i=5)  # room again after a drain
    assert [e["i"] for e in buf.drain()] == [5]


def test_disabled_buffer_emits_nothing_and_drops_nothing() -> None:
    buf = EventBuffer("driver", max_pending=1)
    buf.enabled = False
    for _ in range(3):
        buf.emit("custom")
    assert buf.drain() == [] and buf.dropped == 0


def test_invalid_max_pending_says_how_to_fix() -> None:
    with pytest.raises(ValueError, match="positive"):
        EventBuffer("driver", max_pending=0)


# ------------------------------------------------------------- positional records (apply_batch)


def _drained_stream() -> list[Any]:
    """What an owner's buffer drains: held submissions (some carried by their end), ends,
    a retried attempt's stale end, a dict event, and a record of the wrong length."""
    buf = EventBuffer("driver")
    tid = [bytes([i]) * 16 for i in range(4)]
    oid = [bytes([0x80 + i]) * 16 for i in range(4)]
    for i in range(4):
        buf.hold(
            tid[i],
            "task.submitted",
            tid[i],
            f"f{i}",
            "driver",
            (oid[i],),
            (oid[0],) if i else (),
            "cell.py:3",
        )
    buf.release(tid[3])  # shipped on its own, before its end
    buf.record(
        "task.finished",
        tid[0],
        "w-1",
        0,
        ((oid[0], 80, "node-0"),),
        1.5,
        "node-0",
        buf.take(tid[0]),
    )
    buf.record(
        "task.finished", tid[3], "w-2", 0, ((oid[3], 8, None),), None, None, buf.take(tid[3])
    )
    buf.emit("task.retried", task_id=tid[1].hex(), attempt=1, reason="worker died")
    buf.record("task.finished", tid[1], "w-1", 0, (), None, None, None)  # stale attempt 0
    buf.record("task.finished", tid[2], "w-1")  # wrong length: logged, counted malformed
    buf.emit("object.freed", object_ids=(oid[3].hex(),))
    return buf.drain()


def test_apply_batch_folds_positional_records_like_their_expanded_dicts() -> None:
    from memlab.core.events import expand

    stream = _drained_stream()
    fast, slow = StateModel(), StateModel()
    slow.apply(expand(copy.deepcopy(stream), "driver"))  # the models own what they are given
    fast.apply_batch(stream, "driver")

    assert fast.tasks() == slow.tasks()
    assert fast.objects() == slow.objects()
    assert fast.malformed == slow.malformed == 1
    fast_log, fast_seq = fast.events()
    slow_log, slow_seq = slow.events()
    assert fast_seq == slow_seq == len(slow_log) == len(stream)
    assert fast_log == slow_log
    tasks = {t["task_id"]: t for t in fast.tasks()}
    assert tasks[(b"\x00" * 16).hex()]["state"] == "finished"
    assert tasks[(b"\x01" * 16).hex()]["attempt"] == 1  # the stale end did not settle it
    assert tasks[(b"\x01" * 16).hex()]["state"] != "finished"
    assert fast.events(since=fast_seq - 1)[0][0]["kind"] == "object.freed"
    fast.validate()


# ------------------------------------------------------------------ deferred fold


def _busy_session(seed: int) -> list[tuple[str, list[Any]]]:
    """Batches, as shipped, of a session with many short tasks: submissions and ends from the
    owner (positional), starts, failures and retries from workers, puts, holder changes, frees
    of objects whose updates came earlier, a node's and an owner's death."""
    import random

    rng = random.Random(seed)
    owner, workers = EventBuffer("driver"), [EventBuffer("w-1"), EventBuffer("w-2")]
    batches: list[tuple[str, list[Any]]] = []
    live: list[bytes] = []
    for step in range(600):
        tid, oid = rng.randbytes(16), rng.randbytes(16)
        owner.hold(
            tid,
            "task.submitted",
            tid,
            "f",
            "driver",
            (oid,),
            tuple(rng.sample(live, min(len(live), rng.randint(0, 2)))),
            "cell.py:1",
        )
        live.append(oid)
        worker = rng.choice(workers)
        fate = rng.random()
        if fate < 0.6:
            owner.record(
                "task.finished",
                tid,
                worker.proc,
                0,
                ((oid, rng.randint(1, 99), rng.choice([None, "node-0", "node-1"])),),
                None,
                "node-0",
                owner.take(tid) if rng.random() < 0.5 else None,
            )
        elif fate < 0.7:
            worker.emit(
                "task.started", task_id=tid.hex(), worker=worker.proc, node="node-1", attempt=0
            )
            owner.emit(
                "task.failed",
                task_id=tid.hex(),
                worker=worker.proc,
                attempt=0,
                error="ValueError",
                started_at=None,
                node="node-1",
            )
        elif fate < 0.8:
            owner.emit("task.retried", task_id=tid.hex(), attempt=1, reason="worker died")
            owner.record(
                "task.finished", tid, worker.proc, 0, ((oid, 5, "node-1"),), None, None, None
            )  # the older attempt's end: stale
            owner.record(
                "task.finished", tid, worker.proc, 1, ((oid, 5, "node-1"),), None, None, None
            )
        if rng.random() < 0.2:
            put = rng.randbytes(16)
            owner.record(
                "object.created",
                put,
                "driver",
                None,
                "cell.py:2",
                8,
                "ready",
                rng.choice([None, "node-0"]),
            )
            live.append(put)
        if live and rng.random() < 0.3:
            owner.emit(
                "object.holders",
                object_id=rng.choice(live).hex(),
                local=2,
                tasks=1,
                contained_in=(),
                borrowers=("w-1",),
            )
        if live and rng.random() < 0.4:
            gone = rng.sample(live, min(len(live), rng.randint(1, 3)))
            live = [o for o in live if o not in gone]
            owner.emit("object.freed", object_ids=tuple(o.hex() for o in gone))
        if step == 300:
            owner.emit("node.died", node_id="node-1")
            owner.emit("owner.died", owner="w-2")
        if rng.random() < 0.05:  # malformed, counted: a free naming nothing, an end's bad results
            owner.emit("object.freed")
            owner.record("task.finished", rng.randbytes(16), "w-1", 0, 5, None, None, None)
        for buf in (owner, *workers):
            if rng.random() < 0.3:
                batches.append((buf.proc, buf.drain()))
    batches += [(buf.proc, buf.drain()) for buf in (owner, *workers)]
    return batches


def _views(model: StateModel) -> dict[str, Any]:
    return {
        "objects": model.objects(),
        "tasks": model.tasks(),
        "workers": model.workers(),
        "nodes": model.nodes(),
        "actors": model.actors(),
        "graph": model.ownership_graph(),
        "malformed": model.malformed,
        "events": model.events(),
    }


@pytest.mark.parametrize("seed", range(3))
def test_a_deferred_fold_reads_the_same_as_folding_each_batch_at_once(seed: int) -> None:
    batches = _busy_session(seed)
    eager = StateModel(max_finished_tasks=50, max_tombstones=10_000, max_backlog=1)
    deferred = StateModel(max_finished_tasks=50, max_tombstones=10_000)
    bounded = StateModel(max_finished_tasks=50, max_tombstones=10_000, max_backlog=97)
    for proc, batch in batches:
        for model in (eager, deferred, bounded):
            model.apply_batch(copy.deepcopy(batch), proc)  # each model owns what it is given
        eager.tasks()  # a read between every batch: nothing waits in its backlog

    expected = _views(eager)
    assert expected["objects"] and expected["tasks"] and expected["malformed"]
    assert _views(deferred) == expected
    assert _views(bounded) == expected
    for model in (eager, deferred, bounded):
        model.validate()


def test_events_are_logged_at_once_and_folded_when_the_backlog_is_full() -> None:
    model = StateModel(max_backlog=3)
    model.apply([created("a"), created("b")])
    assert model.latest_seq == 2 and len(model.events()[0]) == 2  # the log never waits
    assert model._backlog  # nothing read yet: not folded
    model.apply([created("c")])
    assert not model._backlog  # the bound folded it without a read
    assert {o["object_id"] for o in model.objects()} == {"a", "b", "c"}


def test_invalid_max_backlog_says_how_to_fix() -> None:
    with pytest.raises(ValueError, match="max_backlog must be positive"):
        StateModel(max_backlog=0)
