"""Lineage reconstruction: rebuilding lost objects by re-running the tasks that made them.

Owns the owner's kept lineage (finished task specs whose results may need rebuilding, bounded
by a byte budget, oldest dropped first) and the rebuild of lost objects.

When a node dies, each object its owner had there is lost. A task result is rebuilt by
re-running its task (within the task's ``max_retries``); its arguments are rebuilt first when
they are lost too, recursively, because finished tasks pin their owned arguments' lineage
(``ReferenceTable.pin_lineage``). A ``put`` object has no lineage: ``ObjectLostError``. When the
budget is spent or the lineage was evicted: ``ObjectReconstructionFailedError``.

A task that fails with ``ObjectLostError`` while reading an argument gets that argument rebuilt
(by this owner, or by the argument's owner when it is borrowed) and runs again without using an
attempt, up to five times.

Every method is called with the core's lock held and returns wake-ups to run after it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from memlab.exceptions import ObjectLostError, ObjectReconstructionFailedError

if TYPE_CHECKING:
    from memlab.runtime.coreworker.core_worker import CoreWorker
    from memlab.runtime.coreworker.task_spec import TaskSpec

DEFAULT_LINEAGE_BUDGET = 1 << 30  # bytes of kept task specs, as Ray's default
SPEC_OVERHEAD = 256  # bytes a kept spec costs beyond its argument bytes


class Recovery:
    def __init__(self, core: CoreWorker, budget: int = DEFAULT_LINEAGE_BUDGET) -> None:
        self.core = core
        self.budget = budget
        self.kept: OrderedDict[bytes, TaskSpec] = OrderedDict()
        self.kept_bytes = 0

    # -- lineage bookkeeping -------------------------------------------------------------------

    def task_finished(self, spec: TaskSpec) -> None:
        """Keep the lineage of a finished task while any of its results lives."""
        core = self.core
        table = core.table
        if spec.task_id in self.kept or spec.lineage_evicted:
            return
        spec.live_returns = sum(1 for r in spec.returns if table.get(r) is not None)
        if spec.live_returns == 0:
            return
        pinned = [oid for oid, owner in spec.deps if owner == core.proc]
        pinned += [oid for oid in spec.nested if (e := table.get(oid)) is not None and e.owned]
        table.pin_lineage(pinned)
        spec.pinned = pinned
        spec.lineage_bytes = len(spec.args) + SPEC_OVERHEAD
        self.kept[spec.task_id] = spec
        self.kept_bytes += spec.lineage_bytes
        while self.kept_bytes > self.budget and self.kept:
            _, oldest = next(iter(self.kept.items()))
            core.refcounting.apply(self._release(oldest, evicted=True))

    def lineage_dropped(self, spec: TaskSpec) -> list[Any]:
        """A result of ``spec`` left the owner's table; the last one releases the lineage."""
        spec.live_returns -= 1
        if spec.live_returns <= 0 and spec.task_id in self.kept:
            return self._release(spec)
        return []

    def _release(self, spec: TaskSpec, evicted: bool = False) -> list[Any]:
        self.kept.pop(spec.task_id, None)
        self.kept_bytes -= spec.lineage_bytes
        pinned, spec.pinned = spec.pinned, []
        if evicted:
            spec.lineage_evicted = True
        return self.core.table.unpin_lineage(pinned)

    # -- rebuilding ----------------------------------------------------------------------------

    def objects_lost(self, oids: list[bytes], freed: bool = False) -> list[Any]:
        """These owned objects have no copy left: rebuild the ones still needed.

        ``freed`` marks objects kept only for lineage whose value is needed again as an
        argument of a task being rebuilt.
        """
        core = self.core
        wake: list[Any] = []
        for oid in oids:
            entry = core.table.get(oid)
            if entry is None or (entry.value_freed and not freed):
                continue
            if core.events.enabled:
                core.events.emit("object.lost", object_id=oid.hex())
            spec = entry.lineage
            if spec is None:
                error = ObjectLostError(
                    oid.hex(),
                    "it was made by memlab.put(), which leaves no lineage to rebuild "
                    "it from; keep data that must survive node failures in the driver, or make "
                    "it in a task so it can be re-run",
                    entry.call_site,
                )
                wake += self._fail_object(oid, error)
            else:
                wake += self.rebuild(spec, oid)
        return wake

    def rebuild(self, spec: TaskSpec, oid: bytes) -> list[Any]:
        core = self.core
        submitter = core.submitter
        if spec.task_id in submitter.tasks:
            return []  # already running or being rebuilt
        reason = None
        if spec.lineage_evicted:
            reason = (
                "its lineage was evicted to keep kept lineage within the budget; raise "
                "memlab.init(lineage_budget=...) to keep more"
            )
        elif not spec.may_retry():
            reason = f"the task's max_retries={spec.max_retries} is spent"
        else:
            try:
                core.refcounting.apply(core.table.add_submitted(spec.held))
            except KeyError:
                reason = "an argument it read has been released by its owner"
        if reason is not None:
            error = ObjectReconstructionFailedError(
                oid.hex(), spec.name, spec.attempt + 1, reason, spec.call_site
            )
            wake: list[Any] = []
            for ret in spec.returns:
                wake += self._fail_object(ret, error)
            return wake
        spec.attempt += 1
        spec.rebuilding = True
        spec.worker = None
        for ret in spec.returns:
            slot = core.mstore.slots.get(ret)
            if slot is not None and slot.node in core.nodes:
                # A copy thought lost may still sit on a live node (e.g. spilled and not
                # restorable then): drop it, unless the rebuild itself rewrites it there. A
                # promoted copy has no writer (None matches the node's record of a copy).
                core.send_later(
                    slot.node, {"t": "delete_written", "oids": [ret], "writer": slot.writer}
                )
            entry = core.table.get(ret)
            if entry is not None and (not entry.value_freed or ret == oid):
                core.mstore.reset(ret)
                core.mstore.add_pending(ret)
                if core.events.enabled:
                    core.events.emit(
                        "object.reconstructing", object_id=ret.hex(), task_id=spec.task_id.hex()
                    )
        submitter.tasks[spec.task_id] = spec
        if core.events.enabled:
            core.events.emit(
                "task.retried",
                task_id=spec.task_id.hex(),
                attempt=spec.attempt,
                reason="rebuilding lost results",
            )
        return submitter.resolve(spec)

    def _fail_object(self, oid: bytes, error: BaseException) -> list[Any]:
        core = self.core
        if core.table.get(oid) is None:
            return []
        core.table.set_failed(oid)
        core.mstore.reset(oid)
        return core.mstore.put_error(oid, error)

    # -- tasks whose arguments vanished --------------------------------------------------------

    def argument_lost(self, spec: TaskSpec, error: BaseException) -> list[Any] | None:
        """A task could not read an argument: rebuild it (or have its owner rebuild it) and
        run the task again without using an attempt; None if that cannot help."""
        if spec.lost_retries >= 5:
            return None
        missing = getattr(error, "object_id", None)
        lost = [(oid, owner) for oid, owner in spec.deps if oid.hex() == missing]
        lost = lost or self._args_on_dead_nodes(spec)
        return self._rerun(spec, lost) if lost else None

    def _args_on_dead_nodes(self, spec: TaskSpec) -> list[tuple[bytes, str]]:
        dead = self.core.dead
        return [
            (oid, owner)
            for (oid, owner), slot in zip(spec.deps, spec.resolved)
            if slot is not None and slot.node is not None and slot.node in dead
        ]

    def _rerun(self, spec: TaskSpec, lost: list[tuple[bytes, str]]) -> list[Any]:
        core = self.core
        spec.lost_retries += 1
        spec.worker = None
        wake: list[Any] = []
        for (oid, owner), slot in zip(spec.deps, spec.resolved):
            if (oid, owner) not in lost:
                continue
            if owner == core.proc:
                wake += self.objects_lost([oid])
            else:  # its owner rebuilds it (or says it is gone); ask again
                core.mark_missing(oid, owner, slot.node if slot is not None else None)
        return wake + core.submitter.resolve(spec)
