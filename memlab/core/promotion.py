"""Promotion: choosing which surviving copy of a lost primary becomes the primary.

Owns, for the owned objects whose primary copy was on a node that died, the live nodes that
said they hold a copy (``holders``), the holders not tried yet (``candidates``), and the
outcome (``promoted``: object -> node now holding its primary copy). The runtime shell
(``runtime.coreworker.promotion``) asks the nodes and feeds the answers in.

::

    holders_found ──► next_round: one batch per node, each object at its first candidate
                      (the batch names the object's other holders, whose copies the node
                       registers so they go with it)
                 ◄── answered(node, batch, done): done ─► promoted; the rest try their
                      next holder (a copy may be evicted before its promotion)
    finished once no candidate is left ──► outcome(oid, wanted): PROMOTED, DELETE_COPY (no
                      longer wanted), LOST (no copy left: rebuild or fail), NOTHING

Invariants (``validate``):
    * An object is promoted at one node only, one of its holders, and is then no candidate.
    * A candidate's remaining holders are a suffix of its holders, never empty.

Pure: no I/O, no lock.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

__all__ = ["Outcome", "PromotionPlan", "PromotionRound"]

# node -> (objects to promote there, their other holders)
PromotionRound = dict[str, tuple[list[bytes], dict[bytes, list[str]]]]


class Outcome(enum.Enum):
    """What the owner does with an object once its promotion is over."""

    # A copy is primary now: it becomes the object's slot and its location in the owner's
    # table, so a later free reaches it even after the slot was reset.
    PROMOTED = "promoted"
    # A copy was promoted but the object is no longer wanted (freed, or a rebuild took it
    # over meanwhile): delete it, nobody else would.
    DELETE_COPY = "delete copy"
    LOST = "lost"  # no copy is left and the object is still wanted: rebuild it or fail it
    NOTHING = "nothing"  # no copy is left and nobody wants it


class PromotionPlan:
    """Which holder each lost primary is promoted at, tried in the order the nodes answered."""

    def __init__(self) -> None:
        self.holders: dict[bytes, list[str]] = {}
        self.candidates: dict[bytes, list[str]] = {}
        self.promoted: dict[bytes, str] = {}

    def holders_found(self, node: str, oids: Iterable[bytes]) -> None:
        """``node`` holds a copy of each of ``oids``."""
        for oid in oids:
            if oid in self.promoted:
                continue
            self.holders.setdefault(oid, []).append(node)
            self.candidates.setdefault(oid, []).append(node)

    def finished(self) -> bool:
        return not self.candidates

    def next_round(self) -> PromotionRound:
        """One request per node: the objects whose next candidate it is."""
        batches: PromotionRound = {}
        for oid, where in self.candidates.items():
            node = where[0]
            batch, others = batches.setdefault(node, ([], {}))
            batch.append(oid)
            others[oid] = [n for n in self.holders[oid] if n != node]
        return batches

    def answered(self, node: str, batch: Iterable[bytes], done: Iterable[bytes]) -> None:
        """``node`` promoted the objects in ``done``, out of ``batch`` asked of it."""
        promoted_here = set(done)
        for oid in batch:
            where = self.candidates.get(oid)
            if where is None or where[0] != node:
                continue  # not asked of this node in this round
            if oid in promoted_here:
                self.promoted[oid] = node
                del self.candidates[oid]
            else:
                where.pop(0)
                if not where:
                    del self.candidates[oid]

    def outcome(self, oid: bytes, wanted: bool) -> Outcome:
        """The fate of ``oid`` after the plan finished; ``wanted``: its slot still waits for
        this promotion (not freed, no rebuild took it over)."""
        if oid in self.promoted:
            return Outcome.PROMOTED if wanted else Outcome.DELETE_COPY
        return Outcome.LOST if wanted else Outcome.NOTHING

    def validate(self) -> None:
        """Raise AssertionError if an invariant does not hold."""
        for oid, node in self.promoted.items():
            assert oid not in self.candidates, f"{oid.hex()} promoted and still a candidate"
            assert node in self.holders.get(oid, ()), f"{oid.hex()} promoted at a non-holder"
        for oid, where in self.candidates.items():
            holders = self.holders[oid]
            assert where, f"{oid.hex()} is a candidate with no holder left"
            assert holders[len(holders) - len(where) :] == where, (oid.hex(), holders, where)
