"""The node's worker processes: start them, watch each one end, kill them.

Owns the ``Popen`` of every worker this node started and one reaper thread per worker. Which
worker serves whom is not its business (that is :mod:`memlab.core.worker_pool`); it only knows
processes::

    spawn ──► Popen ──► registered (the pool learns its id) ──► secret on stdin ──► hello
                                                         reaper thread: wait() ──► on_exit

The secret goes on the worker's stdin only after ``registered`` ran, so a worker's hello can
never arrive before the pool knows the worker. Stdin stays open: it is the worker's lifeline
(it exits when this process dies). A worker leads its own process group; when it exits, the
group goes too, so what its tasks started does not outlive it (see
:mod:`memlab.runtime.process_tree`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping

from memlab.runtime import process_tree

__all__ = ["WorkerProcesses"]


class WorkerProcesses:
    """The worker processes of one node.

    Args:
        env: The environment every worker starts with (the session's coordinates).
        secret: The session secret, handed to each worker on its stdin.
        on_exit: Called from the worker's reaper thread with its id and ``Popen.returncode``
            once it has exited (its process group killed); the worker is still listed then.
    """

    def __init__(
        self, env: Mapping[str, str], secret: bytes, on_exit: Callable[[str, int], None]
    ) -> None:
        self._env = dict(env)
        self._secret_line = secret.hex().encode() + b"\n"
        self._on_exit = on_exit
        self._lock = threading.Lock()
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._starting = 0  # Popen under way: its pid is not listed yet

    def spawn(self, registered: Callable[[str], None]) -> str:
        """Start one worker; ``registered(worker_id)`` runs before it can say hello.

        Raises:
            OSError: the process could not be started.
        """
        worker_id = f"w-{os.urandom(4).hex()}"
        env = dict(self._env, MEMLAB_PROC=worker_id)
        with self._lock:
            self._starting += 1  # until it is listed, the zombie reaper must skip it
        try:
            popen = subprocess.Popen(
                [sys.executable, "-m", "memlab.runtime.worker.main"],
                stdin=subprocess.PIPE,
                env=env,
                close_fds=True,  # it leads its own process group (worker.main)
            )
        finally:
            with self._lock:
                self._starting -= 1
        with self._lock:
            self._procs[worker_id] = popen
        registered(worker_id)
        assert popen.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # died at once: its reaper reports it
            popen.stdin.write(self._secret_line)
            popen.stdin.flush()  # stdin stays open: it is the worker's lifeline
        threading.Thread(
            target=self._reap, args=(worker_id, popen), name=f"memlab-reap-{worker_id}", daemon=True
        ).start()
        return worker_id

    def _reap(self, worker_id: str, popen: subprocess.Popen[bytes]) -> None:
        code = popen.wait()
        process_tree.kill_group(popen.pid)  # its tasks' children and fork copies go with it
        try:
            self._on_exit(worker_id, code)
        finally:
            with self._lock:
                self._procs.pop(worker_id, None)

    def pid(self, worker_id: str) -> int | None:
        with self._lock:
            popen = self._procs.get(worker_id)
        return None if popen is None else popen.pid

    def pids_to_keep(self) -> set[int] | None:
        """The workers' pids, for reaping orphans that are not workers; None while a worker
        is being started (its pid is not known yet, so nothing may be reaped)."""
        with self._lock:
            return None if self._starting else {p.pid for p in self._procs.values()}

    def kill(self, worker_id: str) -> None:
        pid = self.pid(worker_id)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def kill_all(self) -> list[subprocess.Popen[bytes]]:
        """SIGKILL every worker; the processes, to wait for."""
        with self._lock:
            procs = list(self._procs.values())
        for popen in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(popen.pid, signal.SIGKILL)
        return procs

    @staticmethod
    def wait(procs: list[subprocess.Popen[bytes]], deadline: float) -> None:
        """Wait for ``procs`` to exit, until ``deadline`` (``time.monotonic()``)."""
        for popen in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(max(0.0, deadline - time.monotonic()))
