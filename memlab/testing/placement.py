"""Put a test's tasks and actors on the node it names, by the runtime's own means.

``placed_on(node)`` gives every ``.remote()`` call made in its block (tasks and actor
creations, in this thread) a node affinity: the owner leases a worker on that node only, so the
task runs there every time, with no batches of sleeping tasks and retries::

    with placed_on("node-1"):
        ref = make_big.remote()      # its primary copy is in node-1's store
    kill_node("node-1")

A hard affinity (the default) fails the task with ``TaskUnschedulableError`` when the node is
not alive; ``soft=True`` runs it anywhere then, which is what a test wants when the node is
killed later and the object is rebuilt from lineage (a rebuild re-runs the same spec).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from memlab.runtime.coreworker.placement import AFFINITY, NodeAffinity


@contextmanager
def placed_on(node_id: str, *, soft: bool = False) -> Iterator[None]:
    """Make ``.remote()`` calls in this block run on node ``node_id`` (see the module)."""
    token = AFFINITY.set(NodeAffinity(node_id, soft))
    try:
        yield
    finally:
        AFFINITY.reset(token)
