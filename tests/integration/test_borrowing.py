"""The borrower protocol across processes: a worker that keeps a ref keeps the object alive."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

import memlab
from memlab.testing import store_stats, wait_for

_kept: list[Any] = []  # lives in the worker process between tasks


@memlab.remote
def keep(refs: list[memlab.ObjectRef]) -> int:
    _kept.extend(refs)
    return len(_kept)


@memlab.remote
def read_kept() -> float:
    return float(sum(memlab.get(r).sum() for r in _kept))


@memlab.remote
def drop_kept() -> int:
    _kept.clear()
    return 0


def holders(ref_hex: str) -> dict[str, Any] | None:
    for o in memlab.state.objects():
        if o["object_id"] == ref_hex:
            return o["holders"]
    return None


def test_worker_borrow_outlives_the_drivers_ref(fresh_runtime: Callable[..., Any]) -> None:
    fresh_runtime(num_workers=1)  # one worker: every task sees the same _kept
    x = memlab.put(np.ones(500_000))  # 4 MB in shared memory
    x_hex = x.hex()
    assert memlab.get(keep.remote([x])) == 1
    del x  # the driver's last local ref: the worker's borrow must keep the object
    wait_for(lambda: (holders(x_hex) or {}).get("local") == 0, 5, message="local ref dropped")
    h = holders(x_hex)
    assert h is not None and h["borrowers"] and h["borrowers"][0].startswith("w-")
    assert memlab.get(read_kept.remote()) == 500_000.0
    memlab.get(drop_kept.remote())
    wait_for(lambda: holders(x_hex) is None, 5, message="object freed after the borrow ended")
    wait_for(lambda: store_stats()["used"] == 0, 2, message="store bytes freed")


def test_nested_refs_chain_through_two_workers(fresh_runtime: Callable[..., Any]) -> None:
    fresh_runtime(num_workers=2)

    @memlab.remote
    def inner(refs: list[memlab.ObjectRef]) -> float:
        return float(memlab.get(refs[0]).sum())

    @memlab.remote
    def outer(refs: list[memlab.ObjectRef]) -> memlab.ObjectRef:
        return inner.remote(refs)  # a ref owned by this worker, holding a driver-owned ref

    x = memlab.put(np.arange(100_000, dtype=np.float64))
    expected = float(np.arange(100_000).sum())
    result_ref = memlab.get(outer.remote([x]))
    del x
    assert memlab.get(result_ref) == expected


@memlab.remote
class Mailbox:
    """Hands a ref from the driver to a running task (take blocks until put)."""

    def __init__(self) -> None:
        import threading

        self.ready = threading.Event()
        self.box: list[memlab.ObjectRef] = []

    def put(self, refs: list[memlab.ObjectRef]) -> None:
        self.box = refs
        self.ready.set()

    def take(self) -> list[memlab.ObjectRef]:
        self.ready.wait(30)
        return self.box


@memlab.remote
def waits_for_later_task(box: Any) -> Any:
    refs = memlab.get(box.take.remote())
    return memlab.get(refs[0])


@memlab.remote
def quick() -> str:
    return "ran"


def test_task_queued_behind_a_blocked_task_runs_elsewhere(
    fresh_runtime: Callable[..., Any],
) -> None:
    """One worker: the first task blocks waiting for a task submitted after it, which was
    queued behind it on the same worker. The queued task is handed back and runs on the worker
    the node starts for the blocked one (otherwise: a deadlock)."""
    fresh_runtime(num_workers=1)
    box = Mailbox.options(max_concurrency=2).remote()
    first = waits_for_later_task.remote(box)
    later = quick.remote()  # pipelined behind `first` on the only worker
    box.put.remote([later])
    assert memlab.get(first, timeout=30) == "ran"
