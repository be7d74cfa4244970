"""The narrow interfaces the core worker's services see of each other.

``CoreWorker`` builds its services (``peers``, ``refcounting``, ``getter``, ``owner_service``,
``failures``, ``housekeeping``, ``submitter``, ...) and hands each one only the interfaces below
for what it needs of the others, so a service's dependencies read off its constructor and no
service reaches into another's state. The lock, the reference table and the memory store are
shared data structures, passed as they are.

Who provides what::

    Messaging      peers.Peers                connections, handler registry, send-after-unlock
    RefApplier     refcounting.RefCounting    ownership instructions, batched deletes/releases
    Fetching       getter.Getter              which borrowed values were asked of their owner
    Lineage        recovery.Recovery          rebuilds, lineage kept while results live
    Scheduling     submitter.Submitter        tasks, leases, what is runnable
    ActorScope /   actors.ActorManager        actors whose creation ref went out of scope,
      ActorDeaths                             and those that died with a process or a node
    WorkerHooks    worker.executor.Executor   what a worker adds (the driver keeps the defaults)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from memlab.protocol.transport import Connection
    from memlab.runtime.coreworker.task_spec import TaskSpec

#: A message handler: the connection it came on, its header and its payload.
Handler = Callable[["Connection", dict[str, Any], bytes], None]
#: Called with the peer's name and its connection when a connection to a peer closes.
PeerLostListener = Callable[[str, "Connection"], None]


class Messaging(Protocol):
    """Connections to the other processes of the session (``peers.Peers``)."""

    dead: dict[str, dict[str, Any]]

    def conn_to(self, peer: str) -> Connection: ...

    def send_later(self, peer: str, header: dict[str, Any]) -> None: ...

    def drain_outbox(self) -> None: ...

    def send_or_drop(self, peer: str, header: dict[str, Any]) -> None: ...

    def register(self, kind: str, handler: Handler, *, replace: bool = False) -> None: ...

    def on_peer_lost(self, listener: PeerLostListener) -> None: ...


class RefApplier(Protocol):
    """Carries out the reference table's instructions (``refcounting.RefCounting``)."""

    def apply(self, instructions: list[Any]) -> None: ...

    def queue_delete(self, node: str, oid: bytes) -> None: ...

    def queue_release(self, owner: str, oid: bytes, count: int) -> None: ...


class Fetching(Protocol):
    """The borrower's record of values asked of their owners (``getter.Getter``)."""

    def forget(self, oid: bytes) -> None: ...

    def never_ask(self, oid: bytes) -> None: ...

    def mark_missing(self, oid: bytes, owner: str, node: str | None) -> None: ...


class Lineage(Protocol):
    """Rebuilding lost objects and the lineage kept for it (``recovery.Recovery``)."""

    def objects_lost(self, oids: list[bytes], freed: bool = False) -> list[Any]: ...

    def lineage_dropped(self, spec: TaskSpec) -> list[Any]: ...


class Scheduling(Protocol):
    """The owner's tasks and leases, as the other services see them (``Submitter``)."""

    tasks: dict[bytes, TaskSpec]
    max_leases: int

    def kick(self) -> None: ...

    def idle(self) -> bool: ...

    def housekeeping(self) -> None: ...

    def after_node_died(self, node: str) -> None: ...

    def on_worker_died(self, worker: str, info: dict[str, Any]) -> None: ...


class ActorScope(Protocol):
    """Actors whose creation ref this process owns (``actors.ActorManager``)."""

    by_creation: dict[bytes, bytes]

    def out_of_scope(self, oid: bytes) -> None: ...


class ActorDeaths(Protocol):
    """What the actor manager does when a process or node dies (``actors.ActorManager``)."""

    def node_died(self, node: str) -> None: ...

    def worker_died(self, worker: str, info: dict[str, Any]) -> None: ...

    def owner_died(self, owner: str) -> None: ...


def _not_busy() -> bool:
    return False


def _not_blocking(blocked: bool) -> None:
    pass


def _nothing_to_flush() -> None:
    pass


@dataclass(frozen=True)
class WorkerHooks:
    """What a worker's executor adds to its core (``CoreWorker.set_worker_hooks``); the
    driver runs no tasks and keeps these defaults."""

    #: Whether a task runs, waits or has unflushed output here (keeps housekeeping awake and
    #: a retiring worker alive).
    busy: Callable[[], bool] = _not_busy
    #: Called with True when the running task blocks in ``get``/``wait`` and False after: the
    #: executor hands back the tasks queued behind it.
    on_block: Callable[[bool], None] = _not_blocking
    #: Called at the end of every housekeeping round: announce running tasks, flush output.
    on_flush: Callable[[], None] = _nothing_to_flush
