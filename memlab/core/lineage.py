"""Lineage: which finished tasks an owner keeps to rebuild lost results, and what a loss means.

Owns ``kept``, the finished task specs whose results may still need rebuilding, oldest first,
and their byte cost ``kept_bytes`` against ``budget``. Decides, when an owned object has no
copy left, whether it is rebuilt by re-running its task or fails, and with which error. A
surviving copy on another node is tried first (``core.promotion``); only objects with no copy
left reach this module.

::

    task finished ──keep──► kept (charged lineage_bytes) ──over budget──► oldest evicted
                               │                                          (lineage_evicted)
                               └── last result entry dropped ──► released (pins returned)

    object lost ──► put object (no lineage) ............... ObjectLostError
                    task already running or rebuilding .... nothing (its result will come)
                    lineage evicted / max_retries spent ... ObjectReconstructionFailedError
                    otherwise ............................. rebuild: re-run the task; the
                        arguments it reads that are lost too are rebuilt the same way when
                        the re-run resolves them (a kept spec pins its owned arguments)

A kept spec pins its owned arguments (``ReferenceTable.pin_lineage``): their entries and
lineage stay after their values are freed, which is what makes the rebuild recursive. Keeping
returns nothing to do; releasing returns the arguments to unpin.

A task that fails because it could not read an argument gets that argument rebuilt and runs
again without using an attempt, up to ``MAX_LOST_ARGUMENT_RERUNS`` times
(``lost_arguments``).

Invariants (``validate``):
    * ``kept_bytes`` is the sum of the kept specs' ``lineage_bytes`` and at most ``budget``
      after every step.
    * A kept spec has a live result entry (``live_returns > 0``), was not evicted, and is
      kept under its own task id.

Pure: no I/O, no lock. The owner's core serialises the calls. The bookkeeping fields live on
the spec itself (``LineageSpec``) so keeping a finished task allocates nothing per task, and
an evicted spec's mark dies with the spec.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Container, Sequence
from dataclasses import dataclass
from typing import Protocol

from memlab.exceptions import ObjectLostError, ObjectReconstructionFailedError

__all__ = [
    "ARGUMENT_RELEASED",
    "DEFAULT_LINEAGE_BUDGET",
    "MAX_LOST_ARGUMENT_RERUNS",
    "SPEC_OVERHEAD",
    "Lineage",
    "LineageSpec",
    "LossDecision",
    "Verdict",
]

DEFAULT_LINEAGE_BUDGET = 1 << 30  # bytes of kept task specs, as Ray's default
SPEC_OVERHEAD = 256  # bytes a kept spec costs beyond its argument bytes
MAX_LOST_ARGUMENT_RERUNS = 5  # re-runs of one task because an argument it read was lost

# Why a rebuild cannot start, in words that name the fix.
EVICTED = (
    "its lineage was evicted to keep kept lineage within the budget; raise "
    "memlab.init(lineage_budget=...) to keep more"
)
ARGUMENT_RELEASED = "an argument it read has been released by its owner"
PUT_HAS_NO_LINEAGE = (
    "it was made by memlab.put(), which leaves no lineage to rebuild "
    "it from; keep data that must survive node failures in the driver, or make "
    "it in a task so it can be re-run"
)

_NOTHING: list[bytes] = []  # shared, never mutated: most releases unpin nothing


class LineageSpec(Protocol):
    """The fields of a task spec that lineage reads and keeps (``TaskSpec`` has them)."""

    task_id: bytes
    name: str
    args: bytes
    call_site: str | None
    max_retries: int
    attempt: int
    deps: list[tuple[bytes, str]]
    lost_retries: int
    # Lineage's own bookkeeping, on the spec so keeping it allocates nothing.
    pinned: list[bytes]
    live_returns: int
    lineage_bytes: int
    lineage_evicted: bool

    def may_retry(self) -> bool: ...


class Verdict(enum.Enum):
    """What to do about an owned object that has no copy left."""

    REBUILD = "rebuild"  # re-run the task that made it
    ALREADY_REBUILDING = "already rebuilding"  # its task runs: its result will come
    FAIL = "fail"  # it cannot come back: store ``error`` as its value


@dataclass(frozen=True)
class LossDecision:
    verdict: Verdict
    error: BaseException | None = None


REBUILD = LossDecision(Verdict.REBUILD)
ALREADY_REBUILDING = LossDecision(Verdict.ALREADY_REBUILDING)


class Lineage:
    """An owner's kept lineage within a byte budget, and its rebuild decisions."""

    def __init__(self, budget: int = DEFAULT_LINEAGE_BUDGET) -> None:
        self.budget = budget
        self.kept: OrderedDict[bytes, LineageSpec] = OrderedDict()
        self.kept_bytes = 0

    # -- keeping and releasing -----------------------------------------------------------------

    def wants(self, spec: LineageSpec) -> bool:
        """Whether a finished ``spec`` is new to lineage (neither kept nor evicted before)."""
        return spec.task_id not in self.kept and not spec.lineage_evicted

    def keep(self, spec: LineageSpec, live_returns: int, pinned: list[bytes]) -> bool:
        """A task finished with ``live_returns`` result entries alive and ``pinned`` owned
        arguments pinned for it: keep its spec. False (nothing kept, nothing pinned is
        expected) when no result lives."""
        spec.live_returns = live_returns
        if live_returns <= 0:
            return False
        spec.pinned = pinned
        spec.lineage_bytes = len(spec.args) + SPEC_OVERHEAD
        self.kept[spec.task_id] = spec
        self.kept_bytes += spec.lineage_bytes
        return True

    def over_budget(self) -> LineageSpec | None:
        """The oldest kept spec while the kept bytes exceed the budget: evict it next."""
        if self.kept_bytes > self.budget and self.kept:
            return next(iter(self.kept.values()))
        return None

    def release(self, spec: LineageSpec, evicted: bool = False) -> list[bytes]:
        """Stop keeping ``spec``; returns the arguments to unpin. An evicted spec is marked, so
        a later loss of its results fails instead of rebuilding."""
        if self.kept.pop(spec.task_id, None) is not None:
            self.kept_bytes -= spec.lineage_bytes
        pinned, spec.pinned = spec.pinned, _NOTHING
        if evicted:
            spec.lineage_evicted = True
        return pinned

    def result_dropped(self, spec: LineageSpec) -> list[bytes]:
        """A result entry of ``spec`` left the owner's table; the last one releases it."""
        spec.live_returns -= 1
        if spec.live_returns <= 0 and spec.task_id in self.kept:
            return self.release(spec)
        return _NOTHING

    # -- losses --------------------------------------------------------------------------------

    def decide_loss(
        self, oid: bytes, spec: LineageSpec | None, call_site: str | None, running: bool
    ) -> LossDecision:
        """What to do about owned object ``oid``, made by ``spec`` (None: a put), that has no
        copy left; ``running`` says whether its task is in flight (running or rebuilding)."""
        if spec is None:
            return LossDecision(
                Verdict.FAIL, ObjectLostError(oid.hex(), PUT_HAS_NO_LINEAGE, call_site)
            )
        if running:
            return ALREADY_REBUILDING
        if spec.lineage_evicted:
            return self.cannot_rebuild(oid, spec, EVICTED)
        if not spec.may_retry():
            return self.cannot_rebuild(
                oid, spec, f"the task's max_retries={spec.max_retries} is spent"
            )
        return REBUILD

    def cannot_rebuild(self, oid: bytes, spec: LineageSpec, reason: str) -> LossDecision:
        """The rebuild of ``oid`` cannot start, for ``reason``: every result of ``spec`` fails."""
        error = ObjectReconstructionFailedError(
            oid.hex(), spec.name, spec.attempt + 1, reason, spec.call_site
        )
        return LossDecision(Verdict.FAIL, error)

    def lost_arguments(
        self,
        spec: LineageSpec,
        missing: str | None,
        read_from: Sequence[str | None],
        dead: Container[str],
    ) -> list[tuple[bytes, str]] | None:
        """A run of ``spec`` could not read an argument: the (object, owner) pairs to rebuild
        before it runs again without using an attempt, or None when that cannot help.

        ``missing`` is the hex id the error named; when it names none of the task's
        arguments, the ones it read (``read_from``: node of each argument's copy) from a
        node now in ``dead`` are taken as lost."""
        if spec.lost_retries >= MAX_LOST_ARGUMENT_RERUNS:
            return None
        lost = [(oid, owner) for oid, owner in spec.deps if oid.hex() == missing]
        if not lost:
            lost = [
                dep for dep, node in zip(spec.deps, read_from) if node is not None and node in dead
            ]
        return lost or None

    # -- invariants ----------------------------------------------------------------------------

    def validate(self) -> None:
        """Raise AssertionError if an invariant does not hold."""
        total = 0
        for task_id, spec in self.kept.items():
            assert spec.task_id == task_id, f"spec {spec.task_id.hex()} kept as {task_id.hex()}"
            assert spec.live_returns > 0, f"lineage of {task_id.hex()} kept with no live result"
            assert not spec.lineage_evicted, f"evicted lineage {task_id.hex()} still kept"
            total += spec.lineage_bytes
        assert total == self.kept_bytes, f"kept_bytes {self.kept_bytes} != sum {total}"
        assert self.kept_bytes <= self.budget or not self.kept, (self.kept_bytes, self.budget)
