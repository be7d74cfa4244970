"""Simulated nodes: each has its own store and workers, tasks spread over them, values cross.

``memlab.init(num_nodes=K)`` starts K node managers on one machine. These tests check what a
user sees of them (``memlab.state.nodes()``, where tasks ran), that a value made on one node
and needed on another gets a secondary copy there which goes when its primary is freed, and
that losing a node and adding one keeps the cluster serving.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import pytest

import memlab
import memlab.state
from memlab.ids import task_of
from memlab.testing import add_node, kill_node, nodes_alive, placed_on, store_stats, wait_for
from tests.conftest import STORE
from tests.integration.helpers import BIG, DEADLINE, primary, wait_primary

NODES = ("node-0", "node-1")
EVENTS_DEADLINE = 5.0


@memlab.remote
def where(i: int) -> tuple[int, str]:
    # Long enough that a batch of these keeps several workers busy at once.
    time.sleep(0.05)
    return i, os.environ["MEMLAB_NODE"]


@memlab.remote
def big(i: int) -> np.ndarray:
    return np.full(BIG, i, dtype=np.float64)


@memlab.remote
def read_big(a: np.ndarray) -> tuple[float, str]:
    return float(a.sum()), os.environ["MEMLAB_NODE"]


# ------------------------------------------------------------------------------------ helpers


def made_on(node: str, value: int = 7, fn: Any = big) -> tuple[memlab.ObjectRef, int]:
    """A ``big`` result run on ``node`` (its primary copy is there); the ref and its fill value."""
    with placed_on(node):
        ref = fn.remote(value)
    memlab.wait([ref], timeout=DEADLINE)
    wait_primary(ref, node)
    return ref, value


def copy_to_node_0(ref: memlab.ObjectRef, value: int) -> None:
    """A reader on node-0 pulls a copy of ``ref`` into node-0's store."""
    with placed_on("node-0"):
        total, node = memlab.get(read_big.remote(ref), timeout=DEADLINE)
    assert total == value * BIG and node == "node-0"


def stores_empty(nodes: tuple[str, ...] = NODES) -> bool:
    return all(store_stats(n)["num_objects"] == 0 and store_stats(n)["used"] == 0 for n in nodes)


# -------------------------------------------------------------------------------------- tests


def test_state_lists_each_node_alive_with_its_store(fresh_runtime: Any) -> None:
    fresh_runtime(num_nodes=2, num_workers=4, object_store_memory=STORE)

    def listed() -> bool:
        recs = {n["node_id"]: n for n in memlab.state.nodes()}
        return set(NODES) <= set(recs) and all(
            recs[n]["alive"] and recs[n]["store_capacity"] for n in NODES
        )

    wait_for(listed, DEADLINE, message="both nodes listed alive in memlab.state.nodes()")
    recs = {n["node_id"]: n for n in memlab.state.nodes()}
    assert set(recs) == set(NODES)
    for node in NODES:
        assert recs[node]["store_capacity"] == STORE // 2  # the memory is split between nodes
        assert recs[node]["store_used"] == 0
        assert recs[node]["num_objects"] == 0
        assert isinstance(recs[node]["pid"], int)
    assert recs["node-0"]["pid"] != recs["node-1"]["pid"]  # one node manager each
    assert nodes_alive() == list(NODES)


def finished_records(refs: list[memlab.ObjectRef]) -> list[dict[str, Any]]:
    """The task records of ``refs``' tasks once all are finished and name their worker."""
    task_ids = {task_of(r.binary).hex() for r in refs}
    found: list[dict[str, Any]] = []

    def recorded() -> bool:
        found[:] = [t for t in memlab.state.tasks() if t["task_id"] in task_ids]
        return len(found) == len(refs) and all(
            t["state"] == "finished" and t["worker"] for t in found
        )

    wait_for(recorded, DEADLINE, message=f"{len(refs)} finished task records with their worker")
    return found


def test_tasks_run_on_workers_of_both_nodes(fresh_runtime: Any) -> None:
    fresh_runtime(num_nodes=2, num_workers=4, object_store_memory=STORE)
    refs = [where.remote(i) for i in range(16)]
    results = memlab.get(refs, timeout=DEADLINE)
    assert [i for i, _ in results] == list(range(16))
    assert {node for _, node in results} == set(NODES)

    # The dashboard's view agrees: each task record names its worker, and those workers
    # belong to both nodes.
    tasks = finished_records(refs)
    node_of = {w["worker_id"]: w["node"] for w in memlab.state.workers()}
    assert {node_of[t["worker"]] for t in tasks} == set(NODES)
    assert {w["node"] for w in memlab.state.workers()} == set(NODES)


def test_task_records_name_the_node_they_ran_on(fresh_runtime: Any) -> None:
    fresh_runtime(num_nodes=2, num_workers=4, object_store_memory=STORE)
    refs = [where.remote(i) for i in range(8)]
    ran_on = dict(memlab.get(refs, timeout=DEADLINE))
    by_task = {task_of(r.binary).hex(): i for i, r in enumerate(refs)}

    finished_records(refs)

    def nodes_recorded() -> bool:
        tasks = [t for t in memlab.state.tasks() if t["task_id"] in by_task]
        return all(t["node"] is not None for t in tasks)

    # Workers' events reach the driver within a few housekeeping rounds (10 ms each).
    wait_for(nodes_recorded, EVENTS_DEADLINE, message="every finished task record names its node")
    node_of = {w["worker_id"]: w["node"] for w in memlab.state.workers()}
    for t in finished_records(refs):
        assert t["node"] == ran_on[by_task[t["task_id"]]] == node_of[t["worker"]]


def test_value_needed_on_another_node_gets_a_secondary_copy_freed_with_it(
    fresh_runtime: Any,
) -> None:
    fresh_runtime(num_nodes=2, num_workers=4, object_store_memory=STORE)
    ref, value = made_on("node-1")
    wait_for(
        lambda: store_stats("node-1")["num_objects"] == 1,
        DEADLINE,
        message="node-1 holds the primary copy",
    )
    assert store_stats("node-0")["num_objects"] == 0

    copy_to_node_0(ref, value)
    stats0 = store_stats("node-0")
    assert stats0["num_objects"] == 1, "node-0's store should hold a secondary copy"
    assert stats0["used"] >= BIG * 8
    assert store_stats("node-1")["num_objects"] == 1  # the primary stays where it was made
    assert primary(ref) == "node-1"

    # Freeing the object removes the primary and, with it, the secondary copy.
    del ref
    wait_for(
        lambda: stores_empty(), DEADLINE, message="both stores empty after the object was freed"
    )


def test_a_copy_on_a_live_node_becomes_primary_when_its_node_dies(fresh_runtime: Any) -> None:
    fresh_runtime(num_nodes=2, num_workers=4, object_store_memory=STORE)
    # No retries: if the surviving copy were not used, the object could not be rebuilt.
    ref, value = made_on("node-1", fn=big.options(max_retries=0))
    copy_to_node_0(ref, value)
    assert primary(ref) == "node-1"

    kill_node("node-1")
    assert np.all(memlab.get(ref, timeout=DEADLINE) == value)
    wait_for(lambda r=ref: primary(r) == "node-0", DEADLINE, message="node-0 holds the primary")
    kinds = {e["kind"] for e in memlab.state.events() if e.get("object_id") == ref.hex()}
    assert "object.promoted" in kinds and "object.lost" not in kinds
    tid = task_of(ref.binary).hex()
    assert not [
        e for e in memlab.state.events() if e["kind"] == "task.retried" and e["task_id"] == tid
    ]  # not run again
    assert np.all(memlab.get(read_big.remote(ref), timeout=DEADLINE)[0] == value * BIG)

    # It is a primary now: freeing the object deletes it.
    del ref
    wait_for(
        lambda: stores_empty(("node-0",)),
        DEADLINE,
        message="node-0's store empty after the object was freed",
    )


def test_killed_node_leaves_and_an_added_node_serves(fresh_runtime: Any) -> None:
    fresh_runtime(num_nodes=2, num_workers=4, object_store_memory=STORE)
    assert memlab.get(where.remote(0), timeout=DEADLINE)[0] == 0
    wait_for(
        lambda: len({w["node"] for w in memlab.state.workers()}) == 2,
        DEADLINE,
        message="workers of both nodes started",
    )
    doomed = {w["worker_id"] for w in memlab.state.workers() if w["node"] == "node-1"}

    kill_node("node-1")
    assert nodes_alive() == ["node-0"]

    def node1_dead() -> bool:
        recs = {n["node_id"]: n for n in memlab.state.nodes()}
        workers = {w["worker_id"]: w for w in memlab.state.workers()}
        return not recs["node-1"]["alive"] and all(workers[w]["state"] == "dead" for w in doomed)

    wait_for(node1_dead, DEADLINE, message="node-1 and its workers shown dead")
    results = memlab.get([where.remote(i) for i in range(8)], timeout=DEADLINE)
    assert results == [(i, "node-0") for i in range(8)]  # only node-0 is left to run them

    with pytest.raises(ValueError, match="node-1"):
        kill_node("node-1")  # already dead

    added = add_node(num_workers=2)
    assert added not in NODES
    assert nodes_alive() == ["node-0", added]
    wait_for(
        lambda: any(n["node_id"] == added and n["alive"] for n in memlab.state.nodes()),
        DEADLINE,
        message=f"{added} listed alive",
    )
    # New work spreads onto the added node, and values still cross between nodes.
    for _ in range(10):
        results = memlab.get([where.remote(i) for i in range(8)], timeout=DEADLINE)
        if added in {node for _, node in results}:
            break
    else:
        raise AssertionError(f"no task ran on the added node {added}")
    ref, value = made_on(added)
    assert memlab.get(ref, timeout=DEADLINE).sum() == value * BIG  # the driver is on node-0


def test_head_node_cannot_be_killed(fresh_runtime: Any) -> None:
    fresh_runtime(num_nodes=2, num_workers=2, object_store_memory=STORE)
    with pytest.raises(ValueError, match=r"node-0.*head node"):
        kill_node("node-0")
    with pytest.raises(ValueError, match="no alive node"):
        kill_node("node-7")
    assert nodes_alive() == list(NODES)
    assert memlab.get(where.remote(1), timeout=DEADLINE)[0] == 1


@memlab.remote
def large(size: int) -> np.ndarray:
    return np.arange(size, dtype=np.uint8)  # a wrapping byte pattern: a misplaced piece shows


def test_value_larger_than_a_frame_crosses_nodes_intact(fresh_runtime: Any) -> None:
    """Copies between nodes travel in pieces: a value over the frame cap arrives whole."""
    from memlab.protocol.frames import COPY_CHUNK_BYTES, MAX_PAYLOAD_BYTES

    size = MAX_PAYLOAD_BYTES + COPY_CHUNK_BYTES // 3  # not a whole number of pieces
    fresh_runtime(num_nodes=2, num_workers=2, object_store_memory=4 * size)
    with placed_on("node-1"):
        ref = large.remote(size)
    memlab.wait([ref], timeout=60)
    wait_primary(ref, "node-1")
    value = memlab.get(ref, timeout=60)  # the driver is on node-0: its node pulls a copy
    assert store_stats("node-0")["num_objects"] == 1, "node-0 should hold the copy"
    assert value.nbytes == size
    assert np.array_equal(value, np.arange(size, dtype=np.uint8))
    del value, ref
