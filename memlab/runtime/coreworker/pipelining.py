"""Which leased worker takes an owner's next task, and when a pipelined task is taken back.

Pipelining (pushing a second task to a worker still running one) hides the round trip of tiny
tasks, but a task queued behind a long one waits for all of it. The rule: never hold ready work
behind a running task while a worker is, or may soon be, free::

    idle lease ───────────────────────────────────────────► push there
    every lease busy, owner may lease more workers ───────► keep queued, ask for a lease
    all workers leased, running task younger than window ─► pipeline behind it
    otherwise ────────────────────────────────────────────► keep queued: the first to free takes it

The guess "young means short" can be wrong: a task pipelined behind one that then runs past the
window is stolen back (``steal``: the worker bounces what waits behind its running task) as
soon as another of the owner's leases idles, or another worker may be leased.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

MAX_IN_FLIGHT = 2
# Only behind a task pushed this recently: tiny tasks, the only ones pipelining speeds up,
# finish well within it, and steal-back corrects a wrong guess soon after.
PIPELINE_WINDOW = 0.01


class LeaseLike(Protocol):
    inflight: dict[bytes, Any]  # task id -> spec (with ``pushed_at``)
    revoked: bool
    blocked: bool
    stealing: bool
    worker: str


def free_lease(leases: Iterable[LeaseLike], may_lease_more: bool, now: float) -> Any:
    """The lease to push the next queued task to, or None to keep it queued at the owner."""
    best: Any = None
    for lease in leases:
        n = len(lease.inflight)
        if (
            n < MAX_IN_FLIGHT
            and not lease.revoked
            and not (lease.blocked and n)
            and (best is None or n < len(best.inflight))
        ):
            best = lease
            if n == 0:
                return best
    if best is None or may_lease_more:
        return None
    if any(now - spec.pushed_at > PIPELINE_WINDOW for spec in best.inflight.values()):
        return None
    return best


def to_steal_from(leases: Mapping[str, LeaseLike], may_lease_more: bool, now: float) -> list[str]:
    """Workers to ask for the tasks waiting behind their long-running one (marks them asked)."""
    if not may_lease_more and not any(
        not lease.inflight and not lease.revoked for lease in leases.values()
    ):
        return []  # no worker to give it to: a bounced task would only queue again
    out = []
    for lease in leases.values():
        if len(lease.inflight) <= 1:
            lease.stealing = False
        elif (
            not lease.stealing
            and now - min(spec.pushed_at for spec in lease.inflight.values()) > PIPELINE_WINDOW
        ):
            lease.stealing = True
            out.append(lease.worker)
    return out
