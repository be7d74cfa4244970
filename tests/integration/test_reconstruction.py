"""Lineage reconstruction: a killed node's lost objects are rebuilt by re-running their tasks.

Each test kills a real node (SIGKILL of its node manager and workers; its shared memory is
removed) while the driver holds results that lived there, then checks that the owner re-ran
exactly the tasks it needed (recursively, through freed intermediate results), that the final
values are right, and that the events and ``memlab.state`` show the loss and the rebuild. Values
that cannot be rebuilt fail with the documented errors: ``ObjectLostError`` for ``put`` objects,
``ObjectReconstructionFailedError`` when the task's retry budget is spent.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import memlab
import memlab.state
from memlab.exceptions import ObjectLostError, ObjectReconstructionFailedError
from memlab.ids import task_of
from memlab.testing import (
    delete_copy,
    drop_copies,
    first_attempt,
    kill_node,
    lineage_stats,
    placed_on,
    store_stats,
    table_size,
    wait_for,
    wait_for_file,
)
from memlab.testing.invariants import validate_session
from tests.conftest import STORE
from tests.integration.helpers import BIG, DEADLINE, primary, wait_primary

CHAIN = 30


@memlab.remote
def fill(i: int) -> np.ndarray:
    return np.full(BIG, i, dtype=np.float64)


@memlab.remote
def inc(a: np.ndarray) -> np.ndarray:
    return a + 1


@memlab.remote
def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a + b


@memlab.remote
def gated_fill(i: int, marker: str, gate: str) -> np.ndarray:
    if not first_attempt(marker):
        wait_for_file(gate)  # a rebuild waits here, so the test can watch it in progress
    return np.full(BIG, i, dtype=np.float64)


@memlab.remote
def wait_gate(gate: str) -> int:
    wait_for_file(gate)
    return 1


@memlab.remote
def combine(a: np.ndarray, g: int) -> float:
    return float(a.sum()) + g


# ------------------------------------------------------------------------------------ helpers


def made_on(node: str, submit: Callable[[], memlab.ObjectRef]) -> memlab.ObjectRef:
    """The result of ``submit()``, run on ``node``. The affinity is soft: once the node is
    killed, the rebuild (the same task spec) runs on a node that is left."""
    with placed_on(node, soft=True):
        ref = submit()
    memlab.wait([ref], timeout=DEADLINE)
    wait_primary(ref, node)
    return ref


def tid(ref: memlab.ObjectRef) -> str:
    return task_of(ref.binary).hex()


def events(kind: str) -> list[dict[str, Any]]:
    return [e for e in memlab.state.events() if e["kind"] == kind]


def retried_tasks() -> set[str]:
    return {e["task_id"] for e in events("task.retried")}


def object_ids(kind: str) -> set[str]:
    return {e["object_id"] for e in events(kind)}


def state_of(ref: memlab.ObjectRef) -> str | None:
    for rec in memlab.state.objects():
        if rec["object_id"] == ref.hex():
            return rec["state"]
    return None


def lose_node_1() -> None:
    """Kill node-1 with nothing of it left elsewhere: readers on node-0 pulled copies of some
    results, which node-0 would promote (test_nodes.py covers that); drop them first."""
    drop_copies("node-0")
    kill_node("node-1")


def start(fresh_runtime: Any, **options: Any) -> Any:
    return fresh_runtime(num_nodes=2, num_workers=4, object_store_memory=STORE, **options)


# -------------------------------------------------------------------------------------- tests


def test_chain_whose_tail_was_on_a_killed_node_is_rebuilt(fresh_runtime: Any) -> None:
    start(fresh_runtime)
    keep = made_on("node-0", lambda: fill.remote(-1))  # must not re-run
    x = fill.remote(0)
    chain = [tid(x)]
    for _ in range(CHAIN - 2):
        x = inc.remote(x)  # the driver drops each intermediate ref: only lineage keeps them
        chain.append(tid(x))
    tail = made_on("node-1", lambda x=x: inc.remote(x))
    del x
    chain.append(tid(tail))
    assert memlab.get(tail, timeout=DEADLINE)[0] == CHAIN - 1

    lose_node_1()
    value = memlab.get(tail, timeout=DEADLINE)
    assert value.shape == (BIG,) and np.all(value == CHAIN - 1)
    assert np.all(memlab.get(keep, timeout=DEADLINE) == -1)

    # The tail was lost and rebuilt; to rebuild it, every freed link of the chain re-ran
    # (back to the head), and nothing else did.
    assert tail.hex() in object_ids("object.lost")
    assert tail.hex() in object_ids("object.reconstructed")
    assert retried_tasks() == set(chain)
    assert tid(keep) not in retried_tasks()
    assert state_of(tail) == "ready"
    assert primary(tail) == "node-0"  # the only node left


def test_tree_whose_results_were_on_a_killed_node_is_rebuilt(fresh_runtime: Any) -> None:
    start(fresh_runtime)
    # The driver keeps the leaves: the even ones on node-1 (lost with it), the odd on node-0.
    leaves = [made_on(f"node-{1 - i % 2}", lambda i=i: fill.remote(i)) for i in range(8)]
    where = {leaf.hex(): primary(leaf) for leaf in leaves}
    assert list(where.values()) == ["node-1", "node-0"] * 4
    level, inner = leaves, []
    while len(level) > 2:  # a binary reduction; the driver drops the inner levels
        level = [add.remote(level[i], level[i + 1]) for i in range(0, len(level), 2)]
        inner += [tid(r) for r in level]
    root = made_on("node-1", lambda a=level[0], b=level[1]: add.remote(a, b))
    del level
    assert memlab.get(root, timeout=DEADLINE)[0] == sum(range(8))

    lose_node_1()
    value = memlab.get(root, timeout=DEADLINE)
    assert np.all(value == sum(range(8)))
    for i, leaf in enumerate(leaves):
        assert np.all(memlab.get(leaf, timeout=DEADLINE) == i)

    lost_leaves = {tid(leaf) for leaf in leaves if where[leaf.hex()] == "node-1"}
    kept_leaves = {tid(leaf) for leaf in leaves if where[leaf.hex()] == "node-0"}
    # Re-ran: the root, every freed inner reduction, and the leaves that were on node-1;
    # the leaves whose copies survived on node-0 did not.
    assert retried_tasks() == {tid(root), *inner, *lost_leaves}
    assert not kept_leaves & retried_tasks()
    lost = object_ids("object.lost")
    rebuilt = object_ids("object.reconstructed")
    for leaf in leaves:
        on_killed = where[leaf.hex()] == "node-1"
        assert (leaf.hex() in lost) == on_killed
        assert (leaf.hex() in rebuilt) == on_killed
    assert root.hex() in lost and root.hex() in rebuilt


def test_state_shows_an_object_reconstructing_while_it_is(
    fresh_runtime: Any, tmp_path: Path
) -> None:
    start(fresh_runtime)
    gate = str(tmp_path / "gate")
    ref = made_on("node-1", lambda: gated_fill.remote(5, str(tmp_path / "m"), gate))
    i = int(memlab.get(ref, timeout=DEADLINE)[0])

    lose_node_1()
    wait_for(
        lambda: state_of(ref) == "reconstructing",
        DEADLINE,
        message="memlab.state.objects() shows the lost object reconstructing",
    )
    assert ref.hex() in object_ids("object.lost")
    assert ref.hex() in object_ids("object.reconstructing")
    assert memlab.wait([ref], timeout=0.2)[0] == []  # not ready while its task waits

    Path(gate).touch()
    assert np.all(memlab.get(ref, timeout=DEADLINE) == i)
    wait_for(lambda: state_of(ref) == "ready", DEADLINE, message="object ready again")
    assert tid(ref) in retried_tasks()


def test_lost_put_object_raises_object_lost_naming_its_call_site(fresh_runtime: Any) -> None:
    start(fresh_runtime)
    ref = memlab.put(np.ones(BIG))
    line = sys._getframe().f_lineno - 1  # the put's line: its call site
    assert primary(ref) == "node-0"
    # A put object lives on its owner's node, so no node death can lose it without killing
    # its owner too; lose the store's only copy directly, as a corrupted store would.
    delete_copy("node-0", ref)
    wait_for(
        lambda: store_stats("node-0")["num_objects"] == 0,
        DEADLINE,
        message="the copy is gone from node-0's store",
    )

    with pytest.raises(ObjectLostError) as info:
        memlab.get(ref, timeout=DEADLINE)
    err = info.value
    assert type(err) is ObjectLostError  # neither OwnerDiedError nor a failed rebuild
    assert err.object_id == ref.hex()
    assert err.call_site is not None and f"test_reconstruction.py:{line}" in err.call_site
    message = str(err)
    assert "memlab.put()" in message and f"test_reconstruction.py:{line}" in message
    assert ref.hex() in object_ids("object.lost")
    assert not retried_tasks()
    assert state_of(ref) == "lost"
    with pytest.raises(ObjectLostError):  # stays lost; nothing to rebuild it from
        memlab.get(ref, timeout=DEADLINE)


def test_spent_retry_budget_raises_reconstruction_failed(fresh_runtime: Any) -> None:
    start(fresh_runtime)
    fragile = fill.options(max_retries=0, name="fragile")
    ref = made_on("node-1", lambda: fragile.remote(3))
    memlab.get(ref, timeout=DEADLINE)

    lose_node_1()
    with pytest.raises(ObjectReconstructionFailedError) as info:
        memlab.get(ref, timeout=DEADLINE)
    err = info.value
    assert err.object_id == ref.hex()
    assert err.task_name == "fragile"
    assert err.attempts == 1
    message = str(err)
    assert ref.hex() in message and "'fragile'" in message and "1 attempt" in message
    assert "max_retries=0" in message
    assert err.call_site is not None and "test_reconstruction.py" in err.call_site
    assert tid(ref) not in retried_tasks()
    assert ref.hex() in object_ids("object.lost")


def test_pending_task_runs_after_its_lost_argument_is_rebuilt(
    fresh_runtime: Any, tmp_path: Path
) -> None:
    start(fresh_runtime)
    gate = str(tmp_path / "gate")
    a = made_on("node-1", lambda: fill.remote(3))
    i = int(memlab.get(a, timeout=DEADLINE)[0])
    a_task = tid(a)
    g = wait_gate.remote(gate)
    out = combine.remote(a, g)  # pending: it waits for g, and holds a
    a_hex = a.hex()
    del a  # now only the pending task needs a

    lose_node_1()
    Path(gate).touch()  # g may now finish before, during or after a's rebuild
    assert memlab.get(out, timeout=DEADLINE) == i * BIG + 1
    assert a_hex in object_ids("object.lost"), [e for e in memlab.state.events() if a_hex in str(e)]
    assert a_hex in object_ids("object.reconstructed"), [
        e for e in memlab.state.events() if a_hex in str(e)
    ]
    assert a_task in retried_tasks()


def test_lineage_is_kept_while_needed_and_released_after(fresh_runtime: Any) -> None:
    start(fresh_runtime)
    x = fill.remote(0)
    for _ in range(4):
        x = inc.remote(x)
    assert memlab.get(x, timeout=DEADLINE)[0] == 4
    # The tail's task and, pinned through it, every freed link.
    assert lineage_stats().kept_tasks == 5
    validate_session()  # entries kept only for lineage (their values freed) are valid

    del x
    wait_for(
        lambda: lineage_stats().kept_tasks == 0 and table_size() == 0,
        DEADLINE,
        message="lineage and ownership entries released after the last ref went",
    )
    assert lineage_stats().kept_bytes == 0


def test_lineage_beyond_the_byte_budget_cannot_rebuild(fresh_runtime: Any) -> None:
    # A budget of about two task specs, so the oldest links of the chain are dropped.
    start(fresh_runtime, lineage_budget=600)
    assert lineage_stats().budget == 600
    x = fill.remote(0)
    for _ in range(4):
        x = inc.remote(x)
    memlab.wait([x], timeout=DEADLINE)
    tail = made_on("node-1", lambda x=x: inc.remote(x))
    del x
    assert lineage_stats().kept_bytes <= 600

    lose_node_1()
    with pytest.raises(ObjectReconstructionFailedError, match="lineage_budget") as info:
        memlab.get(tail, timeout=DEADLINE)
    assert "evicted" in str(info.value)
