"""Node affinity (``memlab.testing.placed_on``): tasks and actors run on the node named, every
time, and a task bound to a node that is not alive fails with a sentence naming it.

Placement goes through the owner's lease request to that node's manager, which grants only its
own workers; these tests check the outcome where the work ran (``MEMLAB_NODE`` in the worker),
never by luck of the round robin.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

import memlab
from memlab.exceptions import ActorDiedError, TaskUnschedulableError
from memlab.testing import kill_node, nodes_alive, placed_on

DEADLINE = 20.0
NODES = ("node-0", "node-1", "node-2")


@memlab.remote
def node_of(i: int) -> tuple[int, str]:
    return i, os.environ["MEMLAB_NODE"]


@memlab.remote
def nested_on(node: str) -> str:
    with placed_on(node):
        return memlab.get(node_of.remote(0), timeout=DEADLINE)[1]


@memlab.remote
class Where:
    def node(self) -> str:
        return os.environ["MEMLAB_NODE"]


@pytest.fixture(scope="module")
def three_nodes() -> Any:
    from tests.conftest import STORE, stop_and_check

    if memlab.is_initialized():
        memlab.shutdown()
    runtime = memlab.init(num_nodes=3, num_workers=6, object_store_memory=STORE)
    yield runtime
    stop_and_check(runtime)


def test_every_task_in_the_block_runs_on_the_node_named(three_nodes: Any) -> None:
    for node in ("node-1", "node-2", "node-0", "node-1"):
        with placed_on(node):
            refs = [node_of.remote(i) for i in range(12)]
        assert memlab.get(refs, timeout=DEADLINE) == [(i, node) for i in range(12)]


def test_calls_outside_the_block_carry_no_affinity(three_nodes: Any) -> None:
    with placed_on("node-2"):
        inside = node_of.remote(0)
    outside = [node_of.remote(i) for i in range(24)]
    assert memlab.get(inside, timeout=DEADLINE)[1] == "node-2"
    # Unplaced work spreads over the nodes as before (the round robin of lease requests).
    assert len({node for _, node in memlab.get(outside, timeout=DEADLINE)}) > 1


def test_placed_and_unplaced_tasks_interleave(three_nodes: Any) -> None:
    refs = []
    for i in range(10):
        with placed_on("node-2"):
            refs.append((node_of.remote(i), "node-2"))
        refs.append((node_of.remote(i), None))
    for ref, want in refs:
        node = memlab.get(ref, timeout=DEADLINE)[1]
        assert want is None or node == want


def test_a_task_submitted_by_a_task_is_placed_too(three_nodes: Any) -> None:
    with placed_on("node-1"):
        ref = nested_on.remote("node-2")
    assert memlab.get(ref, timeout=DEADLINE) == "node-2"


def test_an_actor_is_created_on_the_node_named(three_nodes: Any) -> None:
    with placed_on("node-2"):
        actor = Where.remote()
    assert memlab.get([actor.node.remote() for _ in range(3)], timeout=DEADLINE) == ["node-2"] * 3
    memlab.kill(actor)


def test_unknown_node_fails_the_task_clearly(three_nodes: Any) -> None:
    with placed_on("node-9"):
        ref = node_of.remote(0)
    with pytest.raises(TaskUnschedulableError, match=r"node-9.*not a node of this session") as info:
        memlab.get(ref, timeout=DEADLINE)
    assert info.value.node_id == "node-9"


def test_unknown_node_kills_the_actor_clearly(three_nodes: Any) -> None:
    with placed_on("node-9"):
        actor = Where.remote()
    with pytest.raises(ActorDiedError, match="node-9"):
        memlab.get(actor.node.remote(), timeout=DEADLINE)


def test_dead_node_fails_hard_placement_and_soft_runs_elsewhere(three_nodes: Any) -> None:
    # Last in the module: it kills node-2.
    kill_node("node-2")
    assert "node-2" not in nodes_alive()
    with placed_on("node-2"):
        hard = node_of.remote(0)
    with placed_on("node-2", soft=True):
        soft = [node_of.remote(i) for i in range(4)]
    with pytest.raises(TaskUnschedulableError, match=r"node-2.*died"):
        memlab.get(hard, timeout=DEADLINE)
    assert {node for _, node in memlab.get(soft, timeout=DEADLINE)} <= {"node-0", "node-1"}
    with placed_on("node-2"):
        actor = Where.remote()
    with pytest.raises(ActorDiedError, match=r"node-2.*died"):
        memlab.get(actor.node.remote(), timeout=DEADLINE)
