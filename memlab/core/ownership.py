"""Reference counting under ownership (Wang et al., NSDI'21): the table one process keeps.

Owns, for every object this process owns or borrows, the counts that keep it alive:

* ``local``: live ``ObjectRef`` instances in this process;
* ``tasks``: tasks this process submitted that take the object as an argument (top-level or
  nested) and have not replied yet;
* ``contained_in``: objects whose value holds a ref to it, while this process holds those;
* ``borrowers`` (owner only): other processes that hold it, each with the number of
  registrations it (or a lender on its behalf) made and has not released yet.

Borrower registrations are counted, not a set, because they come from several senders: a
borrower registers itself when it unpickles a ref, and a task's executor registers its caller
for the refs inside a result before replying. A borrower that let go of an object and got it
back may have its old release still in flight (batched) while the new registration arrives by
another connection. With a set the late release would erase the new borrow; with counts the
two commute. Each borrowed entry knows how many registrations it stands for
(``registrations``) and its release carries that number.

Owners also keep the lineage (the creating task's spec), the location (in-process memory or a
node's store), the size, state and call site.

Invariants (checked by ``validate``):

1. No premature free: an owned entry is freed only when ``local``, ``tasks``, ``contained_in``
   and ``borrowers`` are all empty. A handoff never opens a gap because the sender's count (a
   pending task, or a containing object) outlives the receiver's registration.
2. No leak: when they all reach zero the entry goes and a ``free`` instruction is returned for
   its value; a borrower's entry going to zero returns ``release_borrow`` for its owner.
3. Counts never go negative, and an entry is never both freed and present.

The table is a pure state machine: every change is a method that takes an event's fields and
returns a list of instructions (tuples) for the runtime to carry out; ``handle`` takes the same
events as tuples. It does no I/O and takes no lock: the runtime serialises calls.

Instructions::

    ("free", oid, location)          drop the value: location is None (in-process) or a node id
    ("release_borrow", oid, owner, n)  tell the owner to drop n registrations of this process
    ("holders", oid)                 an owned object's holders changed (for the event stream)
    ("forget", oid)                  drop a borrowed object's cached value
    ("dropped", oid, lineage)        an owned entry left the table; its lineage may go too

Lineage pinning: a finished task's owned arguments get ``lineage_refs`` (``pin_lineage``) so
that, after their values are freed, their entries and lineage stay while the task's results
may need rebuilding; ``unpin_lineage`` ends that when the results are gone.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

Instruction = tuple[Any, ...]

PENDING, READY, FAILED = "pending", "ready", "failed"

# Shared by every entry until it gets its first borrower / container: most objects never do,
# and two empty sets per entry would cost ~430 bytes of the owner's memory per object. It is
# a frozenset so that a mutation which forgot to go through Entry's adders fails loudly.
_NONE: Any = frozenset()
_NO_BORROWERS: Any = MappingProxyType({})  # the same, for the borrower counts


class Entry:
    """What this process knows of one object."""

    __slots__ = (
        "borrowers",
        "call_site",
        "contained_in",
        "contains",
        "lineage",
        "lineage_refs",
        "local",
        "location",
        "owned",
        "owner",
        "registrations",
        "size",
        "state",
        "tasks",
        "value_freed",
    )

    def __init__(self, owner: str, owned: bool, call_site: str | None = None) -> None:
        self.owner = owner
        self.owned = owned
        self.local = 0
        self.tasks = 0
        self.borrowers: dict[str, int] = _NO_BORROWERS  # see _NONE; grown by add_borrower_proc
        self.registrations = 0  # borrowed entries: registrations the owner counts for us
        self.contained_in: set[bytes] = _NONE  # see _NONE; grown by add_container
        self.contains: tuple[bytes, ...] = ()
        self.lineage: Any = None
        self.location: str | None = None
        self.size: int | None = None
        self.state = PENDING
        self.call_site = call_site
        self.lineage_refs = 0  # finished tasks whose results may need this object rebuilt
        self.value_freed = False  # kept for lineage only: the value itself is gone

    def add_borrower_proc(self, proc: str) -> None:
        if self.borrowers is _NO_BORROWERS:
            self.borrowers = {proc: 1}
        else:
            self.borrowers[proc] = self.borrowers.get(proc, 0) + 1

    def add_container(self, outer: bytes) -> None:
        if self.contained_in is _NONE:
            self.contained_in = {outer}
        else:
            self.contained_in.add(outer)

    def in_use(self) -> bool:
        return bool(self.local or self.tasks or self.contained_in or self.borrowers)

    def holders(self) -> dict[str, Any]:
        return {
            "local": self.local,
            "tasks": self.tasks,
            "contained_in": [o.hex() for o in self.contained_in],
            "borrowers": sorted(self.borrowers),
        }


class ReferenceTable:
    """The ownership and reference-count table of one process (see module docstring)."""

    def __init__(self, proc: str) -> None:
        self.proc = proc
        self.entries: dict[bytes, Entry] = {}

    # -- events --------------------------------------------------------------------------------

    def handle(self, event: tuple[Any, ...]) -> list[Instruction]:
        """Apply ``(name, *fields)``, name being a method of this class: ``("add_local", oid)``."""
        name, *fields = event
        if name.startswith("_") or name in ("handle", "validate", "get"):
            raise ValueError(f"unknown ownership event {name!r}")
        instructions: list[Instruction] = getattr(self, name)(*fields)
        return instructions

    def create_owned(
        self,
        oid: bytes,
        *,
        call_site: str | None,
        lineage: Any = None,
        state: str = PENDING,
        local: int = 1,
    ) -> list[Instruction]:
        """This process made a ref (``f.remote()`` or ``put``); it holds ``local`` refs to it."""
        if oid in self.entries:
            raise ValueError(f"object {oid.hex()} is already in the table")
        entry = Entry(self.proc, True, call_site)
        entry.local = local
        entry.lineage = lineage
        entry.state = state
        self.entries[oid] = entry
        # The creation event implies ``local`` creator refs (events.py): report only if unusual.
        return [] if local == 1 else [("holders", oid)]

    def add_local(self, oid: bytes, owner: str) -> tuple[bool, list[Instruction]]:
        """A new ObjectRef instance of ``oid`` exists here.

        Returns ``(needs_registration, instructions)``: True when this process did not know the
        object and must register as a borrower with its owner before the handoff completes
        (the entry already counts that registration).
        """
        entry = self.entries.get(oid)
        if entry is None:
            if owner == self.proc:
                raise KeyError(f"object {oid.hex()} is owned by this process but was already freed")
            entry = Entry(owner, False)
            entry.local = 1
            entry.registrations = 1
            self.entries[oid] = entry
            return True, []
        entry.local += 1
        return False, [("holders", oid)] if entry.owned else []

    def remove_local(self, oid: bytes) -> list[Instruction]:
        entry = self.entries.get(oid)
        if entry is None or entry.local <= 0:
            return []
        entry.local -= 1
        return self._check(oid, entry)

    def add_borrowed(
        self, oid: bytes, owner: str, contained_in: bytes | None, registered: bool = True
    ) -> list[Instruction]:
        """Someone registered this process as a borrower of ``oid`` on its behalf.

        Used for refs inside a task's return value: the executing worker registered us with the
        owner before replying (``registered``; not when we own ``oid`` or ran the task
        ourselves), and the containing object ``contained_in`` (ours) now holds it.
        """
        entry = self.entries.get(oid)
        if entry is None:
            if owner == self.proc:
                raise KeyError(f"object {oid.hex()} came back in a result but was already freed")
            entry = Entry(owner, False)
            self.entries[oid] = entry
        if registered and not entry.owned:
            entry.registrations += 1
        if contained_in is not None:
            entry.add_container(contained_in)
        return [("holders", oid)] if entry.owned else []

    def add_submitted(self, oids: list[bytes]) -> list[Instruction]:
        """A task that takes these objects as arguments was submitted by this process."""
        out: list[Instruction] = []
        for oid in oids:
            entry = self.entries.get(oid)
            if entry is None:
                raise KeyError(f"object {oid.hex()} passed to a task is not held by this process")
            entry.tasks += 1
            if entry.owned:
                out.append(("holders", oid))
        return out

    def remove_submitted(self, oids: list[bytes]) -> list[Instruction]:
        """The task that took these objects replied (or was given up)."""
        out: list[Instruction] = []
        for oid in oids:
            entry = self.entries.get(oid)
            if entry is None or entry.tasks <= 0:
                continue
            entry.tasks -= 1
            out.extend(self._check(oid, entry))
        return out

    def add_borrower(self, oid: bytes, borrower: str) -> list[Instruction]:
        """Owner side: ``borrower`` holds ``oid``. Returns [] and does nothing if already freed."""
        entry = self.entries.get(oid)
        if entry is None or not entry.owned:
            raise KeyError(f"object {oid.hex()} is not owned by {self.proc}")
        if borrower == self.proc:
            return []
        entry.add_borrower_proc(borrower)
        return [("holders", oid)]

    def remove_borrower(self, oid: bytes, borrower: str, count: int = 1) -> list[Instruction]:
        """``borrower`` released ``count`` of its registrations of ``oid``."""
        entry = self.entries.get(oid)
        if entry is None or borrower not in entry.borrowers:
            return []
        left = entry.borrowers[borrower] - count
        if left > 0:
            entry.borrowers[borrower] = left
            return []
        del entry.borrowers[borrower]
        return self._check(oid, entry)

    def remove_borrower_everywhere(self, borrower: str) -> list[Instruction]:
        """A borrower process died: it holds nothing any more."""
        out: list[Instruction] = []
        for oid, entry in list(self.entries.items()):
            if borrower in entry.borrowers:
                del entry.borrowers[borrower]
                out.extend(self._check(oid, entry))
        return out

    def set_contains(self, outer: bytes, inner: list[bytes]) -> list[Instruction]:
        """The value of owned object ``outer`` holds refs to ``inner``; they live while it does."""
        entry = self.entries.get(outer)
        if entry is None:
            raise KeyError(f"object {outer.hex()} is not in the table")
        entry.contains = tuple(inner)
        out: list[Instruction] = []
        for oid in inner:
            child = self.entries.get(oid)
            if child is None:
                raise KeyError(f"object {oid.hex()} inside {outer.hex()} is not held here")
            child.add_container(outer)
            if child.owned:
                out.append(("holders", oid))
        return out

    def release_if_unused(self, oid: bytes) -> list[Instruction]:
        """Drop ``oid`` if nothing holds it (a result whose refs were all gone on arrival)."""
        entry = self.entries.get(oid)
        return [] if entry is None else self._check(oid, entry)

    def pin_lineage(self, oids: list[bytes]) -> list[Instruction]:
        """A finished task read these owned objects: keep their entries (and lineage) while its
        results may need rebuilding, even after their values are freed."""
        for oid in oids:
            entry = self.entries.get(oid)
            if entry is not None and entry.owned:
                entry.lineage_refs += 1
        return []

    def unpin_lineage(self, oids: list[bytes]) -> list[Instruction]:
        out: list[Instruction] = []
        for oid in oids:
            entry = self.entries.get(oid)
            if entry is not None and entry.owned and entry.lineage_refs > 0:
                entry.lineage_refs -= 1
                out.extend(self._check(oid, entry))
        return out

    def set_ready(self, oid: bytes, location: str | None, size: int | None) -> list[Instruction]:
        entry = self.entries.get(oid)
        if entry is None:
            return []
        entry.value_freed = False
        entry.state = READY
        entry.location = location
        entry.size = size
        return []

    def set_failed(self, oid: bytes) -> list[Instruction]:
        entry = self.entries.get(oid)
        if entry is not None:
            entry.state = FAILED
        return []

    # -- queries -------------------------------------------------------------------------------

    def get(self, oid: bytes) -> Entry | None:
        return self.entries.get(oid)

    def validate(self) -> None:
        """Raise AssertionError if an invariant does not hold."""
        for oid, entry in self.entries.items():
            assert entry.local >= 0 and entry.tasks >= 0, (oid.hex(), entry.local, entry.tasks)
            assert entry.in_use() or entry.lineage_refs > 0, (
                f"entry {oid.hex()} has no holder and no lineage use and should be gone"
            )
            assert entry.in_use() or not entry.owned or entry.value_freed, oid.hex()
            assert entry.owned == (entry.owner == self.proc), oid.hex()
            assert not (entry.borrowers and not entry.owned), f"borrowers on borrowed {oid.hex()}"
            assert all(n > 0 for n in entry.borrowers.values()), (oid.hex(), entry.borrowers)
            assert entry.registrations >= 0 and not (entry.owned and entry.registrations), (
                oid.hex(),
                entry.registrations,
            )
            for outer in entry.contained_in:
                assert outer in self.entries, f"{oid.hex()} contained in freed {outer.hex()}"

    # -- internals -----------------------------------------------------------------------------

    def _check(self, oid: bytes, entry: Entry) -> list[Instruction]:
        if entry.in_use():
            return [("holders", oid)] if entry.owned else []
        out: list[Instruction] = []
        if entry.owned:
            if entry.value_freed:
                if entry.lineage_refs > 0:
                    return out
            else:
                entry.value_freed = True
                out.append(("free", oid, entry.location))
            if entry.lineage_refs > 0:
                out.extend(self._release_contained(oid, entry))
                return out  # the value is gone; the entry stays for lineage
            del self.entries[oid]
            out.append(("dropped", oid, entry.lineage))
        else:
            del self.entries[oid]
            out = (
                [("release_borrow", oid, entry.owner, entry.registrations)]
                if entry.registrations
                else []
            )
            out.append(("forget", oid))
        out.extend(self._release_contained(oid, entry))
        return out

    def _release_contained(self, oid: bytes, entry: Entry) -> list[Instruction]:
        out: list[Instruction] = []
        contains, entry.contains = entry.contains, ()
        for inner in contains:
            child = self.entries.get(inner)
            if child is not None and oid in child.contained_in:
                child.contained_in.discard(oid)
                out.extend(self._check(inner, child))
        return out
