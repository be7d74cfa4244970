"""The kernel's copy of the dashboard's view data: collector deltas in, widget messages out.

Owns the sections the widget shows, as the collector computed them
(``memlab.state.view``, see :mod:`memlab.core.dashboard_view`), merged by key, plus the one
thing only the kernel knows: which notebook names hold each object (``names``, from an optional
provider). It turns each collector delta into the message the browser applies, numbered so the
browser can tell whether it missed one::

    memlab.state.view(since=version) ──► apply() ──► {"type": "delta", "base": n-1, "seq": n,
                                                       "sections": {name: {reset, upsert,
                                                                           remove}}}
                                      keyframe() ──► {"seq": n, "sections": {name: [rows]}}

    (object rows travel as columns and lists, {"cols", "rows"}: see ``upserted_rows``)

A browser whose copy is at ``seq`` applies a delta only when its ``base`` equals ``seq``;
otherwise it waits for the next keyframe (which the widget also syncs as its state, so a view
opened later starts from it).

Merging is cheap (dict updates of the changed rows); everything expensive happened in the
collector. Thread-safe: the publisher thread applies, the kernel's main thread may read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["KEYS", "OBJECT_COLUMNS", "NamesProvider", "ViewState", "upserted_rows"]

#: The field (or fields) that key each section's rows; the browser uses the same rule.
KEYS: dict[str, tuple[str, ...]] = {
    "summary": ("key",),
    "nodes": ("node_id",),
    "workers": ("worker_id",),
    "objects": ("object_id",),
    "graph_nodes": ("id",),
    "graph_edges": ("src", "kind", "dst"),
    "incidents": ("id",),
}

#: Returns, for the objects the notebook holds, the names that hold them (``{"3f2a…": ["x",
#: "parts[2]", "Out[4]"]}``). Called from the publisher thread, at most every
#: ``names_interval`` seconds; it must be cheap or bound its own cost.
NamesProvider = Callable[[], Mapping[str, Sequence[str]]]


#: Object rows go to the browser as columns and lists (``{"cols": [...], "rows": [[...]]}``):
#: JSON of 10,000 dicts repeats every key 10,000 times and took most of the kernel's time.
OBJECT_COLUMNS = (
    "object_id",
    "owner",
    "size",
    "state",
    "locations",
    "inline",
    "call_site",
    "task_id",
    "task_name",
    "error",
    "holders",
    "names",
)


def _columnar(section: dict[str, Any]) -> None:
    rows = section.pop("upsert")
    section["upsert"] = []
    section["cols"] = OBJECT_COLUMNS
    section["rows"] = [[r.get(c) for c in OBJECT_COLUMNS] for r in rows]


def upserted_rows(payload: Any) -> list[dict[str, Any]]:
    """The rows a section of a delta or keyframe carries, as dicts, whichever its shape
    (``{"upsert": [dicts]}``, ``{"cols", "rows"}``, or a keyframe's plain list)."""
    if isinstance(payload, list):
        return payload
    rows = list(payload.get("upsert") or ())
    cols = payload.get("cols")
    if cols:
        rows += [dict(zip(cols, r)) for r in payload.get("rows") or ()]
    return rows


def row_key(section: str, row: Mapping[str, Any]) -> str:
    """The key of ``row`` in ``section`` (see :data:`KEYS`)."""
    fields = KEYS[section]
    if len(fields) == 1:
        return str(row[fields[0]])
    return "|".join(str(row[f]) for f in fields)


class ViewState:
    """The merged view data and the message numbering (see the module docstring).

    Attributes:
        version: The collector's view version this copy is at (0: nothing yet).
        seq: The number of the last message made for the browser.
    """

    def __init__(self, names: NamesProvider | None = None, names_interval: float = 0.5) -> None:
        """Create an empty copy.

        Args:
            names: Optional provider of notebook names per object (see :data:`NamesProvider`).
            names_interval: Seconds between calls of ``names`` at least.
        """
        self.names_provider = names
        self.names_interval = names_interval
        self.version = 0
        self.seq = 0
        self.sections: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in KEYS}
        self._names: dict[str, list[str]] = {}
        self._names_at = float("-inf")
        self.names_error: str | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ input

    def apply(self, delta: Mapping[str, Any], now: float | None = None) -> dict[str, Any] | None:
        """Merge one answer of ``memlab.state.view(since=self.version)``.

        Returns:
            The message for the browser, or None when nothing it shows changed.
        """
        now = time.monotonic() if now is None else now
        with self._lock:
            out: dict[str, dict[str, Any]] = {}
            version = int(delta.get("version") or 0)
            if version < self.version:
                # The collector restarted (a new session): what we hold is of the old one.
                for name in self.sections:
                    self.sections[name] = {}
                    out[name] = {"reset": True, "upsert": [], "remove": []}
            for name, d in (delta.get("sections") or {}).items():
                rows = self.sections.get(name)
                if rows is None:
                    continue  # a section this kernel does not know (a newer collector)
                if d.get("reset"):
                    rows.clear()
                for key in d.get("remove", ()):
                    rows.pop(str(key), None)
                for row in d.get("upsert", ()):
                    rows[row_key(name, row)] = row
                sent = out.setdefault(name, {"reset": False, "upsert": [], "remove": []})
                sent["reset"] = sent["reset"] or bool(d.get("reset"))
                sent["remove"] = [str(k) for k in d.get("remove", ())]
                upserts = d.get("upsert", ())
                sent["upsert"] = (
                    [self._with_names(name, r) for r in upserts]
                    if name == "objects" and self._names
                    else list(upserts)
                )
            self.version = version
            renamed = self._refresh_names(now)
            if renamed:
                objects = out.setdefault("objects", {"reset": False, "upsert": [], "remove": []})
                have = {r["object_id"] for r in objects["upsert"]}
                rows = self.sections["objects"]
                objects["upsert"].extend(
                    self._with_names("objects", rows[oid])
                    for oid in renamed
                    if oid in rows and oid not in have
                )
            if not any(d["reset"] or d["upsert"] or d["remove"] for d in out.values()):
                return None
            self.seq += 1
            if "objects" in out:
                _columnar(out["objects"])
            return {"type": "delta", "base": self.seq - 1, "seq": self.seq, "sections": out}

    def _with_names(self, section: str, row: dict[str, Any]) -> dict[str, Any]:
        if section != "objects" or not self._names:
            return row
        return {**row, "names": self._names.get(row["object_id"], [])}

    def _refresh_names(self, now: float) -> set[str]:
        """Ask the provider (when due); returns the object ids whose names changed."""
        if self.names_provider is None or now - self._names_at < self.names_interval:
            return set()
        self._names_at = now
        try:
            fresh = {str(k): list(v) for k, v in self.names_provider().items()}
        except Exception as exc:  # a broken provider must not stop the dashboard
            self.names_error = f"{type(exc).__name__}: {exc}"
            return set()
        self.names_error = None
        old = self._names
        changed = {k for k in old.keys() | fresh.keys() if old.get(k) != fresh.get(k)}
        self._names = fresh
        return changed

    # ------------------------------------------------------------------ output

    def keyframe(self) -> dict[str, Any]:
        """Everything the browser shows, numbered like the last message (object rows as
        ``{"cols", "rows"}``, like deltas)."""
        with self._lock:
            sections: dict[str, Any] = {
                name: [self._with_names(name, r) for r in rows.values()]
                for name, rows in self.sections.items()
                if name != "objects"
            }
            objects = {
                "upsert": [
                    self._with_names("objects", r) for r in self.sections["objects"].values()
                ]
            }
            _columnar(objects)
            sections["objects"] = {"cols": objects["cols"], "rows": objects["rows"]}
            return {"seq": self.seq, "version": self.version, "sections": sections}

    def rows(self, section: str) -> list[dict[str, Any]]:
        """A copy of one section's rows (objects with their ``names``)."""
        with self._lock:
            return [dict(self._with_names(section, r)) for r in self.sections[section].values()]

    def summary(self) -> dict[str, Any]:
        """The totals row (empty before the first answer)."""
        with self._lock:
            return dict(self.sections["summary"].get("totals") or {})
