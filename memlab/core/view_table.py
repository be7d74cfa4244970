"""A keyed table of view rows that answers "what changed since version V" with deltas.

Owns one section of the dashboard's view data (objects, graph nodes, graph edges, workers,
nodes, incidents) as the collector shows it. Each :meth:`ViewTable.sync` is given the section's
current entries as ``(key, fingerprint, source)``; a row is rebuilt (``make_row(source)``) only
when its fingerprint differs from the last sync, so syncing 10,000 unchanged objects costs one
tuple comparison each. Rows and removals are stamped with the version of the sync that made
them, so any number of readers, each at its own version, get exactly what they miss.

::

    sync(entries, version=7) ──► rows changed: stamped 7 ─┐
                                 keys gone:   removed at 7 ├─► delta(since=5) = upserts and
                                                           │   removals stamped 6..7
    removals older than the bound are forgotten ──► floor ─┘   (since < floor: a reset)

Invariants (checked by :meth:`ViewTable.validate`):
    * A key is either live (in the rows) or removed, never both.
    * Every stamp is at most the latest synced version; removals kept are at most
      ``max_removed`` and none older than ``floor``.
    * ``delta(since)`` applied to the table as it was at ``since`` gives the table as it is now.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["ViewTable"]


class ViewTable:
    """Rows by key, each stamped with the version that last changed it.

    Attributes:
        name: The section this table serves (used in messages).
        floor: Removals at or below this version were forgotten; a reader older than it gets a
            reset instead of a delta.
        version: The version of the last sync that changed something.
    """

    def __init__(self, name: str, max_removed: int = 50_000) -> None:
        """Create an empty table.

        Args:
            name: The section's name.
            max_removed: How many removals are remembered for readers that lag behind.

        Raises:
            ValueError: If ``max_removed`` is not positive.
        """
        if max_removed <= 0:
            raise ValueError(f"max_removed must be positive, got {max_removed!r}; pass e.g. 50_000")
        self.name = name
        self.max_removed = max_removed
        self.floor = 0
        self.version = 0
        self._fingerprints: dict[str, Any] = {}
        self._rows: dict[str, dict[str, Any]] = {}
        self._stamps: dict[str, int] = {}
        self._removed: OrderedDict[str, int] = OrderedDict()  # key -> version, oldest first

    def __len__(self) -> int:
        return len(self._rows)

    def rows(self) -> dict[str, dict[str, Any]]:
        """The live rows by key (shared, not copied: readers must not mutate them)."""
        return self._rows

    def sync(
        self,
        entries: Iterable[tuple[str, Any, Any]],
        make_row: Callable[[Any], dict[str, Any]],
        version: int,
    ) -> int:
        """Make the table hold exactly ``entries``; returns how many keys changed.

        Args:
            entries: ``(key, fingerprint, source)`` for every row the section has now. The
                fingerprint is compared with ``==`` to the last one; equal means unchanged.
            make_row: Builds a key's row from its ``source`` (called only for changed keys).
            version: The stamp for what changes; greater than any earlier sync's.

        Raises:
            ValueError: If ``version`` does not grow.
        """
        if version <= self.version:
            raise ValueError(
                f"view table {self.name!r}: version {version} is not after {self.version}; "
                "each sync needs a greater version"
            )
        old = self._fingerprints
        new: dict[str, Any] = {}
        changed = 0
        rows, stamps, removed = self._rows, self._stamps, self._removed
        for key, fingerprint, source in entries:
            new[key] = fingerprint
            if key in old and old[key] == fingerprint:
                continue
            rows[key] = make_row(source)
            stamps[key] = version
            if removed:
                removed.pop(key, None)
            changed += 1
        for key in old.keys() - new.keys():
            del rows[key]
            del stamps[key]
            removed[key] = version
            changed += 1
        while len(removed) > self.max_removed:
            _, forgotten = removed.popitem(last=False)
            self.floor = max(self.floor, forgotten)
        self._fingerprints = new
        if changed:
            self.version = version
        return changed

    def delta(self, since: int) -> dict[str, Any] | None:
        """What a reader at version ``since`` lacks, or None when it is up to date.

        Returns:
            ``{"reset": bool, "upsert": [rows], "remove": [keys]}``. With ``reset`` the reader
            drops what it has first (``since`` was 0 or older than :attr:`floor`) and
            ``upsert`` holds every row.
        """
        if since >= self.version and since >= self.floor:
            return None
        if since <= 0 or since < self.floor:
            return {"reset": True, "upsert": list(self._rows.values()), "remove": []}
        upsert = [self._rows[k] for k, stamp in self._stamps.items() if stamp > since]
        remove = [k for k, stamp in self._removed.items() if stamp > since]
        return {"reset": False, "upsert": upsert, "remove": remove}

    def validate(self) -> None:
        """Check the invariants in the module docstring.

        Raises:
            AssertionError: Naming the broken invariant and the key.
        """
        assert self._rows.keys() == self._stamps.keys() == self._fingerprints.keys(), (
            f"{self.name}: rows, stamps and fingerprints disagree"
        )
        for key, stamp in self._stamps.items():
            assert key not in self._removed, f"{self.name}: {key} is both live and removed"
            assert stamp <= self.version, f"{self.name}: {key} stamped after the table version"
        assert len(self._removed) <= self.max_removed, f"{self.name}: too many removals kept"
        for key, stamp in self._removed.items():
            assert self.floor <= stamp <= self.version, f"{self.name}: removal of {key} misdated"
