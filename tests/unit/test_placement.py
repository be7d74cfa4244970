"""Node affinity decisions (``runtime/coreworker/placement.py``) without processes: held tasks
go only to leases on their node, lease requests go only to their node, and a node that is not
alive fails hard placements and frees soft ones."""

from __future__ import annotations

import time
from typing import Any

import pytest

from memlab.exceptions import TaskUnschedulableError
from memlab.runtime.coreworker.placement import (
    AFFINITY,
    NodeAffinity,
    PlacedTasks,
    actor_node,
    unschedulable,
)
from memlab.runtime.coreworker.task_spec import TaskSpec
from memlab.testing import placed_on


class FakeLease:
    def __init__(self, worker: str, node: str) -> None:
        self.worker = worker
        self.node = node
        self.inflight: dict[bytes, Any] = {}
        self.revoked = False
        self.blocked = False
        self.stealing = False


def spec(i: int, node: str, soft: bool = False) -> TaskSpec:
    s = TaskSpec(bytes([i]) * 4, f"t{i}", b"", b"", [], [], [bytes([i]) * 5], 3, False, None)
    s.node_affinity = NodeAffinity(node, soft)
    return s


def pump(placed: PlacedTasks, leases: list[FakeLease], alive: list[str], **kw: Any) -> Any:
    taken: list[tuple[str, str]] = []

    def take(lease: FakeLease, s: TaskSpec) -> None:
        lease.inflight[s.task_id] = s
        s.pushed_at = time.monotonic()
        taken.append((lease.node, s.name))

    step = placed.pump(
        leases, alive, kw.get("requested", {}), kw.get("max_leases", 4), time.monotonic(), take
    )
    return step, taken


def test_held_tasks_go_only_to_leases_on_their_node() -> None:
    placed = PlacedTasks()
    for i in range(3):
        placed.hold(spec(i, "node-1"))
    leases = [FakeLease("w0", "node-0"), FakeLease("w1", "node-1")]
    step, taken = pump(placed, leases, ["node-0", "node-1"])
    assert taken == [("node-1", "t0")]  # the node-0 lease stays idle; one task per idle lease
    assert not leases[0].inflight
    # The two still held ask for leases on node-1, and nowhere else.
    assert step.requests == ["node-1", "node-1"]
    assert not step.unschedulable and not step.unpinned


def test_requests_awaiting_a_grant_are_not_asked_again() -> None:
    placed = PlacedTasks()
    for i in range(3):
        placed.hold(spec(i, "node-2"))
    step, taken = pump(placed, [], ["node-0", "node-2"], requested={"node-2": 2})
    assert taken == []
    assert step.requests == ["node-2"]
    step, _ = pump(placed, [], ["node-0", "node-2"], requested={"node-2": 3})
    assert step.requests == []


def test_lease_requests_are_capped_by_the_owners_lease_budget() -> None:
    placed = PlacedTasks()
    for i in range(10):
        placed.hold(spec(i, "node-1"))
    step, _ = pump(placed, [], ["node-0", "node-1"], max_leases=3)
    assert step.requests == ["node-1"] * 3


def test_node_not_alive_fails_hard_and_frees_soft_placements() -> None:
    placed = PlacedTasks()
    hard, soft = spec(1, "node-3"), spec(2, "node-3", soft=True)
    cancelled = spec(3, "node-3")
    cancelled.cancelled = True
    for s in (hard, soft, cancelled):
        placed.hold(s)
    step, taken = pump(placed, [FakeLease("w", "node-0")], ["node-0"])
    assert taken == [] and step.requests == []
    assert step.unschedulable == [(hard, "node-3")]
    assert step.unpinned == [soft]
    assert not placed.held  # nothing is left waiting for a node that is gone


def test_cancelled_tasks_are_dropped_unrun() -> None:
    placed = PlacedTasks()
    s = spec(1, "node-1")
    s.cancelled = True
    placed.hold(s)
    step, taken = pump(placed, [FakeLease("w", "node-1")], ["node-1"])
    assert taken == [] and step.requests == [] and not placed.held


@pytest.mark.parametrize(
    ("node", "dead", "reason"),
    [("node-4", {"node-4": {}}, "died"), ("node-9", {}, "is not a node of this session")],
)
def test_unschedulable_error_names_the_node_the_reason_and_the_fix(
    node: str, dead: dict[str, Any], reason: str
) -> None:
    import pickle

    error = unschedulable(spec(1, node), node, dead)
    assert isinstance(error, TaskUnschedulableError)
    assert node in str(error) and reason in str(error) and "soft" in str(error)
    again = pickle.loads(pickle.dumps(error))
    assert (again.node_id, again.reason, str(again)) == (node, error.reason, str(error))


def test_actor_node_choice() -> None:
    alive = ["node-0", "node-1"]
    assert actor_node(None, alive, 3) == "node-1"  # round robin
    assert actor_node(NodeAffinity("node-0"), alive, 3) == "node-0"
    assert actor_node(NodeAffinity("node-5"), alive, 3) is None  # hard, not alive
    assert actor_node(NodeAffinity("node-5", soft=True), alive, 2) == "node-0"


def test_placed_on_sets_the_affinity_for_its_block_only() -> None:
    assert AFFINITY.get() is None
    with placed_on("node-1"):
        assert AFFINITY.get() == NodeAffinity("node-1")
        with placed_on("node-2", soft=True):
            assert AFFINITY.get() == NodeAffinity("node-2", soft=True)
        assert AFFINITY.get() == NodeAffinity("node-1")
    assert AFFINITY.get() is None
    with pytest.raises(RuntimeError), placed_on("node-1"):
        raise RuntimeError
    assert AFFINITY.get() is None
