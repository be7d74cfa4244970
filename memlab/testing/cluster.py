"""Node-level fault injection for the simulated cluster (run in the driver).

``kill_node`` does what losing a machine does: SIGKILL of its node manager and workers, and its
shared memory is gone. ``kill_owner`` kills a worker that owns objects, so their borrowers see
``OwnerDiedError``. ``drop_copies`` deletes a node's secondary copies, as memory pressure
would. ``add_node`` brings capacity back (a real failure does not). ``chaos``
kills at random for a while, re-adding nodes so the cluster keeps working, and reports what it
did.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from memlab.testing.faults import driver_runtime, kill_worker

__all__ = [
    "ChaosReport",
    "add_node",
    "chaos",
    "delete_copy",
    "drop_copies",
    "kill_node",
    "kill_owner",
    "nodes_alive",
]


def _runtime() -> Any:
    return driver_runtime()


def kill_node(node_id: str) -> None:
    """SIGKILL node ``node_id``'s manager and workers; its shared memory is lost.

    Objects with a copy on another node are served from it (their owners promote it); those
    whose only copy was there are rebuilt from lineage by their owners when needed.
    ``node-0`` hosts the driver (the head node) and cannot be killed.
    """
    _runtime().nodes.kill_node(node_id)


def drop_copies(node_id: str) -> int:
    """Delete the secondary copies in node ``node_id``'s store, as eviction under memory
    pressure would (a copy read through a live view keeps its memory until the view goes);
    returns how many went.

    A node's death loses only objects with no copy left elsewhere (owners promote a surviving
    copy); dropping copies first makes what a later ``kill_node`` loses certain.
    """
    runtime = _runtime()
    if node_id not in runtime.nodes.alive:
        raise ValueError(f"no alive node {node_id!r}; alive nodes are {runtime.nodes.alive}")
    reply, _ = runtime.core.conn_to(node_id).request({"t": "drop_copies"}, timeout=30)
    return int(reply["count"])


def delete_copy(node_id: str, ref: Any) -> None:
    """Delete ``ref``'s copy from node ``node_id``'s store behind its owner's back, as a
    corrupted store would; the owner finds it lost when it next needs the value."""
    _runtime().core.conn_to(node_id).send({"t": "delete", "oids": [ref.binary]})


def add_node(num_workers: int = 1, object_store_memory: int | None = None) -> str:
    """Start one more simulated node and return its id once it is ready."""
    node_id: str = _runtime().add_node(num_workers, object_store_memory)
    return node_id


def kill_owner(worker_id: str) -> str:
    """Kill worker ``worker_id``, which owns objects (made by tasks it ran): fate-sharing."""
    return str(kill_worker(worker_id))


def nodes_alive() -> list[str]:
    return list(_runtime().nodes.alive)


@dataclass
class ChaosReport:
    workers_killed: list[str] = field(default_factory=list)
    nodes_killed: list[str] = field(default_factory=list)
    nodes_added: list[str] = field(default_factory=list)


def chaos(
    duration: float,
    rate: float = 1.0,
    kinds: tuple[str, ...] = ("worker", "node"),
    seed: int | None = None,
    stop: threading.Event | None = None,
) -> ChaosReport:
    """Kill random workers (and non-head nodes, re-adding one each time) for ``duration``
    seconds, ``rate`` kills a second on average. Blocks; run it in a thread beside a workload.
    """
    rng = random.Random(seed)
    runtime = _runtime()
    report = ChaosReport()
    deadline = time.monotonic() + duration
    stop = stop or threading.Event()
    while not stop.wait(rng.expovariate(rate)) and time.monotonic() < deadline:
        kind = rng.choice(kinds)
        try:
            if kind == "node" and len(runtime.nodes.alive) > 1:
                victim = rng.choice(runtime.nodes.alive[1:])
                size = runtime.nodes.sizes[victim]
                runtime.nodes.kill_node(victim)
                report.nodes_killed.append(victim)
                report.nodes_added.append(runtime.add_node(size))
            else:
                report.workers_killed.append(str(runtime.nodes.kill_worker()))
        except ValueError:
            continue  # nothing to kill at this instant (e.g. workers still starting)
    return report
