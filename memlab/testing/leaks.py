"""Leak checks: after a session ends, none of its processes, sockets or shared memory remain.

Used by the test suite after every runtime it starts, and usable by anyone embedding memlab.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import psutil

SHM_DIR = "/dev/shm"


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, interval: float = 0.01,
             message: str = "condition") -> None:
    """Return once ``condition()`` is true; raise AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} did not hold within {timeout} s")
        time.sleep(interval)


def session_processes(root_pid: int | None = None) -> list[psutil.Process]:
    """The live memlab processes descending from ``root_pid`` (default: this process)."""
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


def session_files(session_dir: str, plasma_directory: str | None = None) -> list[str]:
    """Files a session left: its directory and its arenas (in /dev/shm, or in the session's
    ``plasma_directory``)."""
    name = os.path.basename(session_dir)
    left = [session_dir] if os.path.exists(session_dir) else []
    base = plasma_directory or SHM_DIR
    if os.path.isdir(base):
        left += [os.path.join(base, f) for f in os.listdir(base) if f.startswith(name)]
    return left


def assert_session_gone(session_dir: str, pids: list[int], timeout: float = 10.0,
                        plasma_directory: str | None = None) -> None:
    """Every pid has exited and no file of the session remains, within ``timeout`` seconds."""

    def gone() -> bool:
        alive = [p for p in pids if psutil.pid_exists(p) and
                 psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        return not alive and not session_files(session_dir, plasma_directory)

    try:
        wait_for(gone, timeout, 0.05, "session cleanup")
    except AssertionError:
        alive = [p for p in pids if psutil.pid_exists(p)]
        raise AssertionError(
            f"session not cleaned up: live pids {alive}, "
            f"files {session_files(session_dir, plasma_directory)}"
        ) from None
