"""A node's worker pool: which worker serves which lease, and when the pool grows or shrinks.

Owns, for one node manager, the state of every worker process it started, the queue of lease
requests no worker is free for, the workers blocked in a nested ``get``, and the counts of
workers being spawned. It does no I/O, reads no clock and takes no lock: the node manager feeds
it events (``handle``) under its lock and carries out the instructions it returns after.

States of one worker::

    spawning ─WorkerSpawned─► STARTING ─WorkerStarted─► IDLE ◄──LeaseReturned / OwnerGone──┐
                                 │                      │ └──── GrantLease ──► LEASED ─────┘
                                 │ (actor lease)        │ Tick, pool above target, idle LINGER
                                 ▼                      ▼
                               ACTOR                 RETIRING ─RetireRefused─► IDLE
                                                        └─RetireAgreed─► RETIRED
    any state ─WorkerExited─► gone (an ACTOR worker held by a departed owner is killed first)

Rules:

* The pool's *target* is ``num_workers`` plus the processes blocked in ``get``: a task that
  blocks frees its slot, so one more worker starts and the task it waits for can run (no nested
  deadlock). A death below target is refilled at once.
* Lease requests are served in arrival order, each by the idle worker that has waited longest
  (first in, first out); while requests wait, every holder of another owner's lease is asked to
  give it back (``RevokeLease``).
* Above target (not counting workers already retiring), the longest-idle worker idle for
  ``LINGER`` seconds is asked to retire. Only it
  knows whether it still owns objects or actors (an owner that exits takes its objects with it,
  DESIGN §3 invariant 4), so it may refuse; then it is idle again and asked no sooner than
  ``RETRY_AFTER`` later. A worker that agreed is never leased again, and its exit is no crash.
* Actor workers are started on request, outside the pool: they never count toward its size and
  are never leased for tasks.

Invariants (checked by ``validate``):

1. Every worker is in exactly one state; the idle queue holds exactly the IDLE workers, once.
2. LEASED and ACTOR workers have a holder; no other state has one. A lease is only ever on a
   worker that is alive (an exited worker leaves the table).
3. No request waits while a worker idles (``pending`` and ``idle`` are never both non-empty).
4. Actor workers are only STARTING or ACTOR; pool workers are never ACTOR.
5. Bounds: unless stopping (or a spawn failed), the pool is at least its target; it never holds
   more workers than the largest target it has had.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

__all__ = [
    "LINGER",
    "RETRY_AFTER",
    "ActorLease",
    "ActorLeaseRequested",
    "AskToRetire",
    "Event",
    "FailActorLease",
    "GrantLease",
    "GrantUndelivered",
    "Instruction",
    "KillWorker",
    "LeaseRequested",
    "LeaseReturned",
    "OwnerGone",
    "PoolFigures",
    "ReportDeath",
    "ReportStarted",
    "RetireAgreed",
    "RetireRefused",
    "RevokeLease",
    "SpawnFailed",
    "SpawnWorker",
    "StartPool",
    "StopPool",
    "Tick",
    "WorkerBlocked",
    "WorkerExited",
    "WorkerPool",
    "WorkerSpawned",
    "WorkerStarted",
    "WorkerState",
    "WorkerUnblocked",
]

LINGER = 1.0  # seconds an extra worker stays idle before it is asked to retire (Ray: 1 s)
RETRY_AFTER = 5.0  # a worker that refused (it owns something) is asked again after this


class WorkerState(enum.Enum):
    STARTING = "starting"
    IDLE = "idle"
    LEASED = "leased"
    ACTOR = "actor"
    RETIRING = "retiring"  # asked to retire; no lease may be granted on it meanwhile
    RETIRED = "retired"  # it agreed and is exiting


_LEAVING = (WorkerState.RETIRING, WorkerState.RETIRED)


@dataclass(frozen=True, slots=True)
class ActorLease:
    """An owner's request for a worker of its own to host an actor."""

    owner: str
    lease_id: int


# -- events --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartPool:
    """The node starts: fill the pool to ``num_workers``."""


@dataclass(frozen=True, slots=True)
class StopPool:
    """The node shuts down: spawn nothing more, refill nothing."""


@dataclass(frozen=True, slots=True)
class WorkerSpawned:
    """A process asked for by ``SpawnWorker`` exists (it has not said hello yet)."""

    worker_id: str
    actor: ActorLease | None = None


@dataclass(frozen=True, slots=True)
class SpawnFailed:
    """A process asked for by ``SpawnWorker`` could not be started."""

    actor: ActorLease | None = None


@dataclass(frozen=True, slots=True)
class WorkerStarted:
    """The worker connected and said hello: it can take work."""

    worker_id: str
    now: float


@dataclass(frozen=True, slots=True)
class WorkerExited:
    """The worker's process ended (any way: crash, kill, retirement)."""

    worker_id: str
    exitcode: int  # ``Popen.returncode``: negative for "killed by signal -exitcode"


@dataclass(frozen=True, slots=True)
class LeaseRequested:
    owner: str
    lease_id: int


@dataclass(frozen=True, slots=True)
class GrantUndelivered:
    """The ``granted`` message of ``GrantLease`` could not be sent: its owner is gone."""

    worker_id: str


@dataclass(frozen=True, slots=True)
class LeaseReturned:
    owner: str
    worker_id: str
    now: float


@dataclass(frozen=True, slots=True)
class ActorLeaseRequested:
    owner: str
    lease_id: int


@dataclass(frozen=True, slots=True)
class OwnerGone:
    """A process's connection to the node closed: its requests and task leases end, and the
    actors it owns die with it (fate-sharing)."""

    owner: str
    now: float


@dataclass(frozen=True, slots=True)
class WorkerBlocked:
    """A process is blocked in ``get`` (its slot is free while it waits)."""

    proc: str


@dataclass(frozen=True, slots=True)
class WorkerUnblocked:
    proc: str


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed (the node's housekeeping tick)."""

    now: float


@dataclass(frozen=True, slots=True)
class RetireAgreed:
    """Asked by ``AskToRetire``, the worker owns nothing and exits."""

    worker_id: str


@dataclass(frozen=True, slots=True)
class RetireRefused:
    """Asked by ``AskToRetire``, the worker still owns objects or actors (or did not answer)."""

    worker_id: str
    now: float


Event = (
    StartPool
    | StopPool
    | WorkerSpawned
    | SpawnFailed
    | WorkerStarted
    | WorkerExited
    | LeaseRequested
    | GrantUndelivered
    | LeaseReturned
    | ActorLeaseRequested
    | OwnerGone
    | WorkerBlocked
    | WorkerUnblocked
    | Tick
    | RetireAgreed
    | RetireRefused
)

# -- instructions --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpawnWorker:
    """Start a worker process; report it with ``WorkerSpawned`` (or ``SpawnFailed``)."""

    actor: ActorLease | None = None


@dataclass(frozen=True, slots=True)
class GrantLease:
    """Tell ``owner`` that ``worker_id`` is its for lease ``lease_id``; if the message cannot be
    sent, report ``GrantUndelivered``."""

    owner: str
    lease_id: int
    worker_id: str
    actor: bool = False


@dataclass(frozen=True, slots=True)
class RevokeLease:
    """Ask ``holder`` to give ``worker_id`` back (others are waiting)."""

    holder: str
    worker_id: str


@dataclass(frozen=True, slots=True)
class FailActorLease:
    """The worker meant for an actor died before it could host it."""

    owner: str
    lease_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class KillWorker:
    worker_id: str


@dataclass(frozen=True, slots=True)
class AskToRetire:
    """Ask the worker whether it may exit; report ``RetireAgreed`` or ``RetireRefused``."""

    worker_id: str


@dataclass(frozen=True, slots=True)
class ReportStarted:
    worker_id: str


@dataclass(frozen=True, slots=True)
class ReportDeath:
    """A worker's death to announce (stores, owners, events); ``retired``: it was no crash."""

    worker_id: str
    exitcode: int
    retired: bool


Instruction = (
    SpawnWorker
    | GrantLease
    | RevokeLease
    | FailActorLease
    | KillWorker
    | AskToRetire
    | ReportStarted
    | ReportDeath
)


@dataclass(frozen=True, slots=True)
class PoolFigures:
    size: int
    target: int
    idle: int
    retired: int
    refused: int


class _Worker:
    __slots__ = ("actor", "ask_after", "asked_at", "holder", "idle_since", "state", "worker_id")

    def __init__(self, worker_id: str, actor: ActorLease | None) -> None:
        self.worker_id = worker_id
        self.actor = actor
        self.state = WorkerState.STARTING
        self.holder: str | None = None
        self.idle_since = 0.0
        self.ask_after = 0.0  # when it may be asked to retire (again)
        self.asked_at = 0.0


class WorkerPool:
    """The pool of one node (see the module docstring for its rules and invariants)."""

    def __init__(self, num_workers: int) -> None:
        self.num_workers = num_workers
        self.workers: dict[str, _Worker] = {}
        self.idle: deque[str] = deque()  # longest idle first
        self.pending: deque[tuple[str, int]] = deque()  # (owner, lease id), first come first
        self.blocked: set[str] = set()
        self.spawning = 0  # pool workers asked for and not yet reported spawned
        self.actors_spawning = 0
        self.stopping = False
        self.retired = 0
        self.retire_refused = 0
        self.spawn_failures = 0
        self._pool_size = 0  # live pool workers (not actor workers), spawning included
        self._peak_target = num_workers

    # -- queries -------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Live workers that serve task leases, and those being spawned for the pool."""
        return self._pool_size

    @property
    def target(self) -> int:
        return self.num_workers + len(self.blocked)

    def state_of(self, worker_id: str) -> WorkerState | None:
        w = self.workers.get(worker_id)
        return None if w is None else w.state

    def holder_of(self, worker_id: str) -> str | None:
        w = self.workers.get(worker_id)
        return None if w is None else w.holder

    def figures(self) -> PoolFigures:
        return PoolFigures(
            size=self._pool_size,
            target=self.target,
            idle=len(self.idle),
            retired=self.retired,
            refused=self.retire_refused,
        )

    # -- events --------------------------------------------------------------------------------

    def handle(self, event: Event) -> list[Instruction]:
        """Apply one event; return what the node manager must do, in order."""
        # The hot events first: a lease is asked for and returned about once per task burst.
        match event:
            case LeaseRequested():
                return self._lease_requested(event)
            case LeaseReturned():
                return self._lease_returned(event)
            case WorkerBlocked():
                return self._blocked(event)
            case WorkerUnblocked():
                self.blocked.discard(event.proc)
                return []
            case Tick():
                return self._tick(event)
            case WorkerSpawned():
                return self._spawned(event)
            case WorkerStarted():
                return self._started(event)
            case WorkerExited():
                return self._exited(event)
            case GrantUndelivered():
                return self._grant_undelivered(event)
            case OwnerGone():
                return self._owner_gone(event)
            case ActorLeaseRequested():
                return self._actor_lease_requested(event)
            case RetireAgreed():
                return self._retire_agreed(event)
            case RetireRefused():
                return self._retire_refused(event)
            case SpawnFailed():
                return self._spawn_failed(event)
            case StartPool():
                return self._refill()
            case StopPool():
                self.stopping = True
                return []

    def _spawned(self, ev: WorkerSpawned) -> list[Instruction]:
        if ev.actor is None:
            self.spawning -= 1  # it stays counted in _pool_size, now as a worker
        else:
            self.actors_spawning -= 1
        self.workers[ev.worker_id] = _Worker(ev.worker_id, ev.actor)
        return []

    def _spawn_failed(self, ev: SpawnFailed) -> list[Instruction]:
        self.spawn_failures += 1
        if ev.actor is None:
            self.spawning -= 1
            self._pool_size -= 1
        else:
            self.actors_spawning -= 1
        return []

    def _started(self, ev: WorkerStarted) -> list[Instruction]:
        w = self.workers.get(ev.worker_id)
        if w is None or w.state is not WorkerState.STARTING:
            return []
        if w.actor is not None:
            w.state, w.holder = WorkerState.ACTOR, w.actor.owner
            return [
                GrantLease(w.actor.owner, w.actor.lease_id, w.worker_id, actor=True),
                ReportStarted(w.worker_id),
            ]
        self._to_idle(w, ev.now)
        out: list[Instruction] = self._serve()
        out.append(ReportStarted(w.worker_id))
        return out

    def _exited(self, ev: WorkerExited) -> list[Instruction]:
        w = self.workers.pop(ev.worker_id, None)
        if w is None:
            return []
        out: list[Instruction] = []
        if w.actor is not None and w.state is WorkerState.STARTING:
            out.append(
                FailActorLease(
                    w.actor.owner,
                    w.actor.lease_id,
                    f"worker {w.worker_id} exited with status {ev.exitcode}",
                )
            )
        if w.state is WorkerState.IDLE:
            self.idle.remove(w.worker_id)
        if w.actor is None:
            self._pool_size -= 1
        self.blocked.discard(w.worker_id)
        if self.stopping:
            return out
        out.append(ReportDeath(w.worker_id, ev.exitcode, retired=w.state is WorkerState.RETIRED))
        out += self._refill()
        return out

    def _lease_requested(self, ev: LeaseRequested) -> list[Instruction]:
        self.pending.append((ev.owner, ev.lease_id))
        out = self._serve()
        if self.pending:
            out += [
                RevokeLease(w.holder, w.worker_id)
                for w in self.workers.values()
                if w.state is WorkerState.LEASED and w.holder is not None and w.holder != ev.owner
            ]
        return out

    def _grant_undelivered(self, ev: GrantUndelivered) -> list[Instruction]:
        w = self.workers.get(ev.worker_id)
        if w is None or w.state is not WorkerState.LEASED:
            return []
        # Back at the head of the queue, as if never granted (its idle time runs on).
        w.state, w.holder = WorkerState.IDLE, None
        self.idle.appendleft(w.worker_id)
        return self._serve()

    def _lease_returned(self, ev: LeaseReturned) -> list[Instruction]:
        w = self.workers.get(ev.worker_id)
        if w is None or w.state is not WorkerState.LEASED or w.holder != ev.owner:
            return []
        self._to_idle(w, ev.now)
        return self._serve()

    def _actor_lease_requested(self, ev: ActorLeaseRequested) -> list[Instruction]:
        if self.stopping:
            return []
        self.actors_spawning += 1
        return [SpawnWorker(ActorLease(ev.owner, ev.lease_id))]

    def _owner_gone(self, ev: OwnerGone) -> list[Instruction]:
        self.pending = deque(p for p in self.pending if p[0] != ev.owner)
        out: list[Instruction] = []
        for w in self.workers.values():
            if w.holder != ev.owner:
                continue
            if w.state is WorkerState.LEASED:
                self._to_idle(w, ev.now)
            elif w.state is WorkerState.ACTOR:
                out.append(KillWorker(w.worker_id))  # actors fate-share with their owner
        out += self._serve()
        return out

    def _blocked(self, ev: WorkerBlocked) -> list[Instruction]:
        self.blocked.add(ev.proc)
        self._peak_target = max(self._peak_target, self.target)
        return self._refill()

    def _tick(self, ev: Tick) -> list[Instruction]:
        if self.stopping or self._pool_size <= self.target:
            return []
        # A worker asked to retire still counts toward the size until it exits (it is alive),
        # but not toward what is extra: else a slow exit would let the pool shrink below target.
        leaving = sum(w.state in _LEAVING for w in self.workers.values())
        if self._pool_size - leaving <= self.target:
            return []
        ripe = [
            w
            for w in (self.workers[wid] for wid in self.idle)
            if ev.now - w.idle_since >= LINGER and ev.now >= w.ask_after
        ]
        if not ripe:
            return []
        w = min(ripe, key=lambda x: x.idle_since)
        self.idle.remove(w.worker_id)
        w.state, w.asked_at = WorkerState.RETIRING, ev.now
        return [AskToRetire(w.worker_id)]

    def _retire_agreed(self, ev: RetireAgreed) -> list[Instruction]:
        w = self.workers.get(ev.worker_id)
        if w is None or w.state is not WorkerState.RETIRING:
            return []
        w.state = WorkerState.RETIRED  # it exits now; its death is reported as retirement
        self.retired += 1
        return []

    def _retire_refused(self, ev: RetireRefused) -> list[Instruction]:
        self.retire_refused += 1
        w = self.workers.get(ev.worker_id)
        if w is None or w.state is not WorkerState.RETIRING:
            return []
        self._to_idle(w, w.asked_at)
        w.ask_after = ev.now + RETRY_AFTER
        return self._serve()

    # -- rules ---------------------------------------------------------------------------------

    def _to_idle(self, w: _Worker, now: float) -> None:
        w.state, w.holder, w.idle_since = WorkerState.IDLE, None, now
        self.idle.append(w.worker_id)

    def _serve(self) -> list[Instruction]:
        out: list[Instruction] = []
        while self.pending and self.idle:
            owner, lease_id = self.pending.popleft()
            w = self.workers[self.idle.popleft()]
            w.state, w.holder = WorkerState.LEASED, owner
            out.append(GrantLease(owner, lease_id, w.worker_id))
        return out

    def _refill(self) -> list[Instruction]:
        if self.stopping:
            return []
        missing = self.target - self._pool_size
        if missing <= 0:
            return []
        self.spawning += missing
        self._pool_size += missing
        return [SpawnWorker() for _ in range(missing)]

    # -- invariants ----------------------------------------------------------------------------

    def validate(self) -> None:
        """Check the invariants of the module docstring.

        Raises:
            AssertionError: one does not hold (the message says which and where).
        """
        idle = [w.worker_id for w in self.workers.values() if w.state is WorkerState.IDLE]
        assert len(set(self.idle)) == len(self.idle), f"a worker is queued idle twice: {self.idle}"
        assert set(self.idle) == set(idle), f"idle queue {list(self.idle)} != IDLE workers {idle}"
        for w in self.workers.values():
            held = w.state in (WorkerState.LEASED, WorkerState.ACTOR)
            assert held == (w.holder is not None), f"{w.worker_id} is {w.state} with {w.holder}"
            if w.actor is None:
                assert w.state is not WorkerState.ACTOR, f"pool worker {w.worker_id} hosts actor"
            else:
                assert w.state in (WorkerState.STARTING, WorkerState.ACTOR), (
                    f"actor worker {w.worker_id} is {w.state}"
                )
        assert not (self.pending and self.idle), (
            f"requests {list(self.pending)} wait while {list(self.idle)} idle"
        )
        assert self.spawning >= 0 and self.actors_spawning >= 0, "negative spawn count"
        live = sum(w.actor is None for w in self.workers.values())
        assert self._pool_size == live + self.spawning, (
            f"pool size {self._pool_size} != {live} workers + {self.spawning} spawning"
        )
        if not self.stopping and not self.spawn_failures:
            assert self._pool_size >= self.target, (
                f"pool of {self._pool_size} below its target {self.target}"
            )
        assert self._pool_size <= self._peak_target, (
            f"pool of {self._pool_size} above the largest target it had ({self._peak_target})"
        )
