"""The process tree under a node manager: what a task starts goes when its worker or node goes.

A task may start processes of its own: a child, a detached child (``setsid``,
``start_new_session=True``), an ``os.fork()`` copy of the worker. None of them is a worker, so
nothing in memlab knows their pids, and a list of pids would miss every one. The kernel knows
them instead:

* the node manager is a **child subreaper** (``prctl(PR_SET_CHILD_SUBREAPER)``): a process
  orphaned anywhere below it is re-parented to it, not to init, so its descendants are always
  the whole tree, detached processes included;
* each worker leads its own **process group**: when a worker exits, what it started in its group
  (children, fork copies) is killed with it; detached processes leave the group, but stay under
  the subreaper and go when the node does;
* every process of a session carries ``MEMLAB_SESSION_DIR`` in its environment (inherited from
  its worker), which is how the driver's last sweep and the leak checks
  (:mod:`memlab.testing.leaks`) find any that escaped both, e.g. when a node manager was killed.

::

    node manager (subreaper) ── worker (group leader) ── task's child, fork copy (same group)
              └── orphans re-parented here: detached children of any worker
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import time
from collections.abc import Collection

import psutil

log = logging.getLogger("memlab.node")

_PR_SET_CHILD_SUBREAPER = 36
SESSION_ENV = "MEMLAB_SESSION_DIR"


def become_subreaper() -> bool:
    """Make this process the reaper of every orphan below it; False where the kernel cannot."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0:
            return True
        log.warning(
            "prctl(PR_SET_CHILD_SUBREAPER) failed (errno %d): processes that tasks "
            "detach may outlive this node",
            ctypes.get_errno(),
        )
    except (OSError, AttributeError):
        log.warning("no prctl here: processes that tasks detach may outlive this node")
    return False


def kill_group(leader: int) -> None:
    """SIGKILL what is left of the process group that ``leader`` led (its worker exited)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(leader, signal.SIGKILL)


def kill_descendants(timeout: float = 5.0) -> None:
    """SIGKILL every process below this one and reap them, until none is left or ``timeout``.

    Repeated because a process may fork while its siblings are being killed.
    """
    me = psutil.Process()
    deadline = time.monotonic() + timeout
    while True:
        try:
            below = me.children(recursive=True)
        except psutil.Error:
            return
        live = [p for p in below if _alive(p)]
        for p in live:
            with contextlib.suppress(psutil.Error):
                p.kill()
        reap_children(())
        if not live or time.monotonic() > deadline:
            return
        time.sleep(0.01)  # let the kernel deliver the kills before looking again


def reap_children(keep: Collection[int], limit: int = 64) -> None:
    """Collect the exit status of finished children, except ``keep`` (workers: their own
    waiters read their exit status to report how they died).

    Peeks with ``waitid(WNOWAIT)`` (one syscall; listing children costs milliseconds), so it
    can run on every housekeeping tick. A finished worker at the head of the kernel's list ends
    this round; its waiter collects it within moments.
    """
    for _ in range(limit):
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None or info.si_pid in keep:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(info.si_pid, os.WNOHANG)


def labelled_processes(session_dir: str, node: str | None = None) -> list[psutil.Process]:
    """Live processes (of this user) whose environment names ``session_dir`` as their session
    (and ``node`` as their node, if given)."""
    found = []
    me = os.getpid()
    for p in psutil.process_iter():
        if p.pid == me:
            continue
        with contextlib.suppress(psutil.Error):
            env = p.environ()
            if (
                env.get(SESSION_ENV) == session_dir
                and _alive(p)
                and (node is None or env.get("MEMLAB_NODE") == node)
            ):
                found.append(p)
    return found


def _alive(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
