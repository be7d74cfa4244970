"""When the worker running a task dies, or the task is cancelled.

Composed into ``Submitter`` (``submitter.failures``), whose tasks and leases it changes through
the submitter's public methods. A task in flight on a dead worker is retried elsewhere while
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
    from memlab.runtime.coreworker.submitter import Submitter
    from memlab.runtime.coreworker.task_spec import TaskSpec

CRASH_INFO_WAIT = 1.0


class TaskFailures:
    """Worker deaths and cancels for one owner's ``Submitter`` (which builds it)."""

    def __init__(self, submitter: Submitter) -> None:
        self.submitter = submitter
        self.core = submitter.core
        # worker -> (since when, tasks that ran there): waiting for the node manager's word
        # on how it died, for up to CRASH_INFO_WAIT.
        self.awaiting_crash_info: dict[str, tuple[float, list[TaskSpec]]] = {}
        self.core.peers.on_peer_lost(self._on_peer_lost)

    def after_node_died(self, node: str) -> None:
        """Leases on the dead node's workers are gone, and so are requests it never granted."""
        sub = self.submitter
        with self.core.lock:
            sub.lease_requests -= sub.requests_by_node.pop(node, 0)
            workers = [w for w, lease in sub.leases.items() if lease.node == node]
        for worker in workers:
            self.worker_lost(worker, self.core.dead.get(worker))

    def _on_peer_lost(self, peer: str, conn: Connection) -> None:
        sub = self.submitter
        if peer in sub.leases:
            self.worker_lost(peer, self.core.dead.get(peer))

    def on_worker_died(self, worker: str, info: dict[str, Any]) -> None:
        sub = self.submitter
        self.worker_lost(worker, info)
        with self.core.lock:
            pending = self.awaiting_crash_info.pop(worker, None)
            wake: list[Any] = []
            if pending is not None:
                for spec in pending[1]:
                    wake += sub.fail(spec, self.crash_error(spec, worker, info), worker)
            to_push = sub.pump()
        run_wakeups(wake)
        sub.push_all(to_push)

    def worker_lost(self, worker: str, info: dict[str, Any] | None) -> None:
        sub = self.submitter
        wake: list[Any] = []
        with self.core.lock:
            sub.shipped.pop(worker, None)
            lease = sub.leases.pop(worker, None)
            running = dict(lease.inflight) if lease is not None else {}
            # Tasks that went to this worker but whose lease is no longer held (given back or
            # replaced) are in flight there all the same: they must not be forgotten.
            for tid, spec in sub.tasks.items():
                if spec.worker == worker and spec.actor is None:
                    running.setdefault(tid, spec)
            if not running:
                return
            self.forget_results(worker, list(running.values()))
            for spec in running.values():
                if spec.cancelled:
                    wake += sub.fail(
                        spec, TaskCancelledError(spec.name, spec.task_id.hex()), worker
                    )
                elif spec.may_retry():
                    sub.retry(spec, f"worker {worker} died")
                elif info is not None:
                    wake += sub.fail(spec, self.crash_error(spec, worker, info), worker)
                else:  # wait briefly for the node manager's word on how it died
                    waiting = self.awaiting_crash_info.setdefault(worker, (time.monotonic(), []))
                    waiting[1].append(spec)
            to_push = sub.pump()
        run_wakeups(wake)
        sub.push_all(to_push)

    def expire(self, now: float) -> list[Any]:
        """Fail the tasks whose worker's crash report never came (lock held)."""
        sub = self.submitter
        wake: list[Any] = []
        for worker, (since, specs) in list(self.awaiting_crash_info.items()):
            if now - since > CRASH_INFO_WAIT:
                del self.awaiting_crash_info[worker]
                for spec in specs:
                    error = (
                        TaskCancelledError(spec.name, spec.task_id.hex())
                        if spec.cancelled
                        else self.crash_error(spec, worker, None)
                    )
                    wake += sub.fail(spec, error, worker)
        return wake

    def forget_results(self, worker: str, specs: list[TaskSpec]) -> None:
        """A worker died mid-task: copies of results it wrote but never reported must go."""
        oids = [oid for spec in specs for oid in spec.returns]
        if oids:
            for node in self.core.nodes:
                self.core.send_later(node, {"t": "delete_written", "oids": oids, "writer": worker})

    def crash_error(
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
        sub = self.submitter
        from memlab.ids import task_of

        tid = task_of(oid)
        wake: list[Any] = []
        with self.core.lock:
            spec = sub.tasks.get(tid)
            if spec is None or spec.cancelled:
                return
            spec.cancelled = True
            worker = spec.worker
            if worker is None:
                if spec in sub.queue:
                    sub.queue.remove(spec)
                wake = sub.fail(spec, TaskCancelledError(spec.name, tid.hex()))
        run_wakeups(wake)
        if worker is None:
            return
        if force:
            self.core.peers.send_or_drop(self.core.node_id, {"t": "kill_worker", "worker": worker})
        else:
            try:
                self.core.conn_to(worker).send({"t": "cancel", "tid": tid})
            except ConnectionClosedError:
                pass
