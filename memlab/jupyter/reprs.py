"""Rich reprs: a ref's state inline, and the runtime's summary (as Dask's Client shows).

``ref_html`` is cheap: one local lookup in this process's reference table
(``ObjectRef.local_info()``) plus the kernel's last holder scan, never a round trip.
``runtime_html`` reads ``memlab.state`` once for nodes, workers and objects.
"""

from __future__ import annotations

import html
from typing import Any

from memlab.jupyter.parsing import format_bytes
from memlab.runtime.coreworker.object_ref import ObjectRef

_STATE_COLOURS = {
    "ready": "#2e7d32",
    "running": "#2e7d32",
    "stopped": "#616161",
    "pending": "#9e9e9e",
    "failed": "#c62828",
    "lost": "#c62828",
    "reconstructing": "#ef6c00",
    "spilled": "#1565c0",
}

# Set by the extension: the shell's holder index, so a ref shows its notebook names.
holder_index: Any = None


def _badge(state: str) -> str:
    colour = _STATE_COLOURS.get(state, "#616161")
    return (
        f'<span style="background:{colour};color:white;border-radius:3px;'
        f'padding:0 4px;font-size:85%">{html.escape(state)}</span>'
    )


def ref_summary(ref: ObjectRef[Any]) -> dict[str, Any]:
    """State, size, owner, call site and holders of ``ref`` from local knowledge only."""
    info = ref.local_info() or {
        "owner": ref.owner,
        "owned": False,
        "state": "unknown",
        "size": None,
        "call_site": None,
        "holders": None,
    }
    names: list[str] = []
    index = holder_index
    if index is not None:  # a scan at most 500 ms old: no new walk per ref of one output
        names = index.names().get(ref.hex(), [])
    return {**info, "names": names}


def ref_html(ref: ObjectRef[Any]) -> str:
    s = ref_summary(ref)
    parts = [
        f"<code>ObjectRef({ref.hex()[:16]}…)</code>",
        _badge(s["state"]),
        f"size {format_bytes(s['size'])}",
        f"owner <code>{html.escape(s['owner'])}</code>",
    ]
    holders = s["holders"]
    held = list(s["names"])
    if holders:
        if holders.get("tasks"):
            held.append(f"{holders['tasks']} pending task(s)")
        if holders.get("borrowers"):
            held.append("borrowed by " + ", ".join(holders["borrowers"]))
        if holders.get("contained_in"):
            held.append(f"inside {len(holders['contained_in'])} object(s)")
    if held:
        parts.append("held by " + html.escape(", ".join(held)))
    if s["call_site"]:
        parts.append(f"made at {html.escape(s['call_site'])}")
    return '<span class="memlab-ref">' + " · ".join(parts) + "</span>"


def runtime_summary(runtime: Any) -> dict[str, Any]:
    """What ``%memlab status`` and the runtime repr show, from ``memlab.state``."""
    import memlab
    import memlab.state as st

    if runtime is None or not memlab.is_initialized():
        if runtime is None:
            raise memlab.RuntimeNotStartedError("%memlab status")
        return {
            "runtime": runtime.describe(),
            "nodes": [],
            "workers": [],
            "objects": 0,
            "object_bytes": 0,
            "tasks": {},
        }
    described = runtime.describe()
    summary: dict[str, Any] = {
        "runtime": described,
        "nodes": [],
        "workers": [],
        "objects": 0,
        "object_bytes": 0,
        "tasks": {},
    }
    try:
        summary["nodes"] = sorted(st.nodes(), key=lambda n: (len(n["node_id"]), n["node_id"]))
        summary["workers"] = [w for w in st.workers() if w["state"] == "alive"]
        objects = st.objects()
        summary["objects"] = len(objects)
        summary["object_bytes"] = sum(o["size"] or 0 for o in objects)
        counts: dict[str, int] = {}
        for task in st.tasks():
            counts[task["state"]] = counts.get(task["state"], 0) + 1
        summary["tasks"] = counts
    except memlab.MemlabError as exc:  # started with events=False: options only
        summary["error"] = str(exc)
    return summary


def runtime_text(summary: dict[str, Any]) -> str:
    r = summary["runtime"]
    lines = [
        f"memlab runtime {r['state']}: {r['num_workers']} workers on {r['num_nodes']} "
        f"node(s), store {format_bytes(r['object_store_memory'])}"
    ]
    for node in summary["nodes"]:
        lines.append(
            f"  {node['node_id']}: {'alive' if node['alive'] else 'dead'}, store "
            f"{format_bytes(node['store_used'])} of "
            f"{format_bytes(node['store_capacity'])} used, "
            f"{format_bytes(node['spilled_bytes'])} spilled, "
            f"{node['num_objects']} objects"
        )
    by_node: dict[str, int] = {}
    for w in summary["workers"]:
        by_node[w["node"]] = by_node.get(w["node"], 0) + 1
    if by_node:
        lines.append("  workers: " + ", ".join(f"{n} on {k}" for k, n in sorted(by_node.items())))
    lines.append(f"  objects: {summary['objects']} live, {format_bytes(summary['object_bytes'])}")
    if summary["tasks"]:
        lines.append(
            "  tasks: " + ", ".join(f"{n} {s}" for s, n in sorted(summary["tasks"].items()))
        )
    if "error" in summary:
        lines.append(f"  ({summary['error']})")
    return "\n".join(lines)


def runtime_html(summary: dict[str, Any]) -> str:
    r = summary["runtime"]
    rows = []
    for node in summary["nodes"]:
        cap = node["store_capacity"] or 1
        pct = min(100, int(100 * (node["store_used"] or 0) / cap))
        workers = sum(1 for w in summary["workers"] if w["node"] == node["node_id"])
        state = "alive" if node["alive"] else '<b style="color:#c62828">dead</b>'
        rows.append(
            f"<tr><td><code>{html.escape(node['node_id'])}</code></td>"
            f"<td>{state}</td>"
            f"<td>{workers}</td>"
            f'<td><div style="width:120px;background:#eee;display:inline-block">'
            f'<div style="width:{pct}%;background:#1565c0;height:8px"></div></div> '
            f"{format_bytes(node['store_used'])} / {format_bytes(node['store_capacity'])}</td>"
            f"<td>{format_bytes(node['spilled_bytes'])}</td><td>{node['num_objects']}</td></tr>"
        )
    tasks = ", ".join(f"{n} {html.escape(s)}" for s, n in sorted(summary["tasks"].items()))
    error = f"<p><i>{html.escape(summary['error'])}</i></p>" if "error" in summary else ""
    return (
        '<div class="memlab-runtime" style="border-left:3px solid #1565c0;padding-left:8px">'
        f"<b>memlab runtime</b> {_badge(r['state'])} · {r['num_workers']} workers · "
        f"{r['num_nodes']} node(s) · store {format_bytes(r['object_store_memory'])} · "
        f"{summary['objects']} objects ({format_bytes(summary['object_bytes'])})"
        + (f" · tasks: {tasks}" if tasks else "")
        + '<table style="margin-top:4px;text-align:left"><tr>'
        + "".join(
            f'<th style="text-align:left;padding-right:12px">{h}</th>'
            for h in ("node", "state", "workers", "store used", "spilled", "objects")
        )
        + "</tr>"
        + "".join(rows)
        + "</table>"
        + error
        + "<small>Live views: <code>%memlab dashboard</code> · objects: "
        "<code>%memlab refs</code> · why is it alive: <code>%memlab why NAME</code></small>"
        "</div>"
    )


def runtime_repr_html(runtime: Any) -> str:
    """IPython's text/html formatter for the runtime object (``memlab.init()``'s value)."""
    try:
        return runtime_html(runtime_summary(runtime))
    except Exception as exc:  # a repr must never raise; the runtime may be stopping
        return f"<code>{html.escape(repr(runtime))}</code> <i>({html.escape(str(exc))})</i>"
