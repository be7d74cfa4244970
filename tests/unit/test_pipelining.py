"""The pipelining rule (memlab.runtime.coreworker.pipelining): ready work never waits behind a
running task while a worker is, or may soon be, free."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from memlab.runtime.coreworker.pipelining import PIPELINE_WINDOW, free_lease, to_steal_from

NOW = 100.0


@dataclass
class Spec:
    pushed_at: float


@dataclass
class FakeLease:
    worker: str
    inflight: dict[bytes, Any] = field(default_factory=dict)
    revoked: bool = False
    blocked: bool = False
    stealing: bool = False


def running(worker: str, *ages: float) -> FakeLease:
    return FakeLease(worker, {bytes([i]): Spec(NOW - age) for i, age in enumerate(ages)})


def test_an_idle_lease_wins() -> None:
    idle = FakeLease("b")
    assert free_lease([running("a", 0.0), idle], may_lease_more=False, now=NOW) is idle


def test_no_pipelining_while_another_worker_may_be_leased() -> None:
    assert free_lease([running("a", 0.0)], may_lease_more=True, now=NOW) is None


def test_pipelining_behind_a_young_task_when_every_worker_is_leased() -> None:
    a = running("a", PIPELINE_WINDOW / 2)
    assert free_lease([a], may_lease_more=False, now=NOW) is a


def test_never_behind_an_old_task() -> None:
    assert free_lease([running("a", PIPELINE_WINDOW * 2)], may_lease_more=False, now=NOW) is None


def test_never_onto_a_full_revoked_or_blocked_lease() -> None:
    full = running("a", 0.0, 0.0)
    revoked = FakeLease("b", revoked=True)
    blocked = running("c", 0.0)
    blocked.blocked = True
    assert free_lease([full, revoked, blocked], may_lease_more=False, now=NOW) is None


def test_steal_back_only_for_an_idle_lease_and_once() -> None:
    stuck = running("a", PIPELINE_WINDOW * 2, 0.0)  # a long task, one waiting behind it
    leases = {"a": stuck}
    assert to_steal_from(leases, False, NOW) == []  # no worker to take it: it would queue again
    leases["b"] = FakeLease("b")
    assert to_steal_from(leases, False, NOW) == ["a"]
    assert to_steal_from(leases, False, NOW) == []  # asked already
    stuck.inflight.pop(b"\x01")  # the bounce came back
    assert to_steal_from(leases, False, NOW) == [] and not stuck.stealing


def test_steal_back_when_another_worker_may_be_leased() -> None:
    # The idle lease was returned before the running task grew old: lease another worker.
    leases = {"a": running("a", PIPELINE_WINDOW * 2, 0.0)}
    assert to_steal_from(leases, True, NOW) == ["a"]


def test_no_steal_behind_a_young_task() -> None:
    leases = {"a": running("a", PIPELINE_WINDOW / 2, 0.0), "b": FakeLease("b")}
    assert to_steal_from(leases, True, NOW) == []
