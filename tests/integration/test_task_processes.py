"""Processes that tasks start (a child, a detached child, an ``os.fork()`` copy of the worker)
go with their worker and their session, however it ends, and the leak checks see them.

The node manager is the kernel's child subreaper of everything below it and each worker leads
a process group (``memlab.runtime.process_tree``): no list of pids is kept anywhere.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import psutil

import memlab
from memlab.testing import kill_node, kill_worker
from memlab.testing.leaks import session_processes, start_stray_processes, wait_for

from .test_cleanup import (
    CLEANUP_TIMEOUT,
    MARKER,
    _force_cleanup,
    _read_marked_line,
    _start_driver,
)

strays = memlab.remote(start_stray_processes)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _kill(pids: dict[str, int]) -> None:
    """After a failed check: no stray outlives the test (they are plain ``sleep``s)."""
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _all_gone(pids: dict[str, int]) -> None:
    wait_for(
        lambda: not [k for k, p in pids.items() if _alive(p)],
        CLEANUP_TIMEOUT,
        message=f"every process the task started ({pids}) gone",
    )


def test_shutdown_ends_what_tasks_started_and_leak_checks_see_it(
    fresh_runtime: Callable[..., Any],
) -> None:
    rt = fresh_runtime(num_workers=1)
    pids = memlab.get(strays.remote(), timeout=30)
    try:
        assert all(_alive(p) for p in pids.values()), pids
        seen = {p.pid for p in session_processes(session_dir=rt.session_dir)}
        assert set(pids.values()) <= seen, (pids, seen)  # the leak check finds every one
        memlab.shutdown()
        _all_gone(pids)
    finally:
        _kill(pids)


def test_a_dead_worker_takes_its_children_and_the_node_the_detached_ones(
    fresh_runtime: Callable[..., Any],
) -> None:
    fresh_runtime(num_workers=1)
    pids = memlab.get(strays.remote(), timeout=30)
    try:
        kill_worker()  # the worker that ran it: the only one
        wait_for(
            lambda: not _alive(pids["child"]) and not _alive(pids["fork"]),
            CLEANUP_TIMEOUT,
            message="the dead worker's child and fork copy gone",
        )
        assert _alive(pids["detached"])  # it left the worker's group: the node ends it
        assert memlab.get(strays.remote(1), timeout=30)  # a new worker serves
        memlab.shutdown()
        _all_gone({"detached": pids["detached"]})
    finally:
        _kill(pids)


def test_driver_sigkill_ends_what_tasks_started(private_tmp: str) -> None:
    with _start_driver("strays", private_tmp) as proc:
        info = _read_marked_line(proc.stdout, MARKER, 60)
        pids = info["strays"]
        try:
            assert set(pids) == {"detached", "child", "fork"}
            assert all(_alive(p) for p in pids.values()), pids
            proc.kill()
            _all_gone(pids)
            proc.wait(10)
        finally:
            _kill(pids)
            _force_cleanup(info)


@memlab.remote
def strays_once_on_node_1(claim: str) -> dict[str, int] | None:
    """The first of these to run on node-1 starts the strays there; the others do nothing."""
    time.sleep(0.05)  # a batch outlasts the lease grants, so it spans both nodes
    if os.environ["MEMLAB_NODE"] != "node-1":
        return None
    try:
        os.close(os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return None
    return start_stray_processes()


def test_a_killed_node_takes_what_its_tasks_started(
    fresh_runtime: Callable[..., Any],
    tmp_path: Any,
) -> None:
    fresh_runtime(num_nodes=2, num_workers=4)
    claim = str(tmp_path / "claim")
    pids: dict[str, int] = {}
    try:
        for _ in range(10):
            found = [
                r
                for r in memlab.get(
                    [strays_once_on_node_1.remote(claim) for _ in range(8)], timeout=30
                )
                if r
            ]
            if found:
                pids = found[0]
                break
        assert pids, "no batch ran on node-1"
        kill_node("node-1")
        _all_gone(pids)  # the runtime still runs: the node's death alone ended them
        assert memlab.get(strays_once_on_node_1.remote(claim), timeout=30) is None
    finally:
        _kill(pids)
