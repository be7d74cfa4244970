"""Every handoff of a ref that Ray's reference counting handles (DESIGN §3, invariant 1).

Each test passes refs the way Ray programs do (returned, nested, captured, stored, passed
through actors, borrowed by borrowers), drops the driver's own variables while the others
still hold them, checks that every value is still there, and then that once the last holder
lets go, every reference table and every store of the session is empty within a second.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import memlab
import memlab.testing
from memlab.testing import wait_for_file
from memlab.testing.invariants import validate_session, wait_session_empty

DEADLINE = 30.0
BIG = 200_000  # bytes: above the inline threshold, so the value lives in a node's store


def _empty() -> None:
    gc.collect()
    wait_session_empty(timeout=2.0)


@pytest.fixture
def one_worker(fresh_runtime: Callable[..., Any]) -> Any:
    """One worker: a task's nested tasks run on the worker that owns them (leased to itself)."""
    return fresh_runtime(num_workers=1)


# -- refs returned from tasks -------------------------------------------------------------------


@memlab.remote
def chain(ref: list[memlab.ObjectRef], depth: int) -> Any:
    memlab.get(ref[0])
    if depth == 0:
        return "tail"
    return chain.remote(ref, depth - 1)  # a ref this worker owns


@pytest.mark.parametrize("workers", [1, 2])
def test_refs_owned_by_the_returning_worker_survive_any_depth(
    fresh_runtime: Callable[..., Any], workers: int
) -> None:
    fresh_runtime(num_workers=workers)
    for _ in range(3):
        arr = memlab.put(np.zeros(1000, dtype=np.uint8))
        tail: Any = chain.remote([arr], 12)
        del arr
        for _ in range(12):
            tail = memlab.get(tail, timeout=DEADLINE)
            assert isinstance(tail, memlab.ObjectRef)
        assert memlab.get(tail, timeout=DEADLINE) == "tail"
        del tail
    _empty()


@memlab.remote
def make_big() -> np.ndarray:
    return np.full(BIG, 7, dtype=np.uint8)


@memlab.remote
def return_an_id() -> memlab.ObjectRef:
    return make_big.remote()


@memlab.remote
def nested_chain(ref: list[memlab.ObjectRef], depth: int) -> Any:
    inner = memlab.get(ref[0])
    if depth == 0:
        return inner
    return inner, nested_chain.remote(ref, depth - 1)


def test_refs_nested_in_returned_tuples_down_a_chain(one_worker: Any) -> None:
    for _ in range(3):
        outer: Any = nested_chain.remote([return_an_id.remote()], 5)
        inners = []
        for _ in range(5):
            inner, outer = memlab.get(outer, timeout=DEADLINE)
            inners.append(inner)
        inners.append(memlab.get(outer, timeout=DEADLINE))
        del outer
        for inner in inners:
            assert int(memlab.get(inner, timeout=DEADLINE)[0]) == 7
        del inner, inners
    _empty()


class Box:
    def __init__(self, ref: memlab.ObjectRef) -> None:
        self.ref = ref


@memlab.remote
def nest_fresh(kind: str) -> Any:
    ref = make_big.remote()
    return {"list": [ref], "tuple": (1, ref), "dict": {"k": ref}, "set": {ref}, "object": Box(ref)}[
        kind
    ]


@pytest.mark.parametrize("kind", ["list", "tuple", "dict", "set", "object"])
def test_refs_in_returned_containers(one_worker: Any, kind: str) -> None:
    value = memlab.get(nest_fresh.remote(kind), timeout=DEADLINE)
    ref = {
        "list": lambda v: v[0],
        "tuple": lambda v: v[1],
        "dict": lambda v: v["k"],
        "set": lambda v: next(iter(v)),
        "object": lambda v: v.ref,
    }[kind](value)
    del value
    gc.collect()
    assert int(memlab.get(ref, timeout=DEADLINE)[0]) == 7
    del ref
    _empty()


@memlab.remote
def echo(refs: list[memlab.ObjectRef]) -> memlab.ObjectRef:
    return refs[0]  # a ref the caller owns, borrowed here, returned to its owner


@memlab.remote
def forward(refs: list[memlab.ObjectRef]) -> memlab.ObjectRef:
    return memlab.get(echo.remote(refs))  # a borrowed ref, through a borrower of a borrower


def test_refs_returned_to_their_owner_and_through_borrowers(
    fresh_runtime: Callable[..., Any],
) -> None:
    fresh_runtime(num_workers=2)
    x = memlab.put(np.full(BIG, 3, dtype=np.uint8))
    back = memlab.get(echo.remote([x]), timeout=DEADLINE)
    through = memlab.get(forward.remote([x]), timeout=DEADLINE)
    del x
    gc.collect()
    assert int(memlab.get(back)[0]) == 3 and int(memlab.get(through)[0]) == 3
    assert back == through
    del back, through
    _empty()


# -- refs captured in closures ------------------------------------------------------------------


def test_ref_captured_in_a_remote_functions_closure(one_worker: Any, tmp_path: Any) -> None:
    gate = str(tmp_path / "gate")
    captured = memlab.put(np.full(BIG, 5, dtype=np.uint8))

    @memlab.remote
    def reads_captured() -> int:
        wait_for_file(gate, DEADLINE)
        return int(memlab.get(captured)[0])  # noqa: F821 (deleted below)

    ref = reads_captured.remote()
    del reads_captured, captured  # only the task spec holds the captured ref now
    gc.collect()
    open(gate, "w").close()
    assert memlab.get(ref, timeout=DEADLINE) == 5
    del ref
    _empty()


def test_ref_captured_in_an_actor_methods_closure(one_worker: Any, tmp_path: Any) -> None:
    gate = str(tmp_path / "gate")
    captured = memlab.put(np.full(BIG, 6, dtype=np.uint8))

    @memlab.remote
    class Reader:
        def read(self) -> int:
            wait_for_file(gate, DEADLINE)
            return int(memlab.get(captured)[0])  # noqa: F821 (deleted below)

    actor = Reader.remote()
    ref = actor.read.remote()
    del Reader, captured
    gc.collect()
    open(gate, "w").close()
    assert memlab.get(ref, timeout=DEADLINE) == 6
    assert memlab.get(actor.read.remote(), timeout=DEADLINE) == 6
    del ref, actor
    _empty()


def test_captured_ref_is_freed_once_the_function_and_its_tasks_are_gone(one_worker: Any) -> None:
    captured = memlab.put(np.full(BIG, 1, dtype=np.uint8))

    @memlab.remote
    def reads() -> int:
        return int(memlab.get(captured)[0])  # noqa: F821 (deleted below)

    assert memlab.get([reads.remote() for _ in range(3)], timeout=DEADLINE) == [1, 1, 1]
    del reads, captured  # the worker must not keep it alive through its function cache
    _empty()


# -- refs stored in values and in actor state ---------------------------------------------------


def test_refs_stored_inside_a_put_value(one_worker: Any) -> None:
    inner = memlab.put(np.full(BIG, 2, dtype=np.uint8))
    outer = memlab.put({"inner": [inner]})
    del inner
    gc.collect()

    @memlab.remote
    def read(box: dict[str, Any]) -> int:
        return int(memlab.get(box["inner"][0])[0])

    assert memlab.get(read.remote(outer), timeout=DEADLINE) == 2
    value = memlab.get(outer)
    del outer
    gc.collect()
    assert int(memlab.get(value["inner"][0])[0]) == 2
    del value
    _empty()


@memlab.remote
class Keeper:
    """Holds refs in its state and hands them back."""

    def __init__(self) -> None:
        self.kept: list[memlab.ObjectRef] = []

    def keep(self, refs: list[memlab.ObjectRef]) -> int:
        self.kept.extend(refs)
        return len(self.kept)

    def make(self) -> int:
        self.kept.append(make_big.remote())  # owned by the actor
        return len(self.kept)

    def give(self, i: int) -> memlab.ObjectRef:
        return self.kept[i]

    def pop(self) -> memlab.ObjectRef:
        return self.kept.pop()

    def read(self, i: int) -> int:
        return int(memlab.get(self.kept[i])[0])


def test_refs_in_actor_state_and_passed_through_actors_and_back(
    fresh_runtime: Callable[..., Any],
) -> None:
    fresh_runtime(num_workers=2)
    keeper, other = Keeper.remote(), Keeper.remote()
    x = memlab.put(np.full(BIG, 4, dtype=np.uint8))
    assert memlab.get(keeper.keep.remote([x]), timeout=DEADLINE) == 1
    del x
    gc.collect()
    assert memlab.get(keeper.read.remote(0), timeout=DEADLINE) == 4
    assert memlab.get(keeper.make.remote(), timeout=DEADLINE) == 2
    # actor -> driver -> another actor -> driver
    made = memlab.get(keeper.give.remote(1), timeout=DEADLINE)
    assert memlab.get(other.keep.remote([made]), timeout=DEADLINE) == 1
    del made
    popped = memlab.get(keeper.pop.remote(), timeout=DEADLINE)  # the keeper lets go of it
    back = memlab.get(keeper.pop.remote(), timeout=DEADLINE)  # the driver's own object
    gc.collect()
    assert int(memlab.get(popped)[0]) == 7 and int(memlab.get(back)[0]) == 4
    assert memlab.get(other.read.remote(0), timeout=DEADLINE) == 7
    del popped, back
    validate_session()
    del keeper, other
    _empty()


# -- borrowers that die, and the owner's last ref dropped while tasks borrow ---------------------

_held: list[Any] = []


@memlab.remote
def hold_and_die(refs: list[memlab.ObjectRef]) -> None:
    _held.extend(refs)
    os._exit(1)


def test_a_borrower_that_dies_holding_a_ref_releases_it(one_worker: Any) -> None:
    x = memlab.put(np.full(BIG, 9, dtype=np.uint8))
    with pytest.raises(memlab.WorkerCrashedError):
        memlab.get(hold_and_die.options(max_retries=0).remote([x]), timeout=DEADLINE)
    assert int(memlab.get(x)[0]) == 9
    del x
    _empty()


@memlab.remote
def read_after_gate(refs: list[memlab.ObjectRef], gate: str) -> int:
    wait_for_file(gate, DEADLINE)
    return int(memlab.get(refs[0])[0])


@memlab.remote
def gate_then(gate: str) -> int:
    wait_for_file(gate, DEADLINE)
    return 0


@pytest.mark.parametrize("stage", ["queued", "running"])
def test_owner_drops_its_last_ref_while_a_borrowing_task_waits(
    one_worker: Any, tmp_path: Any, stage: str
) -> None:
    gate = str(tmp_path / "gate")
    blocker = gate_then.remote(gate) if stage == "queued" else None  # occupies the one worker
    x = memlab.put(np.full(BIG, 8, dtype=np.uint8))
    ref = read_after_gate.remote([x], gate)
    del x
    gc.collect()
    open(gate, "w").close()
    assert memlab.get(ref, timeout=DEADLINE) == 8
    if blocker is not None:
        assert memlab.get(blocker, timeout=DEADLINE) == 0
    del ref, blocker
    _empty()


def test_owner_drops_its_last_ref_while_a_borrowing_task_is_retried(
    one_worker: Any, tmp_path: Any
) -> None:
    marker = str(tmp_path / "crashed")

    @memlab.remote(max_retries=2)
    def crash_first_then_read(refs: list[memlab.ObjectRef]) -> int:
        from memlab.testing import crash_once

        value = int(memlab.get(refs[0])[0])
        crash_once(marker)
        return value

    x = memlab.put(np.full(BIG, 11, dtype=np.uint8))
    ref = crash_first_then_read.remote([x])
    del x
    gc.collect()
    assert memlab.get(ref, timeout=DEADLINE) == 11
    assert os.path.exists(marker)
    del ref
    _empty()


@memlab.remote
def corrupt_own_table() -> str:
    """Break an invariant in this worker's table, as a counting bug would."""
    from memlab.runtime.context import current_core

    core = current_core()
    ref = memlab.put(1)
    with core.lock:
        core.table.get(ref.binary).tasks = -1
    _held.append(ref)
    return str(core.proc)


def test_validate_runs_in_every_workers_core(one_worker: Any) -> None:
    """Workers check their invariants too (periodically, and when asked): a broken count in a
    worker fails the session check, naming the worker."""
    x = memlab.put(np.ones(10))
    assert memlab.get(echo.remote([x]), timeout=DEADLINE) == x
    sizes = validate_session()
    assert any(proc.startswith("w-") for proc in sizes), sizes
    del x
    _empty()
    worker = memlab.get(corrupt_own_table.remote(), timeout=DEADLINE)
    with pytest.raises(AssertionError, match=worker):
        validate_session()
    memlab.testing.kill_worker(worker)  # its broken table goes with it
