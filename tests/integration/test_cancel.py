"""memlab.cancel: queued tasks never run, running ones are interrupted or their worker killed.

Each test checks what ``get`` raises, what the task did (through files it writes), what the
state model shows, and that other work still completes afterwards.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import memlab
from memlab.testing import crash, wait_for, wait_for_file, worker_pids

NUM_WORKERS = 2
DEADLINE = 20.0


@memlab.remote
def add(a: int, b: int) -> int:
    return a + b


@memlab.remote
def hold(gate: str, started: str) -> int:
    """Occupy a worker until ``gate`` exists."""
    Path(started).write_text(str(os.getpid()))
    wait_for_file(gate, timeout=DEADLINE)
    return os.getpid()


@memlab.remote
def touch(path: str, *deps: Any) -> str:
    Path(path).touch()
    return path


@memlab.remote
def sleeper(log: str, interrupted: str) -> str:
    with open(log, "a") as f:  # one line per attempt
        f.write(f"{os.getpid()}\n")
    try:
        time.sleep(60)
    except KeyboardInterrupt:
        Path(interrupted).touch()
        raise
    return "slept"


@memlab.remote
def crash_every_time(log: str) -> None:
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\n")
    crash("sigkill")


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _record(ref: memlab.ObjectRef) -> dict[str, Any] | None:
    return next((t for t in memlab.state.tasks() if ref.hex() in t["returns"]), None)


def _events(ref: memlab.ObjectRef, kind: str) -> list[dict[str, Any]]:
    record = _record(ref)
    assert record is not None
    return [
        e
        for e in memlab.state.events()
        if e["kind"] == kind and e.get("task_id") == record["task_id"]
    ]


def _wait_cancelled_in_state(ref: memlab.ObjectRef) -> None:
    wait_for(
        lambda: (_record(ref) or {}).get("state") == "cancelled",
        DEADLINE,
        message="the task shown as cancelled in memlab.state.tasks()",
    )


def _other_work_completes() -> None:
    refs = [add.remote(i, 100) for i in range(8)]
    assert memlab.get(refs, timeout=DEADLINE) == [i + 100 for i in range(8)]


def _pool_is_full() -> None:
    def full() -> bool:
        alive = [w for w in memlab.state.workers() if w["state"] == "alive"]
        return len(alive) == NUM_WORKERS and {w["pid"] for w in alive} == set(worker_pids())

    wait_for(full, DEADLINE, message=f"{NUM_WORKERS} live workers")


def test_cancel_queued_task_never_runs(fresh_runtime: Any, tmp_path: Path) -> None:
    fresh_runtime(num_workers=NUM_WORKERS)
    gate = tmp_path / "gate"
    # Two holders run and two wait behind them on the workers, so nothing else can be pushed.
    holders = [hold.remote(str(gate), str(tmp_path / f"started-{i}")) for i in range(4)]
    wait_for(
        lambda: len(list(tmp_path.glob("started-*"))) >= 2, DEADLINE, message="both workers busy"
    )
    queued = touch.remote(str(tmp_path / "queued-ran"))
    waiting = touch.remote(str(tmp_path / "waiting-ran"), holders[0])  # its argument is pending
    sibling = touch.remote(str(tmp_path / "sibling-ran"), holders[0])  # same argument, kept

    memlab.cancel(queued)
    memlab.cancel(waiting)
    # Both are answered at once, while every worker is still busy: they were never pushed.
    for ref in (queued, waiting):
        with pytest.raises(memlab.TaskCancelledError, match="was cancelled"):
            memlab.get(ref, timeout=DEADLINE)
    assert not gate.exists()

    gate.touch()
    pids = memlab.get(holders, timeout=DEADLINE)
    assert len(set(pids)) == NUM_WORKERS
    assert not (tmp_path / "queued-ran").exists()
    assert not (tmp_path / "waiting-ran").exists()
    # Cancelling one dependent task leaves the others waiting on the same argument intact.
    assert memlab.get(sibling, timeout=DEADLINE) == str(tmp_path / "sibling-ran")
    for ref in (queued, waiting):
        _wait_cancelled_in_state(ref)
        assert _events(ref, "task.started") == []
    _other_work_completes()


def test_cancel_running_task_interrupts_it(fresh_runtime: Any, tmp_path: Path) -> None:
    fresh_runtime(num_workers=NUM_WORKERS)
    log, interrupted = tmp_path / "log", tmp_path / "interrupted"
    ref = sleeper.remote(str(log), str(interrupted))
    wait_for(lambda: bool(_lines(log)), DEADLINE, message="the task started")
    pid = int(_lines(log)[0])

    memlab.cancel(ref)
    with pytest.raises(memlab.TaskCancelledError):
        memlab.get(ref, timeout=DEADLINE)
    assert interrupted.exists()  # the task saw KeyboardInterrupt in time.sleep
    assert pid in worker_pids()  # and its worker lives on
    _wait_cancelled_in_state(ref)
    assert _events(ref, "task.retried") == []
    assert not [e for e in memlab.state.events() if e["kind"] == "worker.died"]
    assert _lines(log) == [str(pid)]
    _other_work_completes()
    _pool_is_full()


def test_force_cancel_kills_the_worker_and_does_not_retry(
    fresh_runtime: Any, tmp_path: Path
) -> None:
    fresh_runtime(num_workers=NUM_WORKERS)
    log, interrupted = tmp_path / "log", tmp_path / "interrupted"
    ref = sleeper.options(max_retries=3).remote(str(log), str(interrupted))
    wait_for(lambda: bool(_lines(log)), DEADLINE, message="the task started")
    pid = int(_lines(log)[0])

    memlab.cancel(ref, force=True)
    with pytest.raises(memlab.TaskCancelledError):
        memlab.get(ref, timeout=DEADLINE)
    wait_for(lambda: pid not in worker_pids(), DEADLINE, message="the worker killed")
    assert not interrupted.exists()  # killed, not interrupted
    _other_work_completes()
    _pool_is_full()
    assert _lines(log) == [str(pid)]  # not retried, although max_retries allowed it
    _wait_cancelled_in_state(ref)
    assert _events(ref, "task.retried") == []
    dead = [w for w in memlab.state.workers() if w["pid"] == pid]
    assert dead and dead[0]["state"] == "dead" and dead[0]["signal"] == 9, dead


def test_cancel_stops_unlimited_retries(fresh_runtime: Any, tmp_path: Path) -> None:
    fresh_runtime(num_workers=NUM_WORKERS)
    log = tmp_path / "log"
    ref = crash_every_time.options(max_retries=-1).remote(str(log))
    wait_for(lambda: len(_lines(log)) >= 3, DEADLINE, message="three attempts crashed")

    memlab.cancel(ref)
    with pytest.raises(memlab.TaskCancelledError):
        memlab.get(ref, timeout=DEADLINE)
    attempts = len(_lines(log))
    _other_work_completes()
    _pool_is_full()
    assert len(_lines(log)) == attempts  # no attempt after the cancel
    _wait_cancelled_in_state(ref)
    assert len(_events(ref, "task.retried")) >= 2


def test_cancel_finished_task_is_a_no_op(fresh_runtime: Any) -> None:
    fresh_runtime(num_workers=NUM_WORKERS)
    ref = add.remote(1, 2)
    assert memlab.get(ref, timeout=DEADLINE) == 3
    pids = worker_pids()
    memlab.cancel(ref)
    memlab.cancel(ref, force=True)
    assert memlab.get(ref, timeout=DEADLINE) == 3
    _other_work_completes()
    assert worker_pids() == pids  # force=True killed nothing
    wait_for(
        lambda: (_record(ref) or {}).get("state") == "finished",
        DEADLINE,
        message="the task shown as finished",
    )
    assert _events(ref, "task.cancelled") == []


def test_cancel_rejects_what_is_not_a_ref(fresh_runtime: Any) -> None:
    fresh_runtime(num_workers=NUM_WORKERS)
    with pytest.raises(TypeError, match="takes an ObjectRef"):
        memlab.cancel("not a ref")  # type: ignore[arg-type]


def test_get_of_a_list_fails_fast_on_the_first_error(
    fresh_runtime: Callable[..., Any], tmp_path: Any
) -> None:
    """``get([slow, failing])`` raises the failure while ``slow`` is still running."""
    fresh_runtime(num_workers=2)
    gate = tmp_path / "gate"

    @memlab.remote
    def slow() -> int:
        from memlab.testing import wait_for_file

        wait_for_file(gate, 30)
        return 1

    @memlab.remote
    class Failing:  # on a worker of its own, so it never queues behind ``slow``
        def fail(self) -> int:
            raise ValueError("boom")

    refs = [slow.remote(), Failing.remote().fail.remote()]
    with pytest.raises(ValueError, match="boom"):
        memlab.get(refs, timeout=20)
    assert not gate.exists()  # slow was still gated when get raised
    gate.touch()
    assert memlab.get(refs[0], timeout=20) == 1
