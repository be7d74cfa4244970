"""The dashboard's static fallback: a self-contained HTML snapshot of its four views.

A notebook saved after running shows this where no kernel (and no widget state) is there to
render the live widget: on GitHub, in nbviewer, in an exported HTML file. Plain HTML with inline
styles (no script, nothing loaded), escaped throughout, bounded in size: the largest objects,
the latest incidents, every node and worker.
"""

from __future__ import annotations

import html
import time
from typing import Any

from memlab.jupyter.dashboard.view_state import ViewState

__all__ = ["format_bytes", "render_snapshot"]

_MAX_OBJECTS = 25
_MAX_INCIDENTS = 10
_STATE_COLORS = {
    "ready": "#2e7d32",
    "pending": "#757575",
    "spilled": "#6a1b9a",
    "lost": "#c62828",
    "reconstructing": "#ef6c00",
    "failed": "#b71c1c",
    "recovering": "#ef6c00",
    "recovered": "#2e7d32",
    "alive": "#2e7d32",
    "dead": "#c62828",
}
_NONE = "\u2013"  # an en dash: "nothing" in a cell
_CELL = "padding:2px 8px;border-bottom:1px solid #eee;text-align:left"


def format_bytes(n: int | float | None) -> str:
    """``1536`` → ``"1.5 KiB"``; None → an en dash."""
    if n is None:
        return _NONE
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def short_site(site: str | None) -> str | None:
    """``"/home/me/pipeline.py:12"`` → ``"pipeline.py:12"``; notebook cells stay as they are."""
    return site.rsplit("/", 1)[-1] if site else site


def location_text(location: str) -> str:
    """``"owner:driver"`` → ``"inline in driver"``; node ids stay as they are."""
    return f"inline in {location[6:]}" if location.startswith("owner:") else location


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _badge(state: str) -> str:
    color = _STATE_COLORS.get(state, "#455a64")
    return (
        f'<span style="color:#fff;background:{color};border-radius:3px;'
        f'padding:0 5px;font-size:11px">{_e(state)}</span>'
    )


def _table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f'<th style="{_CELL};font-weight:600">{_e(h)}</th>' for h in head)
    body = "".join(
        "<tr>" + "".join(f'<td style="{_CELL}">{c}</td>' for c in r) + "</tr>" for r in rows
    )
    return f'<table style="border-collapse:collapse;font-size:12px"><tr>{th}</tr>{body}</table>'


def _bar(parts: list[tuple[int, str, str]], total: int) -> str:
    total = max(total, 1)
    segs = "".join(
        f'<div title="{_e(label)}" style="width:{min(100.0, 100.0 * n / total):.2f}%;'
        f'background:{color}"></div>'
        for n, color, label in parts
        if n > 0
    )
    return (
        f'<div style="display:flex;width:240px;height:12px;background:#eceff1;'
        f'border-radius:2px;overflow:hidden">{segs}</div>'
    )


def _holders(row: dict[str, Any]) -> str:
    """What holds an object besides the notebook's names (those have a column of their own)."""
    h = row.get("holders") or {}
    parts: list[str] = []
    if h.get("local"):
        parts.append(f"{h['local']} ref{'s' if h['local'] != 1 else ''} in {row.get('owner')}")
    if h.get("tasks"):
        parts.append(f"{h['tasks']} pending task{'s' if h['tasks'] != 1 else ''}")
    parts += [f"borrowed by {b}" for b in h.get("borrowers") or ()]
    parts += [f"inside {c[:8]}" for c in h.get("contained_in") or ()]
    return _e(", ".join(parts) or _NONE)


def render_snapshot(state: ViewState, status: str = "live") -> str:
    """The four views as static HTML, from the kernel's current copy of the view data."""
    totals = state.summary()
    nodes = sorted(state.rows("nodes"), key=lambda n: n["node_id"])
    workers = sorted(state.rows("workers"), key=lambda w: (w.get("node") or "", w["worker_id"]))
    objects = state.rows("objects")
    incidents = state.rows("incidents")[-_MAX_INCIDENTS:]
    graph = state.sections["graph_nodes"]
    shown = "" if status in ("live", "starting") else f" ({_e(status)})"
    out = [
        '<div class="memlab-dashboard-snapshot" style="font-family:sans-serif;font-size:13px">',
        f'<div style="font-weight:600;margin-bottom:4px">memlab dashboard — snapshot at '
        f"{time.strftime('%H:%M:%S')}{shown}</div>",
        f"<div>{totals.get('objects', 0)} objects, {format_bytes(totals.get('bytes', 0))}; "
        f"spilled {format_bytes(totals.get('spilled_bytes', 0))}; graph of {len(graph)} "
        f"nodes</div>",
        '<h4 style="margin:8px 0 2px">Nodes</h4>',
    ]
    node_rows = []
    for n in nodes:
        if not n.get("alive"):
            node_rows.append(
                [
                    _e(n["node_id"]),
                    _badge("dead"),
                    "its store and spill files went with it",
                    "",
                    "",
                    "",
                ]
            )
            continue
        cap = n.get("store_capacity") or n.get("store_used") or 1
        bar = _bar(
            [
                (n.get("primary_bytes") or 0, "#1565c0", "pinned (primary copies)"),
                (
                    max(0, (n.get("store_used") or 0) - (n.get("primary_bytes") or 0)),
                    "#90caf9",
                    "other store use",
                ),
                (n.get("spilled_bytes") or 0, "#6a1b9a", "spilled"),
            ],
            cap,
        )
        node_rows.append(
            [
                _e(n["node_id"]),
                _badge("alive"),
                bar,
                _e(f"{format_bytes(n.get('store_used'))} / {format_bytes(cap)}"),
                _e(format_bytes(n.get("primary_bytes"))),
                _e(format_bytes(n.get("spilled_bytes"))),
            ]
        )
    out.append(_table(["node", "state", "store", "used", "pinned", "spilled"], node_rows))
    worker_rows = []
    for w in workers:
        task = w.get("current_task") or {}
        worker_rows.append(
            [
                _e(w["worker_id"]),
                _e(w.get("node")),
                _badge(w.get("state", "?")),
                _e(task.get("name") or (_NONE if w.get("state") == "alive" else w.get("cause"))),
            ]
        )
    out += [
        '<h4 style="margin:8px 0 2px">Workers</h4>',
        _table(["worker", "node", "state", "current task / cause"], worker_rows),
    ]
    objects.sort(key=lambda o: -(o.get("size") or 0))
    obj_rows = [
        [
            _e(o["object_id"][:12]),
            _badge(o["state"]),
            _e(format_bytes(o.get("size"))),
            _e(o.get("owner")),
            _e(", ".join(o.get("names") or ()) or _NONE),
            _holders(o),
            _e(short_site(o.get("call_site"))),
            _e(", ".join(location_text(x) for x in o.get("locations") or ())),
        ]
        for o in objects[:_MAX_OBJECTS]
    ]
    more = len(objects) - _MAX_OBJECTS
    out += [
        f'<h4 style="margin:8px 0 2px">Objects (largest {min(len(objects), _MAX_OBJECTS)}'
        f" of {len(objects)})</h4>",
        _table(
            [
                "object",
                "state",
                "size",
                "owner",
                "names",
                "other holders",
                "call site",
                "locations",
            ],
            obj_rows,
        ),
    ]
    if more > 0:
        out.append(f"<div>… and {more} more</div>")
    out.append('<h4 style="margin:8px 0 2px">Recovery timeline</h4>')
    if not incidents:
        out.append("<div>No incidents: nothing has failed.</div>")
    for inc in incidents:
        steps = " → ".join(
            f"{_e(s['kind'].replace('_', ' '))} {s['count']}" for s in inc.get("steps", ())
        )
        out.append(
            f'<div style="margin:2px 0">{_badge(inc.get("state", "?"))} '
            f"<b>{_e(inc.get('title'))}</b> ({inc.get('duration', 0):.2f} s): {steps}"
            "</div>"
        )
    out.append("</div>")
    return "".join(out)
