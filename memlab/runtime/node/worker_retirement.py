"""Idle workers beyond ``num_workers`` retire, so a pool grown for nested ``get`` shrinks back.

A task blocked in ``get`` frees its slot: the node manager starts one more worker so the task
it waits for can run (no nested deadlock). Once the burst is over those extra workers idle; each
is a Python process of tens of MiB. This mixin of ``NodeManager`` retires them after a short
linger, as Ray's idle-worker reaping does::

    pool above target (num_workers + workers blocked in get)
      └─► the longest-idle worker, idle for LINGER ─► "retire" ─► worker: owns nothing? ─yes─► exits
                                                                                 └─no──► stays idle

The worker decides, not the manager: only it knows whether it still owns objects or actors
(an owner that exits takes its objects with it, DESIGN §3 invariant 4), or has tasks in flight.
A worker that refused is asked again only after ``RETRY_AFTER``. While asked it is ``retiring``,
so no lease can be granted on it; a retired worker's exit is reported as a death with exit code
0 and cause "retired", so owners and stores drop it as they do any ended process.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from memlab.exceptions import ConnectionClosedError

if TYPE_CHECKING:
    from memlab.protocol.endpoints import Listener
    from memlab.runtime.node.manager import WorkerProc

LINGER = 1.0  # seconds an extra worker stays idle before it is asked to retire (Ray: 1 s)
RETRY_AFTER = 5.0  # a worker that refused (it owns something) is asked again after this
_ASK_TIMEOUT = 5.0
RETIRED_CAUSE = "retired: it idled while the pool was above num_workers"


class WorkerRetirement:
    lock: threading.RLock
    workers: dict[str, WorkerProc]
    idle: deque[str]
    blocked: set[str]
    num_workers: int
    stopping: bool
    listener: Listener
    _serve: Any
    _pool_size: Any

    def _init_retirement(self) -> None:
        self.retired = 0
        self.retire_refused = 0

    def retire_idle(self) -> None:
        """Ask one extra, long-idle worker to retire (called on every housekeeping tick)."""
        now = time.monotonic()
        with self.lock:
            if self.stopping or self._pool_size() <= self.num_workers + len(self.blocked):
                return
            ripe = [
                self.workers[wid]
                for wid in self.idle
                if now - self.workers[wid].idle_since >= LINGER
                and now >= self.workers[wid].ask_after
            ]
            if not ripe:
                return
            w = min(ripe, key=lambda x: x.idle_since)
            self.idle.remove(w.worker_id)
            w.state = "retiring"
        conn = next((c for c in self.listener.connections() if c.peer == w.worker_id), None)
        agreed = False
        if conn is not None:
            with contextlib.suppress(ConnectionClosedError, TimeoutError):
                reply, _ = conn.request({"t": "retire"}, timeout=_ASK_TIMEOUT)
                agreed = bool(reply.get("ok"))
        with self.lock:
            if agreed:
                w.retiring = True  # it exits now; its reaper reports why
                self.retired += 1
                return
            self.retire_refused += 1
            if w.state == "retiring":
                w.state = "idle"
                w.idle_since = now
                w.ask_after = time.monotonic() + RETRY_AFTER
                self.idle.append(w.worker_id)
                self._serve()

    def _on_pool(self, conn: Any, h: dict[str, Any]) -> None:
        """The pool's figures (for tests and the curious)."""
        with self.lock:
            conn.reply(
                h,
                {
                    "t": "pool",
                    "size": self._pool_size(),
                    "target": self.num_workers + len(self.blocked),
                    "idle": len(self.idle),
                    "retired": self.retired,
                    "refused": self.retire_refused,
                },
            )
