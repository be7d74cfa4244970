"""Lineage reconstruction: the shell that runs ``core.lineage``'s decisions.

``core.lineage`` owns the kept lineage (finished task specs whose results may need rebuilding,
bounded by a byte budget, oldest dropped first) and decides what a loss means. This shell
feeds it the owner's events (a task finished, a result entry left the table, an object lost,
a task could not read an argument) and carries out what it decides: pin and unpin arguments
in the ownership table, store an error as an object's value, or re-run the task.

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

from typing import TYPE_CHECKING, Any

from memlab.core.lineage import (
    ARGUMENT_RELEASED,
    DEFAULT_LINEAGE_BUDGET,
    Lineage,
    Verdict,
)

if TYPE_CHECKING:
    from collections import OrderedDict

    from memlab.core.lineage import LineageSpec
    from memlab.runtime.coreworker.core_worker import CoreWorker
    from memlab.runtime.coreworker.task_spec import TaskSpec

__all__ = ["DEFAULT_LINEAGE_BUDGET", "Recovery"]


class Recovery:
    """The owner's lineage shell: feeds ``core.lineage`` and runs what it decides."""

    def __init__(self, core: CoreWorker, budget: int = DEFAULT_LINEAGE_BUDGET) -> None:
        self.core = core
        self.lineage = Lineage(budget)

    @property
    def budget(self) -> int:
        return self.lineage.budget

    @budget.setter
    def budget(self, budget: int) -> None:
        self.lineage.budget = budget

    @property
    def kept(self) -> OrderedDict[bytes, LineageSpec]:
        return self.lineage.kept

    @property
    def kept_bytes(self) -> int:
        return self.lineage.kept_bytes

    def validate(self) -> None:
        self.lineage.validate()

    # -- lineage bookkeeping -------------------------------------------------------------------

    def task_finished(self, spec: TaskSpec) -> None:
        """Keep the lineage of a finished task while any of its results lives."""
        core = self.core
        table = core.table
        lineage = self.lineage
        if not lineage.wants(spec):
            return
        live = sum(1 for r in spec.returns if table.get(r) is not None)
        if live == 0:
            spec.live_returns = 0
            return
        pinned = [oid for oid, owner in spec.deps if owner == core.proc]
        pinned += [oid for oid in spec.nested if (e := table.get(oid)) is not None and e.owned]
        table.pin_lineage(pinned)
        lineage.keep(spec, live, pinned)
        while (oldest := lineage.over_budget()) is not None:
            core.refcounting.apply(self._release(oldest, evicted=True))

    def lineage_dropped(self, spec: TaskSpec) -> list[Any]:
        """A result of ``spec`` left the owner's table; the last one releases the lineage."""
        unpin = self.lineage.result_dropped(spec)
        return self.core.table.unpin_lineage(unpin) if unpin else []

    def _release(self, spec: LineageSpec, evicted: bool = False) -> list[Any]:
        return self.core.table.unpin_lineage(self.lineage.release(spec, evicted))

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
                decision = self.lineage.decide_loss(oid, None, entry.call_site, False)
                assert decision.error is not None
                wake += self._fail_object(oid, decision.error)
            else:
                wake += self.rebuild(spec, oid)
        return wake

    def rebuild(self, spec: TaskSpec, oid: bytes) -> list[Any]:
        core = self.core
        submitter = core.submitter
        lineage = self.lineage
        running = spec.task_id in submitter.tasks
        decision = lineage.decide_loss(oid, spec, spec.call_site, running)
        if decision.verdict is Verdict.ALREADY_REBUILDING:
            return []
        if decision.verdict is Verdict.REBUILD:
            try:
                core.refcounting.apply(core.table.add_submitted(spec.held))
            except KeyError:
                decision = lineage.cannot_rebuild(oid, spec, ARGUMENT_RELEASED)
        if decision.error is not None:
            wake: list[Any] = []
            for ret in spec.returns:
                wake += self._fail_object(ret, decision.error)
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
        missing = getattr(error, "object_id", None)
        read_from = [slot.node if slot is not None else None for slot in spec.resolved]
        lost = self.lineage.lost_arguments(spec, missing, read_from, self.core.dead)
        return self._rerun(spec, lost) if lost else None

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
