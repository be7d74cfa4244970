"""The records the live state model keeps: their shapes, shared defaults and copies.

Owns how one object and one task are represented in :mod:`memlab.core.state_model`, which holds
many thousands of them on the driver: object records are slotted (read and written like dicts),
task records are dicts of atoms and tuples (which the garbage collector stops tracking), and
default holder records are shared, never mutated, only replaced whole. Readers always get
fresh dict copies (``copy_record``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["CREATOR_HOLDS", "NO_HOLDERS", "ObjectRecord", "copy_record", "new_task"]

# Holder records are replaced whole, never mutated, so records share these until their owner
# reports a change: one per object would cost ~330 bytes for what is nearly always the default.
NO_HOLDERS: dict[str, Any] = {"local": 0, "tasks": 0, "contained_in": [], "borrowers": []}
# A new owned object starts with the one ref its creator holds (no holders event is sent for it).
CREATOR_HOLDS: dict[str, Any] = {"local": 1, "tasks": 0, "contained_in": [], "borrowers": []}


class ObjectRecord:
    """One live object's record, read and written like a dict (``rec["state"]``).

    A slotted record, because the model keeps one per live object on the driver: a dict of
    these ten keys costs ~270 bytes, this ~130.
    """

    __slots__ = (
        "call_site",
        "error",
        "holders",
        "inline",
        "nodes",
        "object_id",
        "owner",
        "size",
        "state",
        "task_id",
    )

    def __init__(self, object_id: str) -> None:
        self.object_id = object_id
        self.owner: str | None = None
        self.size: int | None = None
        self.call_site: str | None = None
        self.task_id: str | None = None
        self.error: str | None = None
        self.state = "pending"
        self.inline = False
        self.nodes: tuple[str, ...] = ()  # node ids holding a copy, primary first
        self.holders = NO_HOLDERS

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        setattr(self, key, value)

    def items(self) -> list[tuple[str, Any]]:
        return [(key, getattr(self, key)) for key in _OBJECT_FIELDS]

    def __repr__(self) -> str:
        return repr(dict(self.items()))


# The order records are shown in.
_OBJECT_FIELDS = (
    "object_id",
    "owner",
    "size",
    "call_site",
    "task_id",
    "error",
    "state",
    "inline",
    "nodes",
    "holders",
)


# Templates copied per record: a dict copy is the cheapest way to build one on the hot path.
_TASK_TEMPLATE = dict.fromkeys(
    ("task_id", "name", "worker", "node", "owner", "call_site", "submitted_at", "started_at")
)
_TASK_TEMPLATE.update(state="pending", attempt=0, finished_at=None, error=None)


def new_task(task_id: str) -> dict[str, Any]:
    rec = _TASK_TEMPLATE.copy()
    rec["task_id"] = task_id
    # Tuples, not lists: a record holding only atoms and tuples is untracked by the garbage
    # collector after its first pass, so 10k kept tasks cost full collections nothing.
    rec["returns"] = ()
    rec["deps"] = ()
    return rec


def copy_record(rec: dict[str, Any] | ObjectRecord) -> dict[str, Any]:
    """Copy a record one level deep in its lists and dicts (records are no deeper than that)."""
    out = {}
    for key, value in rec.items():
        if type(value) is list or type(value) is tuple:
            value = list(value)
        elif type(value) is dict:
            value = {k: list(v) if type(v) is list else v for k, v in value.items()}
        out[key] = value
    return out
