"""Worker death: the crash table (where a task dies x how its worker dies) and driver-side kills.

Every row kills real worker processes (SIGKILL, ``os._exit(3)``, a segfault) and checks, for
three retry settings, that the owner retries or raises ``WorkerCrashedError`` naming the exit
and its likely cause, that work in flight beside the crash is not lost, that the pool is
refilled, and that the dashboard's state shows the deaths and the retries.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import memlab
import memlab.api
from memlab.testing import (
    CRASH_MODES,
    CrashOnPickle,
    CrashOnUnpickle,
    crash,
    crash_once,
    expected_exit,
    first_attempt,
    kill_worker,
    wait_for,
    wait_for_file,
    worker_pids,
)

NUM_WORKERS = 2
BIG = 50_000  # float64 elements: 400 kB, above the inline threshold, so it lives in the store
DEADLINE = 20.0

# ------------------------------------------------------------------------------ remote functions


@memlab.remote
def crash_in_body(how: str, marker: str | None, x: int) -> int:
    crash_once(marker, how)
    return 2 * x


@memlab.remote
def total(values: np.ndarray) -> float:
    return float(values.sum())


@memlab.remote
def crash_in_result(how: str, marker: str | None, n: int) -> CrashOnPickle:
    return CrashOnPickle(np.arange(n, dtype=np.float64), how, marker)


@memlab.remote
def crash_at_gate(how: str, marker: str | None, gate: str) -> int:
    wait_for_file(gate)
    crash_once(marker, how)
    return 42


@memlab.remote
def nested_crash(how: str, marker: str | None, retries: int, name: str) -> int:
    # This worker owns the inner task, so it is the one that retries it or gives up.
    inner = crash_in_body.options(max_retries=retries, name=name).remote(how, marker, 21)
    return memlab.get(inner)


@memlab.remote
def block_until_killed(marker: str, pid_file: str, gate: str) -> int:
    if first_attempt(marker):
        tmp = pid_file + ".tmp"
        Path(tmp).write_text(str(os.getpid()))
        os.replace(tmp, pid_file)  # the driver never reads a half-written pid
        wait_for_file(gate)  # never opened: the driver kills this attempt
    return 42


@memlab.remote
def bystander(i: int) -> np.ndarray:
    return np.full(BIG if i % 2 else 10, i, dtype=np.int64)  # every other one via the store


@memlab.remote
def die(how: str) -> None:
    crash(how)


# --------------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Death:
    """How a worker killed by ``how`` must be reported."""

    exitcode: int | None
    signal: int | None
    says: str  # text the WorkerCrashedError message must contain


SIGKILL = Death(None, 9, "killed by SIGKILL")
EXIT_3 = Death(3, None, "exited with code 3")
SIGSEGV = Death(None, 11, "killed by SIGSEGV")

STAGES = ("execution", "argument_fetch", "result_store", "driver_get", "nested")

# One row per (stage, how); every row runs the three scenarios below on one fresh runtime.
CRASH_TABLE = [
    pytest.param(stage, how, death, id=f"{stage}-{how}")
    for stage in STAGES
    for how, death in (("sigkill", SIGKILL), ("exit", EXIT_3), ("segfault", SIGSEGV))
]


@dataclass(frozen=True)
class Scenario:
    """A retry setting and what the owner must do under it."""

    name: str
    max_retries: int
    only_first_attempt: bool  # crash on the first attempt only (a marker file), or on all
    succeeds: bool  # get returns the right value; otherwise WorkerCrashedError
    attempts: int  # attempts made, each of which but a successful last one kills a worker

    @property
    def crashes(self) -> int:
        return self.attempts - 1 if self.succeeds else self.attempts


SCENARIOS = (
    Scenario("no_retry", max_retries=0, only_first_attempt=False, succeeds=False, attempts=1),
    Scenario("retry_once", max_retries=2, only_first_attempt=True, succeeds=True, attempts=2),
    Scenario("retry_always", max_retries=1, only_first_attempt=False, succeeds=False, attempts=2),
)


def test_crash_table_rows_match_the_fault_modes() -> None:
    assert tuple(how for how in CRASH_MODES) == ("sigkill", "exit", "segfault")
    for how, death in (("sigkill", SIGKILL), ("exit", EXIT_3), ("segfault", SIGSEGV)):
        assert expected_exit(how) == (death.exitcode, death.signal)
    with pytest.raises(ValueError, match="unknown crash mode 'melt'"):
        crash("melt")


# -------------------------------------------------------------------------------- helpers


def _last_seq() -> int | None:
    return max((e["seq"] for e in memlab.state.events()), default=None)


def _blocked_in_get(thread: threading.Thread) -> bool:
    """The thread is inside memlab.get() and waiting (its innermost frame is in threading)."""
    frame = sys._current_frames().get(thread.ident or -1)
    if frame is None or frame.f_code.co_filename != threading.__file__:
        return False
    while frame is not None:
        if frame.f_code.co_name == "get" and frame.f_code.co_filename == memlab.api.__file__:
            return True
        frame = frame.f_back
    return False


def _get_while_gate_opens(ref: memlab.ObjectRef, gate: Path) -> Any:
    """``memlab.get(ref)`` on this thread; another opens ``gate`` once this one is blocked."""
    main = threading.current_thread()
    failures: list[BaseException] = []

    def open_gate() -> None:
        try:
            wait_for(lambda: _blocked_in_get(main), DEADLINE, message="driver blocked in get")
        except BaseException as exc:
            failures.append(exc)
        gate.touch()  # open it anyway, so the task cannot hang the test

    opener = threading.Thread(target=open_gate, name="gate-opener")
    opener.start()
    try:
        return memlab.get(ref, timeout=DEADLINE)
    finally:
        opener.join()
        assert not failures, failures


def _launch(
    stage: str, how: str, marker: str | None, retries: int, name: str, tmp: Path, keep: list[Any]
) -> tuple[Callable[[], Any], Callable[[Any], bool]]:
    """Submit the task that crashes at ``stage``; return (how to get it, a check of its value)."""
    if stage == "execution":
        ref = crash_in_body.options(max_retries=retries, name=name).remote(how, marker, 21)
        return lambda: memlab.get(ref, timeout=DEADLINE), lambda v: v == 42
    if stage == "argument_fetch":
        # The argument is a large value in shared memory whose unpickling kills the worker.
        arg = memlab.put(CrashOnUnpickle(np.arange(BIG, dtype=np.float64), how, marker))
        keep.append(arg)
        ref = total.options(max_retries=retries, name=name).remote(arg)
        want = float(np.arange(BIG, dtype=np.float64).sum())
        return lambda: memlab.get(ref, timeout=DEADLINE), lambda v: v == want
    if stage == "result_store":
        ref = crash_in_result.options(max_retries=retries, name=name).remote(how, marker, BIG)
        want_arr = np.arange(BIG, dtype=np.float64)
        return lambda: memlab.get(ref, timeout=DEADLINE), lambda v: np.array_equal(v, want_arr)
    if stage == "driver_get":
        gate = tmp / f"{name}.gate"
        ref = crash_at_gate.options(max_retries=retries, name=name).remote(how, marker, str(gate))
        return lambda: _get_while_gate_opens(ref, gate), lambda v: v == 42
    assert stage == "nested"
    ref = nested_crash.options(max_retries=0, name=f"{name}-outer").remote(
        how, marker, retries, name
    )
    return lambda: memlab.get(ref, timeout=DEADLINE), lambda v: v == 42


def _task(name: str) -> dict[str, Any] | None:
    return next((t for t in memlab.state.tasks() if t["name"] == name), None)


def _alive_workers() -> list[dict[str, Any]]:
    return [w for w in memlab.state.workers() if w["state"] == "alive"]


# -------------------------------------------------------------------------------- crash table


@pytest.mark.parametrize(("stage", "how", "death"), CRASH_TABLE)
def test_worker_death(
    fresh_runtime: Any, tmp_path: Path, stage: str, how: str, death: Death
) -> None:
    fresh_runtime(num_workers=NUM_WORKERS)
    dead_pids: set[int] = set()
    for sc in SCENARIOS:
        name = f"{stage}-{how}-{sc.name}"
        since = _last_seq()
        marker = str(tmp_path / f"{name}.marker") if sc.only_first_attempt else None
        others = [bystander.remote(i) for i in range(6)]
        keep: list[Any] = []
        fetch, is_right = _launch(stage, how, marker, sc.max_retries, name, tmp_path, keep)

        if sc.succeeds:
            assert is_right(fetch()), name
        else:
            with pytest.raises(memlab.WorkerCrashedError) as info:
                fetch()
            err = info.value
            assert err.attempts == sc.attempts, name
            assert (err.exitcode, err.signal) == (death.exitcode, death.signal), name
            assert death.says in str(err) and "likely cause" in str(err), str(err)
            assert "max_retries" in str(err), str(err)  # the message names the fix
            assert repr(name) in str(err), str(err)

        # Work submitted beside the crash is not lost, whichever worker it was pushed to.
        for i, value in enumerate(memlab.get(others, timeout=DEADLINE)):
            assert value.shape == (BIG if i % 2 else 10,) and (value == i).all(), (name, i)
        del others, keep

        # The state model shows each death with its cause, and each retry of the task.
        def folded(sc: Scenario = sc, name: str = name, since: int | None = since) -> bool:
            task = _task(name)
            if task is None or task["state"] != ("finished" if sc.succeeds else "failed"):
                return False
            events = memlab.state.events(since)
            died = [e for e in events if e["kind"] == "worker.died"]
            retried = [
                e for e in events if e["kind"] == "task.retried" and e["task_id"] == task["task_id"]
            ]
            return len(died) >= sc.crashes and len(retried) >= sc.attempts - 1

        wait_for(folded, DEADLINE, message=f"{name}: deaths and retries folded into state")
        task = _task(name)
        assert task is not None and task["attempt"] == sc.attempts - 1, task
        events = memlab.state.events(since)
        died = [e for e in events if e["kind"] == "worker.died"]
        assert len(died) == sc.crashes, died
        for e in died:
            assert (e["exitcode"], e["signal"]) == (death.exitcode, death.signal), e
            assert "likely cause" in e["cause"], e
        retried = [
            e for e in events if e["kind"] == "task.retried" and e["task_id"] == task["task_id"]
        ]
        assert [e["attempt"] for e in retried] == list(range(1, sc.attempts)), retried

        dead = {w["pid"]: w for w in memlab.state.workers() if w["state"] == "dead"}
        for e in died:
            assert (dead[e["pid"]]["exitcode"], dead[e["pid"]]["signal"]) == (
                death.exitcode,
                death.signal,
            ), dead[e["pid"]]
        dead_pids |= {e["pid"] for e in died}

    # The pool is refilled: a replacement for every dead worker, and none of the dead lingers.
    def refilled() -> bool:
        alive = _alive_workers()
        pids = set(worker_pids())
        return (
            len(alive) >= NUM_WORKERS and {w["pid"] for w in alive} <= pids and not dead_pids & pids
        )

    wait_for(refilled, DEADLINE, message=f"pool back to {NUM_WORKERS} workers")
    if stage != "nested":  # a worker blocked in get adds one to the pool while it waits
        assert len(_alive_workers()) == NUM_WORKERS, _alive_workers()


# ------------------------------------------------------------------------- kills from outside


def test_kill_worker_from_driver_retries_the_task(fresh_runtime: Any, tmp_path: Path) -> None:
    fresh_runtime(num_workers=NUM_WORKERS)
    pid_file = tmp_path / "pid"
    ref = block_until_killed.options(max_retries=1).remote(
        str(tmp_path / "marker"), str(pid_file), str(tmp_path / "never")
    )
    others = [bystander.remote(i) for i in range(4)]
    wait_for_file(pid_file, DEADLINE)
    pid = int(pid_file.read_text())
    assert pid in worker_pids()
    kill_worker(pid)
    assert memlab.get(ref, timeout=DEADLINE) == 42
    assert [int(v[0]) for v in memlab.get(others, timeout=DEADLINE)] == [0, 1, 2, 3]

    def death_recorded() -> bool:
        return any(w["pid"] == pid and w["state"] == "dead" for w in memlab.state.workers())

    wait_for(death_recorded, DEADLINE, message="the killed worker recorded as dead")
    record = next(w for w in memlab.state.workers() if w["pid"] == pid)
    assert (record["exitcode"], record["signal"]) == (None, 9)
    assert "SIGKILL" in record["cause"]
    wait_for(
        lambda: len(_alive_workers()) == NUM_WORKERS and pid not in worker_pids(),
        DEADLINE,
        message="a replacement worker started",
    )


def test_kill_worker_refuses_a_pid_that_is_not_a_worker(fresh_runtime: Any) -> None:
    fresh_runtime(num_workers=NUM_WORKERS)
    with pytest.raises(ValueError, match="not a live memlab worker"):
        kill_worker(os.getpid())
    assert len(worker_pids()) == NUM_WORKERS


def test_every_worker_dies_at_once(fresh_runtime: Any) -> None:
    """All workers crash together; the owner still gets an answer for each task, then work runs."""
    fresh_runtime(num_workers=NUM_WORKERS)
    victims = [die.options(max_retries=0).remote("exit") for _ in range(NUM_WORKERS * 2)]
    for ref in victims:
        with pytest.raises(memlab.WorkerCrashedError, match="exited with code 3"):
            memlab.get(ref, timeout=DEADLINE)
    others = [bystander.remote(i) for i in range(6)]
    assert [int(v[0]) for v in memlab.get(others, timeout=DEADLINE)] == list(range(6))
    wait_for(
        lambda: len(_alive_workers()) == NUM_WORKERS, DEADLINE, message="pool back to its size"
    )
