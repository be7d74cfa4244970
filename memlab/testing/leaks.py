"""Leak checks: after a session ends, none of its processes, sockets or shared memory remain,
including processes that its tasks started.

Used by the test suite after every runtime it starts, and usable by anyone embedding memlab.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable

import psutil

from memlab.runtime.process_tree import labelled_processes

SHM_DIR = "/dev/shm"


def wait_for(
    condition: Callable[[], bool],
    timeout: float = 10.0,
    interval: float = 0.01,
    message: str = "condition",
) -> None:
    """Return once ``condition()`` is true; raise AssertionError after ``timeout`` seconds
    (ValueError if it is negative, NaN or not a number)."""
    from memlab.api import check_timeout

    limit = check_timeout(timeout)
    deadline = float("inf") if limit is None else time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} did not hold within {timeout} s")
        time.sleep(interval)


def session_processes(
    root_pid: int | None = None, session_dir: str | None = None
) -> list[psutil.Process]:
    """The live memlab processes descending from ``root_pid`` (default: this process).

    With ``session_dir``: every live process of that session instead, wherever it is in the
    process tree, which includes what tasks started (children, detached children, fork copies:
    they inherit the session's mark in their environment, see ``memlab.runtime.process_tree``).
    """
    if session_dir is not None:
        marked = labelled_processes(session_dir)
        seen = {p.pid for p in marked}
        return marked + [
            p
            for p in session_processes(root_pid)
            if p.pid not in seen and session_dir in " ".join(_cmdline(p))
        ]
    try:
        root = psutil.Process(root_pid or os.getpid())
        children = root.children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for child in children:
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "memlab" in " ".join(child.cmdline()):
                out.append(child)
        except psutil.NoSuchProcess:
            pass
    return out


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def start_stray_processes(seconds: float = 300.0) -> dict[str, int]:
    """Run inside a task: start a child, a detached child (its own session) and an
    ``os.fork()`` copy of the worker, each sleeping ``seconds``; returns their pids by kind.

    For tests that the processes a task starts go with the session.
    """
    detached = subprocess.Popen(["sleep", str(seconds)], start_new_session=True)
    child = subprocess.Popen(["sleep", str(seconds + 1)])
    pid = os.fork()
    if pid == 0:  # the copy of the worker: sleep without touching the runtime, then vanish
        time.sleep(seconds)
        os._exit(0)
    return {"detached": detached.pid, "child": child.pid, "fork": pid}


def session_files(session_dir: str, plasma_directory: str | None = None) -> list[str]:
    """Files a session left: its directory and its arenas (in /dev/shm, or in the session's
    ``plasma_directory``)."""
    name = os.path.basename(session_dir)
    left = [session_dir] if os.path.exists(session_dir) else []
    base = plasma_directory or SHM_DIR
    if os.path.isdir(base):
        left += [os.path.join(base, f) for f in os.listdir(base) if f.startswith(name)]
    return left


def assert_session_gone(
    session_dir: str, pids: list[int], timeout: float = 10.0, plasma_directory: str | None = None
) -> None:
    """Every pid has exited and no file of the session remains, within ``timeout`` seconds."""

    def alive() -> list[int]:
        listed = [p for p in pids if psutil.pid_exists(p) and _not_zombie(p)]
        # Also what no list names: processes that tasks started carry the session's mark.
        return listed + [p.pid for p in labelled_processes(session_dir) if p.pid not in listed]

    try:
        wait_for(
            lambda: not alive() and not session_files(session_dir, plasma_directory),
            timeout,
            0.05,
            "session cleanup",
        )
    except AssertionError:
        raise AssertionError(
            f"session not cleaned up: live pids {alive()}, "
            f"files {session_files(session_dir, plasma_directory)}"
        ) from None


def _not_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
