"""The worker pool grows while tasks block in nested ``get`` (so what they wait for can run)
and shrinks back to ``num_workers`` once they are done: extra workers that idle for a short
linger retire, unless they still own objects (their owner's exit would lose them)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import memlab
from memlab.testing import gated, worker_pool
from memlab.testing.leaks import session_processes, wait_for

DEADLINE = 30.0

inner = memlab.remote(gated)


@memlab.remote
def outer(i: int, gate: str) -> int:
    return memlab.get(inner.remote(i, gate)) * 10


@memlab.remote
def outer_owning(i: int, gate: str) -> list[memlab.ObjectRef]:
    memlab.get(inner.remote(i, gate))
    return [memlab.put(i * 10)]  # this worker owns the object; the driver borrows it


@memlab.remote
def ident(x: int) -> int:
    return x


def worker_processes(rt: Any) -> int:
    return sum(
        "memlab.runtime.worker.main" in " ".join(p.cmdline())
        for p in session_processes(session_dir=rt.session_dir)
    )


def grow(rt: Any, fn: Any, gate: Path, n: int = 4) -> list[Any]:
    refs = [fn.remote(i, str(gate)) for i in range(n)]
    wait_for(lambda: worker_pool()["size"] > 2, DEADLINE, message="the pool grew for blocked gets")
    gate.touch()
    return refs


def test_pool_grown_by_nested_gets_shrinks_back_to_num_workers(
    fresh_runtime: Callable[..., Any],
    tmp_path: Path,
) -> None:
    rt = fresh_runtime(num_workers=2)
    refs = grow(rt, outer, tmp_path / "gate")
    assert memlab.get(refs, timeout=DEADLINE) == [0, 10, 20, 30]
    peak = worker_pool()["size"]
    wait_for(
        lambda: worker_pool()["size"] == 2 and worker_processes(rt) == 2,
        DEADLINE,
        message="the pool back at num_workers=2, in processes too",
    )
    assert worker_pool()["retired"] >= peak - 2
    # The remaining workers serve, and retirement is no crash: nothing failed or retried.
    assert memlab.get([ident.remote(i) for i in range(8)], timeout=DEADLINE) == list(range(8))
    assert not [t for t in memlab.state.tasks() if t["state"] in ("failed", "retried")]


def test_a_worker_that_owns_objects_does_not_retire_until_they_are_freed(
    fresh_runtime: Callable[..., Any],
    tmp_path: Path,
) -> None:
    rt = fresh_runtime(num_workers=2)
    refs = grow(rt, outer_owning, tmp_path / "gate")
    held = [inner_ref for (inner_ref,) in memlab.get(refs, timeout=DEADLINE)]
    # Every extra worker was asked (the pool reached its target, or an owner refused)...
    wait_for(
        lambda: worker_pool()["size"] == 2 or worker_pool()["refused"] > 0,
        DEADLINE,
        message="extra workers asked to retire",
    )
    # ...and no owner left: every object is still there.
    assert memlab.get(held, timeout=DEADLINE) == [0, 10, 20, 30]
    del held, refs
    wait_for(
        lambda: worker_pool()["size"] == 2 and worker_processes(rt) == 2,
        DEADLINE,
        message="the pool back at num_workers=2 once the owned objects were freed",
    )
