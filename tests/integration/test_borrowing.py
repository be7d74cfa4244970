"""The borrower protocol across processes: a worker that keeps a ref keeps the object alive."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

import memlab
from memlab.testing.leaks import wait_for

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


def node_used(rt: Any) -> int:
    reply, _ = rt.core.conn_to("node-0").request({"t": "stats"})
    return int(reply["used"])


def holders(ref_hex: str) -> dict[str, Any] | None:
    for o in memlab.state.objects():
        if o["object_id"] == ref_hex:
            return o["holders"]
    return None


def test_worker_borrow_outlives_the_drivers_ref(fresh_runtime: Callable[..., Any]) -> None:
    rt = fresh_runtime(num_workers=1)  # one worker: every task sees the same _kept
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
    wait_for(lambda: node_used(rt) == 0, 2, message="store bytes freed")


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
