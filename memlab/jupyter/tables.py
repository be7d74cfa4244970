"""``%memlab refs`` and ``%memlab events``: the object table and the event log as tables."""

from __future__ import annotations

import argparse
import datetime
import html
from collections.abc import Sequence
from typing import Any

import memlab.state as st
from memlab.jupyter.display import show
from memlab.jupyter.holders import HolderIndex
from memlab.jupyter.parsing import MagicParser, format_bytes, positive_int

MAX_ROWS = 500  # beyond this the dashboard's virtualized table is the right tool


def objects_with_names(index: HolderIndex | None) -> list[dict[str, Any]]:
    """``memlab.state.objects()``, each record with ``names``: its holders in this kernel."""
    objects = st.objects()
    names = index.names() if index is not None else {}
    for obj in objects:
        obj["names"] = names.get(obj["object_id"], [])
    return objects


def holders_text(obj: dict[str, Any]) -> str:
    parts = list(obj.get("names", []))
    h = obj["holders"]
    unnamed = h["local"] - len([n for n in parts if not n.startswith("traceback ")])
    if obj["owner"] == "driver" and unnamed > 0:
        parts.append(f"{unnamed} unnamed ref(s)" if parts else f"{unnamed} ref(s)")
    elif obj["owner"] != "driver" and h["local"]:
        parts.append(f"{h['local']} ref(s) in {obj['owner']}")
    if h["tasks"]:
        parts.append(f"{h['tasks']} pending task(s)")
    if h["borrowers"]:
        parts.append("borrowed by " + ", ".join(h["borrowers"]))
    if h["contained_in"]:
        parts.append("inside " + ", ".join(o[:8] for o in h["contained_in"]))
    return ", ".join(parts) or "-"


def refs_parser() -> MagicParser:
    p = MagicParser(
        "%memlab refs",
        "The live objects: id, size, state, owner, call site, "
        "holders. By default those this notebook holds or owns.",
    )
    p.add_argument("--all", action="store_true", help="every live object of the session")
    return p


def refs(args: argparse.Namespace, index: HolderIndex) -> list[dict[str, Any]]:
    objects = objects_with_names(index)
    if not args.all:
        objects = [o for o in objects if o["names"] or o["owner"] == "driver"]
    objects.sort(key=lambda o: -(o["size"] or 0))
    columns = ("id", "size", "state", "owner", "call site", "holders")
    rows = [
        (
            o["object_id"][:12],
            format_bytes(o["size"]),
            o["state"],
            o["owner"],
            o["call_site"] or "-",
            holders_text(o),
        )
        for o in objects[:MAX_ROWS]
    ]
    more = len(objects) - len(rows)
    total = sum(o["size"] or 0 for o in objects)
    caption = f"{len(objects)} object(s), {format_bytes(total)}" + (
        f" (largest {MAX_ROWS} shown; %memlab dashboard shows all)" if more > 0 else ""
    )
    show(_text_table(columns, rows, caption), _html_table(columns, rows, caption))
    return objects


def events_parser() -> MagicParser:
    p = MagicParser("%memlab events", "The session's most recent events.")
    p.add_argument("--last", type=positive_int, default=20, help="how many (default 20)")
    p.add_argument(
        "--kinds", default=None, help="comma-separated kinds, e.g. task.failed,object.lost"
    )
    return p


_SKIP_FIELDS = ("kind", "ts", "proc", "seq")


def events(args: argparse.Namespace) -> list[dict[str, Any]]:
    from IPython.core.error import UsageError

    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()] if args.kinds else None
    try:
        evs = st.events(kinds=kinds)[-args.last :]
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    columns = ("seq", "time", "kind", "process", "details")
    rows = [
        (
            str(e["seq"]),
            datetime.datetime.fromtimestamp(e["ts"]).strftime("%H:%M:%S.%f")[:-3],
            e["kind"],
            e["proc"],
            _details(e),
        )
        for e in evs
    ]
    caption = f"last {len(rows)} event(s)" + (f" of kinds {', '.join(kinds)}" if kinds else "")
    show(_text_table(columns, rows, caption), _html_table(columns, rows, caption))
    return evs


def _details(event: dict[str, Any]) -> str:
    parts = []
    for key, value in event.items():
        if key in _SKIP_FIELDS or value is None or value == [] or value == ():
            continue
        if isinstance(value, str) and len(value) == 32 and key.endswith("_id"):
            value = value[:12]
        text = str(value)
        parts.append(f"{key}={text if len(text) <= 60 else text[:57] + '...'}")
    return " ".join(parts)


def _text_table(columns: tuple[str, ...], rows: Sequence[Sequence[str]], caption: str) -> str:
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    widths[-1] = len(columns[-1])  # the last column runs free
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    body = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join([caption, line, *body])


_CELL = "text-align:left;padding-right:12px"


def _html_table(columns: tuple[str, ...], rows: Sequence[Sequence[str]], caption: str) -> str:
    head = "".join(f"<th style='{_CELL}'>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td style='{_CELL}'>{html.escape(v)}</td>" for v in r) + "</tr>"
        for r in rows
    )
    return (
        f"<table class='memlab-table'><caption style='text-align:left'>"
        f"{html.escape(caption)}</caption><tr>{head}</tr>{body}</table>"
    )
