"""When the worker running a task dies, or the task is cancelled.

A mixin of ``Submitter``. A task in flight on a dead worker is retried elsewhere while
``max_retries`` allows (copies of results it wrote but never reported are dropped, unless a retry
rewrote them), else it fails with ``WorkerCrashedError`` carrying the node manager's word on how
the worker died (waited for up to ``CRASH_INFO_WAIT``). Cancelling: a queued task never runs;
a running one is interrupted, or its worker killed with ``force``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from memlab.exceptions import ConnectionClosedError, TaskCancelledError, WorkerCrashedError
from memlab.runtime.coreworker.memory_store import run_wakeups

if TYPE_CHECKING:
    from memlab.protocol.transport import Connection
    from memlab.runtime.coreworker.core_worker import CoreWorker
    from memlab.runtime.coreworker.submitter import Lease
    from memlab.runtime.coreworker.task_spec import TaskSpec

CRASH_INFO_WAIT = 1.0


class TaskFailures:
    core: CoreWorker
    tasks: dict[bytes, TaskSpec]
    leases: dict[str, Lease]
    queue: Any
    lease_requests: int
    requests_by_node: dict[str, int]
    shipped: dict[str, set[bytes]]
    _lost: dict[str, tuple[float, list[TaskSpec]]]
    # provided by Submitter
    _fail: Any
    _retry: Any
    _pump: Any
    _push_all: Any
    send_to_node: Any

    def after_node_died(self, node: str) -> None:
        """Leases on the dead node's workers are gone, and so are requests it never granted."""
        with self.core.lock:
            self.lease_requests -= self.requests_by_node.pop(node, 0)
            workers = [w for w, lease in self.leases.items() if lease.node == node]
        for worker in workers:
            self._worker_lost(worker, self.core.dead.get(worker))

    def _on_peer_lost(self, peer: str, conn: Connection) -> None:
        if peer in self.leases:
            self._worker_lost(peer, self.core.dead.get(peer))

    def on_worker_died(self, worker: str, info: dict[str, Any]) -> None:
        self._worker_lost(worker, info)
        with self.core.lock:
            pending = self._lost.pop(worker, None)
            wake: list[Any] = []
            if pending is not None:
                for spec in pending[1]:
                    wake += self._fail(spec, self._crash_error(spec, worker, info), worker)
            to_push = self._pump()
        run_wakeups(wake)
        self._push_all(to_push)

    def _worker_lost(self, worker: str, info: dict[str, Any] | None) -> None:
        wake: list[Any] = []
        with self.core.lock:
            self.shipped.pop(worker, None)
            lease = self.leases.pop(worker, None)
            running = dict(lease.inflight) if lease is not None else {}
            # Tasks that went to this worker but whose lease is no longer held (given back or
            # replaced) are in flight there all the same: they must not be forgotten.
            for tid, spec in self.tasks.items():
                if spec.worker == worker and spec.actor is None:
                    running.setdefault(tid, spec)
            if not running:
                return
            self.forget_results(worker, list(running.values()))
            for spec in running.values():
                if spec.cancelled:
                    wake += self._fail(
                        spec, TaskCancelledError(spec.name, spec.task_id.hex()), worker
                    )
                elif spec.may_retry():
                    self._retry(spec, f"worker {worker} died")
                elif info is not None:
                    wake += self._fail(spec, self._crash_error(spec, worker, info), worker)
                else:  # wait briefly for the node manager's word on how it died
                    self._lost.setdefault(worker, (time.monotonic(), []))[1].append(spec)
            to_push = self._pump()
        run_wakeups(wake)
        self._push_all(to_push)

    def forget_results(self, worker: str, specs: list[TaskSpec]) -> None:
        """A worker died mid-task: copies of results it wrote but never reported must go."""
        oids = [oid for spec in specs for oid in spec.returns]
        if oids:
            for node in self.core.nodes:
                self.core.send_later(node, {"t": "delete_written", "oids": oids, "writer": worker})

    def _crash_error(
        self, spec: TaskSpec, worker: str, info: dict[str, Any] | None
    ) -> WorkerCrashedError:
        info = info or {}
        return WorkerCrashedError(
            spec.name,
            worker,
            info.get("pid"),
            info.get("exitcode"),
            info.get("signal"),
            spec.attempt + 1,
        )

    def cancel(self, oid: bytes, force: bool) -> None:
        from memlab.ids import task_of

        tid = task_of(oid)
        wake: list[Any] = []
        with self.core.lock:
            spec = self.tasks.get(tid)
            if spec is None or spec.cancelled:
                return
            spec.cancelled = True
            worker = spec.worker
            if worker is None:
                if spec in self.queue:
                    self.queue.remove(spec)
                wake = self._fail(spec, TaskCancelledError(spec.name, tid.hex()))
        run_wakeups(wake)
        if worker is None:
            return
        if force:
            self.send_to_node(self.core.node_id, {"t": "kill_worker", "worker": worker})
        else:
            try:
                self.core.conn_to(worker).send({"t": "cancel", "tid": tid})
            except ConnectionClosedError:
                pass
