"""Owner death: objects fate-share with the worker that owns them (DESIGN §3, invariant 4).

A task's worker owns what it creates (``memlab.put`` inside the task, nested ``.remote()``
calls). When that worker dies, every borrower's ``get`` raises ``OwnerDiedError`` naming the
owner and the object, the copies are removed from every node's store, and the tasks it owned
are cancelled. If the dead owner was running a task for its own owner, that owner retries the
task, which creates everything again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import memlab
import memlab.state
from memlab.exceptions import OwnerDiedError
from memlab.ids import task_of
from memlab.testing import first_attempt, kill_owner, store_stats, wait_for, wait_for_file

STORE = 256 << 20
BIG = 50_000  # float64 elements: 400 kB, above the inline threshold, so it lives in a store
NODES = ("node-0", "node-1")
DEADLINE = 20.0
MiB = 1 << 20


@memlab.remote
def hang(started: str, gate: str, stopped: str) -> int:
    Path(started).touch()
    try:
        wait_for_file(gate, timeout=60)  # never opened: only a cancel ends it
    finally:
        Path(stopped).touch()
    return 0


@memlab.remote
def make_owned(n: int, started: str, gate: str, stopped: str) -> tuple[list[Any], Any]:
    """Put ``n`` large values and start a task; this worker owns all of it."""
    refs = [memlab.put(np.full(BIG, i, dtype=np.float64)) for i in range(n)]
    pending = hang.remote(started, gate, stopped)
    # Busy until the task runs: once idle, this worker could be leased to run it itself, and
    # killing the owner would then kill the task too, instead of cancelling it elsewhere.
    wait_for_file(started, timeout=DEADLINE)
    return refs, pending


@memlab.remote
def borrow_then_get(boxed: list[Any], ready: str, gate: str) -> str:
    """Hold a borrowed ref, wait for ``gate``, then get it: returns what happened."""
    Path(ready).touch()
    wait_for_file(gate)
    try:
        memlab.get(boxed[0])
    except OwnerDiedError as exc:
        return f"OwnerDiedError {exc.owner} {exc.object_id}"
    return "no error"


@memlab.remote
def child(marker: str, owner_file: str, gate: str) -> int:
    if first_attempt(marker):
        wait_for_file(gate, timeout=60)  # the first attempt hangs until its owner dies
    return 21


@memlab.remote
def parent(marker: str, owner_file: str, gate: str) -> int:
    inner = child.remote(marker, owner_file, gate)
    if not os.path.exists(owner_file):
        tmp = owner_file + ".tmp"
        Path(tmp).write_text(inner.owner)  # this worker's id: it owns ``inner``
        os.replace(tmp, owner_file)
    return 2 * memlab.get(inner)


@memlab.remote
def big_result(marker: str) -> np.ndarray:
    value = np.full(25 * MiB // 8, 1.0)
    Path(marker).touch()
    return value  # written into the store after this: it waits there while the store is full


@memlab.remote
def own_big_result(marker: str, owner_file: str) -> None:
    inner = big_result.remote(marker)
    tmp = owner_file + ".tmp"
    Path(tmp).write_text(inner.owner)
    os.replace(tmp, owner_file)
    memlab.get(inner)  # never returns: this worker is killed while the result waits


def died_workers() -> set[str]:
    return {e["worker_id"] for e in memlab.state.events() if e["kind"] == "worker.died"}


def start(fresh_runtime: Any) -> Any:
    return fresh_runtime(num_nodes=2, num_workers=4, object_store_memory=STORE)


def test_borrowers_see_owner_died_and_stores_drop_the_copies(
    fresh_runtime: Any, tmp_path: Path
) -> None:
    start(fresh_runtime)
    started, stopped = str(tmp_path / "started"), str(tmp_path / "stopped")
    gate, ready, gate2 = str(tmp_path / "gate"), str(tmp_path / "ready"), str(tmp_path / "gate2")
    refs, pending = memlab.get(make_owned.remote(3, started, gate, stopped), timeout=DEADLINE)
    owner = refs[0].owner
    assert owner.startswith("w-") and all(r.owner == owner for r in refs)
    assert pending.owner == owner
    for i, ref in enumerate(refs):  # the driver reads them: a copy may land on node-0 too
        value = memlab.get(ref, timeout=DEADLINE)
        assert value[0] == i
        del value  # a zero-copy view would pin the copy in the store
    wait_for_file(started, DEADLINE)  # the task the owner submitted is running elsewhere
    borrower = borrow_then_get.remote([refs[1]], ready, gate2)
    wait_for_file(ready, DEADLINE)  # another worker now borrows refs[1]
    wait_for(
        lambda: sum(store_stats(n)["num_objects"] for n in NODES) >= 3,
        DEADLINE,
        message="the owned values are in the stores",
    )

    assert kill_owner(owner) == owner
    wait_for(
        lambda: owner in died_workers(),
        DEADLINE,
        message=f"the runtime learned that {owner} died",
    )

    for ref in refs:
        with pytest.raises(OwnerDiedError) as info:
            memlab.get(ref, timeout=DEADLINE)
        err = info.value
        assert err.owner == owner and err.object_id == ref.hex()
        assert owner in str(err) and ref.hex() in str(err)
    with pytest.raises(OwnerDiedError):
        memlab.get(pending, timeout=DEADLINE)

    # The other borrower's get fails the same way.
    Path(gate2).touch()
    assert memlab.get(borrower, timeout=DEADLINE) == f"OwnerDiedError {owner} {refs[1].hex()}"

    # Fate-sharing: every copy is removed from every store, while the driver still holds refs.
    wait_for(
        lambda: all(
            store_stats(n)["num_objects"] == 0 and store_stats(n)["used"] == 0 for n in NODES
        ),
        DEADLINE,
        message="the dead owner's objects removed from both stores",
    )
    # The task the dead worker owned was cancelled: its worker stopped running it.
    wait_for_file(stopped, DEADLINE)
    assert not Path(gate).exists()


def test_nested_owner_killed_mid_task_is_retried_by_its_owner(
    fresh_runtime: Any, tmp_path: Path
) -> None:
    start(fresh_runtime)
    marker, owner_file = str(tmp_path / "marker"), str(tmp_path / "owner")
    gate = str(tmp_path / "gate")
    out = parent.remote(marker, owner_file, gate)
    wait_for_file(owner_file, DEADLINE)
    wait_for_file(marker, DEADLINE)  # the first child runs and hangs
    owner = Path(owner_file).read_text()
    assert owner.startswith("w-")

    kill_owner(owner)  # the worker running ``parent``, which owns the first child
    assert memlab.get(out, timeout=DEADLINE) == 42  # the driver retried parent
    assert not Path(gate).exists()

    parent_task = task_of(out.binary).hex()
    events = memlab.state.events()
    retried = [e for e in events if e["kind"] == "task.retried" and e["task_id"] == parent_task]
    assert len(retried) == 1 and owner in retried[0]["reason"]
    assert owner in died_workers()

    def settled() -> bool:
        recs = [t for t in memlab.state.tasks() if t["task_id"] == parent_task]
        return len(recs) == 1 and recs[0]["state"] == "finished" and recs[0]["attempt"] == 1

    wait_for(settled, DEADLINE, message="the parent's record finished on its second attempt")


def test_result_written_after_its_owner_died_is_refused_not_leaked(
    fresh_runtime: Any, tmp_path: Path
) -> None:
    # A large result waits for room in a full store; if its owner dies meanwhile, nobody could
    # ever free it, so the store must refuse it (before: it was written, and stayed for good).
    fresh_runtime(num_workers=3, object_store_memory=64 * MiB)
    held = [memlab.put(np.full(25 * MiB // 8, float(i))) for i in range(2)]
    views = memlab.get(held)  # 50 of 64 MiB pinned by the driver
    marker, owner_file = str(tmp_path / "returning"), str(tmp_path / "owner")
    own_big_result.remote(marker, owner_file)
    wait_for_file(owner_file, DEADLINE)
    wait_for_file(marker, DEADLINE)  # the result now waits for room
    owner = Path(owner_file).read_text()
    kill_owner(owner)
    wait_for(lambda: owner in died_workers(), DEADLINE, message=f"{owner} known dead")

    del views, held  # room for the waiting result, whose owner is dead
    wait_for(
        lambda: store_stats("node-0")["num_objects"] == 0 and store_stats("node-0")["used"] == 0,
        DEADLINE,
        message="the store empty: the dead owner's result refused, the driver's puts freed",
    )
