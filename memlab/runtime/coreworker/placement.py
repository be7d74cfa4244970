"""Node affinity: tasks and actors bound to one node, and the leases that serve them.

A task (or an actor's creation) may carry a ``NodeAffinity``: run on that node. The owner asks
that node's manager for the lease, and a node manager only grants its own workers, so a task
with an affinity runs there or nowhere. If the node is not alive (it died, or never joined), a
hard affinity fails the task with ``TaskUnschedulableError``; a soft one drops the affinity and
the task runs wherever the submitter's usual choice puts it. This is the mechanism under Ray's
``NodeAffinitySchedulingStrategy(node_id, soft)``; tests reach it through
``memlab.testing.placed_on``, which sets ``AFFINITY`` for the ``.remote()`` calls in its block.

The submitter diverts a ready task with an affinity from its queue into ``PlacedTasks``, which
holds it per node until a lease on that node is free::

    queue ─► (affinity?) ─► held[node] ─► free lease on node ─► pushed
                                 │ no lease free there ─► lease request to that node
                                 └ node not alive ─► hard: fail  /  soft: back to the queue

``PlacedTasks`` decides; the submitter (holding its lock) does what ``Step`` says.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from memlab.exceptions import TaskUnschedulableError
from memlab.runtime.coreworker.pipelining import free_lease

if TYPE_CHECKING:
    from memlab.runtime.coreworker.task_spec import TaskSpec


@dataclass(frozen=True, slots=True)
class NodeAffinity:
    """Run on ``node``; if it is not alive, fail (``soft=False``) or run anywhere (``soft``)."""

    node: str
    soft: bool = False


# The affinity that ``.remote()`` calls made in this context carry (``memlab.testing.placed_on``).
AFFINITY: ContextVar[NodeAffinity | None] = ContextVar("memlab_node_affinity", default=None)


def not_alive(node: str, dead: Mapping[str, Any]) -> str:
    """Why ``node`` cannot take work, in words for an error message."""
    return "died" if node in dead else "is not a node of this session"


def unschedulable(spec: TaskSpec, node: str, dead: Mapping[str, Any]) -> TaskUnschedulableError:
    return TaskUnschedulableError(spec.name, spec.task_id.hex(), node, not_alive(node, dead))


def actor_node(affinity: NodeAffinity | None, alive: list[str], turn: int) -> str | None:
    """The node to start an actor on: its affinity's if alive, else round robin by ``turn``
    (no affinity, or a soft one whose node is gone); None for a hard affinity to a node that
    is not alive."""
    if affinity is not None and affinity.node in alive:
        return affinity.node
    if affinity is not None and not affinity.soft:
        return None
    return alive[turn % len(alive)]


@dataclass(slots=True)
class Step:
    """What the submitter must do for its placed tasks after one ``PlacedTasks.pump``."""

    requests: list[str] = field(default_factory=list)  # one lease request per entry, to that node
    unschedulable: list[tuple[TaskSpec, str]] = field(default_factory=list)  # hard, node gone
    unpinned: list[TaskSpec] = field(default_factory=list)  # soft, node gone: run anywhere


class PlacedTasks:
    """An owner's ready tasks that wait for a lease on the node their affinity names."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held: dict[str, deque[TaskSpec]] = {}

    def hold(self, spec: TaskSpec) -> None:
        affinity = spec.node_affinity
        assert affinity is not None
        specs = self.held.get(affinity.node)
        if specs is None:
            specs = self.held[affinity.node] = deque()
        specs.append(spec)

    def pump(
        self,
        leases: Iterable[Any],
        alive: list[str],
        requested: Mapping[str, int],
        max_leases: int,
        now: float,
        take: Callable[[Any, TaskSpec], None],
    ) -> Step:
        """Give held tasks to free leases on their nodes (``take(lease, spec)``; it must add
        the spec to the lease's ``inflight``), and say which leases to ask for and which tasks
        can no longer be placed. ``requested`` counts lease requests awaiting a grant."""
        step = Step()
        for node, specs in list(self.held.items()):
            if node not in alive:
                del self.held[node]
                for spec in specs:
                    if spec.cancelled:
                        continue  # already failed by cancel()
                    if spec.node_affinity is not None and spec.node_affinity.soft:
                        step.unpinned.append(spec)
                    else:
                        step.unschedulable.append((spec, node))
                continue
            mine = [lease for lease in leases if lease.node == node]
            asked = requested.get(node, 0)
            may_lease_more = len(mine) + asked < max_leases
            while specs:
                if specs[0].cancelled:
                    specs.popleft()
                    continue
                lease = free_lease(mine, may_lease_more, now)
                if lease is None:
                    break
                take(lease, specs.popleft())
            if not specs:
                del self.held[node]
                continue
            wanted = min(len(specs), max_leases - len(mine)) - asked
            step.requests.extend([node] * max(0, wanted))
        return step
