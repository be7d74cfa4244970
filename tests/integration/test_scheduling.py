"""Pipelining never holds ready work behind a running task while a worker is free.

An owner may push a second task to a busy leased worker (pipelining hides the round trip of
tiny tasks), but a quick task queued behind a long one waits for all of it. Here the long task
is held by a gate the test controls, so "behind it" means "never done until the gate opens":
the quick tasks must all finish while it is still closed. No timing luck is involved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import memlab
from memlab.testing import wait_for_file

DEADLINE = 20.0  # well inside the gate's own 60 s: a quick task stuck behind it times out


@memlab.remote
def long_task(started: str, gate: str) -> str:
    Path(started).touch()
    wait_for_file(gate, 60)
    return "long"


@memlab.remote
def quick(i: int) -> int:
    return 2 * i


@memlab.remote
def nested_owner(started: str, gate: str) -> list[int]:
    """A worker as the owner: it submits the long task and the quick ones itself."""
    long_ref = long_task.remote(started, gate)
    wait_for_file(started, 60)
    values = memlab.get([quick.remote(i) for i in range(10)], timeout=DEADLINE)
    Path(gate).touch()
    assert memlab.get(long_ref, timeout=DEADLINE) == "long"
    return values


def _quick_beside_long(tmp_path: Path, wait_started: bool) -> None:
    started, gate = tmp_path / "started", tmp_path / "gate"
    long_ref = long_task.remote(str(started), str(gate))
    if wait_started:
        wait_for_file(started, DEADLINE)
    try:
        for _ in range(3):  # several rounds: later submits must not queue behind it either
            values = memlab.get([quick.remote(i) for i in range(10)], timeout=DEADLINE)
            assert values == [2 * i for i in range(10)]
        assert not gate.exists()
    finally:
        gate.touch()
    assert memlab.get(long_ref, timeout=DEADLINE) == "long"


def test_quick_tasks_submitted_right_after_a_long_one_use_the_free_worker(
    fresh_runtime: Any, tmp_path: Path
) -> None:
    fresh_runtime(num_workers=2)
    memlab.get([quick.remote(i) for i in range(4)], timeout=DEADLINE)  # both workers warm
    _quick_beside_long(tmp_path, wait_started=False)


def test_quick_tasks_submitted_while_a_long_one_runs_use_the_free_worker(
    fresh_runtime: Any, tmp_path: Path
) -> None:
    fresh_runtime(num_workers=2)
    _quick_beside_long(tmp_path, wait_started=True)


def test_a_worker_owner_does_not_queue_quick_tasks_behind_its_long_one(
    fresh_runtime: Any, tmp_path: Path
) -> None:
    fresh_runtime(num_workers=3)  # one for the owner task, one for the long task, one free
    started, gate = tmp_path / "started", tmp_path / "gate"
    try:
        values = memlab.get(nested_owner.remote(str(started), str(gate)), timeout=3 * DEADLINE)
    finally:
        gate.touch()
    assert values == [2 * i for i in range(10)]
