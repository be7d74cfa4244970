"""memlab at an earlier commit as one more backend of the same run (``run.py --baseline REV``).

A before/after comparison is only fair when both sides share the machine's drift, so the earlier
commit runs inside the same repetitions as today's code, alternating with it. It cannot share the
process: a Python process imports one ``memlab``. So each ``start()`` spawns a child that puts a
checkout of REV first on ``PYTHONPATH`` (its workers and node managers inherit it), runs the
very same workload code from this directory (``backends.Memlab``), and answers calls over a pipe;
``stop()`` ends the child, so no idle runtime of one side steals the other's cores and the idle
memory and CPU figures of each side count only its own processes.

The checkout is a detached ``git worktree`` under ``benchmarks/results/baselines/`` (gitignored),
made once per commit and reused.
"""

from __future__ import annotations

import os
import subprocess
import sys
from multiprocessing.connection import Client, Listener
from typing import Any

from backends import Backend, Memlab

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def checkout(rev: str) -> tuple[str, str]:
    """``(short commit, path)`` of a worktree of ``rev``, made if missing."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short=9", rev], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    path = os.path.join(HERE, "results", "baselines", commit)
    if not os.path.isdir(os.path.join(path, "memlab")):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        subprocess.run(["git", "worktree", "prune"], cwd=ROOT, check=True)
        subprocess.run(
            ["git", "worktree", "add", "--detach", "--force", path, commit],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
    return commit, path


class Baseline(Backend):
    """``backends.Memlab`` at commit ``rev``, run in a child process per start/stop."""

    def __init__(self, rev: str) -> None:
        self.commit, self.path = checkout(rev)
        self.name = f"memlab@{self.commit[:7]}"
        self.supports = Memlab.supports
        self._child: subprocess.Popen[bytes] | None = None
        self._conn: Any = None

    def _call(self, op: str, *args: Any) -> Any:
        """Run ``backend.<op>(*args)`` in the child and return its result."""
        self._conn.send((op, args))
        ok, value = self._conn.recv()
        if not ok:
            raise RuntimeError(f"{self.name} failed in {op}{args}: {value}")
        return value

    def start(self) -> float:
        authkey = os.urandom(16)
        listener = Listener(family="AF_UNIX", authkey=authkey)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([self.path, HERE])}
        self._child = subprocess.Popen(
            [sys.executable, "-c", f"import baseline; baseline.serve({listener.address!r})"],
            env=env,
            # ``-c`` and ``-m`` put the working directory before PYTHONPATH on sys.path: run in
            # the checkout, or the child (and every process it starts) imports today's memlab.
            cwd=self.path,
            stdin=subprocess.PIPE,
        )
        assert self._child.stdin is not None
        # The key travels on the child's stdin, never in argv where ``ps`` would show it.
        self._child.stdin.write(authkey.hex().encode() + b"\n")
        self._child.stdin.close()
        self._conn = listener.accept()
        listener.close()
        commit = self._call("commit")
        if not os.path.samefile(commit, self.path):  # a stale path setup must not pass silently
            raise RuntimeError(f"{self.name} imported memlab from {commit}, not {self.path}")
        return float(self._call("start"))

    def stop(self) -> None:
        try:
            self._call("stop")
            self._conn.send(("exit", ()))
        finally:
            self._conn.close()
            assert self._child is not None
            self._child.wait(timeout=60)

    def run(self, workload: str, size: int) -> float:
        return float(self._call("run", workload, size))

    def idle_memory(self) -> float:
        return float(self._call("idle_memory"))

    def idle_cpu(self, seconds: float = 2.0) -> float:
        return float(self._call("idle_cpu", seconds))


def serve(address: str) -> None:
    """The child's loop: a ``backends.Memlab`` driven over the connection at ``address``."""
    import memlab

    authkey = bytes.fromhex(sys.stdin.readline().strip())
    conn = Client(address, family="AF_UNIX", authkey=authkey)
    backend = Memlab()
    while True:
        op, args = conn.recv()
        if op == "exit":
            conn.close()
            return
        if op == "commit":  # where memlab came from: the parent checks it is the checkout
            conn.send((True, os.path.dirname(os.path.dirname(os.path.abspath(memlab.__file__)))))
            continue
        try:
            conn.send((True, getattr(backend, op)(*args)))
        except Exception as exc:  # reported to the parent, which raises it there
            conn.send((False, f"{type(exc).__name__}: {exc}"))
