"""Promoting a surviving copy when a node dies with primary copies on it.

The choice of holder and the retries when a copy went meanwhile are ``core.promotion``'s
(``PromotionPlan``); this shell asks the nodes and feeds their answers in.

When a node dies, the objects an owner had there lose their primary copy, but a store on another
node may still hold a secondary copy (made when a task there read the object). Before the owner
rebuilds such an object from lineage, or fails it, it asks the live nodes which copies they hold
and makes one of them primary. The object is then ready again at once, without re-running its
task, even when its lineage was evicted or its retries are spent. Ray's recovery also pins an
existing copy first and reconstructs only when none is left.

::

    node_died ─(lock) owned objects there: slots made pending─► "holds"? to every live node
              ─► "promote" at one holder, naming the other holders ─(lock) put_stored there
                                                  └─ no copy left ─► Recovery.objects_lost

Invariants:
    * While its promotion is asked for, an object's slot is pending: readers and borrowers wait
      for the outcome and never read the dead node's address.
    * One store holds an object's primary copy: a copy is promoted at one node only, and the
      other holders are registered there, so their copies are deleted with it.
    * A promoted copy that is no longer wanted when the answer comes (the object was freed, or a
      rebuild already took it over) is deleted: nobody else would.
    * A promoted copy is the object's location in the owner's table too, so a free reaches it
      even after its slot was reset; a later rebuild drops it like any copy thought lost (it
      has no writer: the node records none for a copy).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, cast

from memlab.core.promotion import PromotionPlan
from memlab.exceptions import ConnectionClosedError, MemlabError

if TYPE_CHECKING:
    from memlab.runtime.coreworker.core_worker import CoreWorker

__all__ = ["promote_copies"]

log = logging.getLogger("memlab.runtime")

# A node that does not answer this quickly is dying too: its copies do not count.
_TIMEOUT = 10.0


def promote_copies(core: CoreWorker, oids: list[bytes], nodes: list[str]) -> PromotionPlan:
    """Find copies of ``oids`` on ``nodes`` and make one copy of each primary (no lock held).

    Args:
        core: The owner.
        oids: Owned objects whose primary copy was on a node that died.
        nodes: The nodes alive now.

    Returns:
        The finished plan: ``promoted`` names the node now holding the primary copy, per object
        promoted (objects with no copy left are absent), and ``outcome`` says what to do with
        each object.
    """
    plan = PromotionPlan()
    for node in nodes:
        plan.holders_found(node, _ask(core, node, {"t": "holds", "oids": oids}))
    while not plan.finished():  # a copy may be evicted before its promotion: try the next holder
        for node, (batch, others) in plan.next_round().items():
            done = _ask(core, node, {"t": "promote", "oids": batch, "copies": others})
            plan.answered(node, batch, done)
    return plan


def _ask(core: CoreWorker, node: str, request: dict[str, object]) -> list[bytes]:
    try:
        reply, _ = core.conn_to(node).request(request, timeout=_TIMEOUT)
    except (ConnectionClosedError, MemlabError, OSError) as exc:
        log.info("%s: node %s did not answer %r: %s", core.proc, node, request["t"], exc)
        return []
    return list(cast("list[bytes]", reply.get("oids", ())))
