"""The ownership graph: processes, objects, tasks and nodes, and how they hold each other.

Pure: built from the state model's records, as plain data for front ends. Graph node ids are
prefixed by kind (``"process:driver"``, ``"object:<id>"``, ``"task:<id>"``, ``"node:<id>"``)
because a process and a node may share a name. Every edge's endpoints are in ``nodes``;
references to freed objects are left out. Tasks are included when unfinished or when a live
object was created by them. Edge kinds: owns, borrows, contains, created_by, depends_on,
located_at.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TERMINAL_TASK_STATES = frozenset({"finished", "failed", "cancelled"})


def build_graph(
    objects: Mapping[str, Any],
    tasks_by_id: dict[str, dict[str, Any]],
    workers: dict[str, dict[str, Any]],
    nodes: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """``{"nodes": [...], "edges": [...]}`` for the live objects in ``objects``."""
    gnodes: dict[str, dict[str, Any]] = {}
    edges: list[dict[str, str]] = []

    def edge(src: str, dst: str, kind: str) -> None:
        if src in gnodes and dst in gnodes:
            edges.append({"src": src, "dst": dst, "kind": kind})

    def add(kind: str, ref: str, label: str, **extra: Any) -> str:
        gid = f"{kind}:{ref}"
        if gid not in gnodes:
            gnodes[gid] = {"id": gid, "kind": kind, "ref": ref, "label": label, **extra}
        return gid

    def process(proc: str) -> str:
        worker = workers.get(proc)
        alive = None if worker is None else worker["state"] == "alive"
        return add("process", proc, proc, alive=alive)

    for wid, worker in workers.items():
        if worker["state"] == "alive":
            process(wid)
    live = objects
    tasks = {
        tid: rec for tid, rec in tasks_by_id.items() if rec["state"] not in TERMINAL_TASK_STATES
    }
    for rec in live.values():
        if rec["owner"] is not None and rec["task_id"] in tasks_by_id:
            tasks.setdefault(rec["task_id"], tasks_by_id[rec["task_id"]])
    for tid, rec in tasks.items():
        add("task", tid, rec["name"] or tid[:8], state=rec["state"])
    for oid, rec in live.items():
        if rec["owner"] is None:
            continue
        src = add("object", oid, oid[:8], state=rec["state"], size=rec["size"])
        edge(process(rec["owner"]), src, "owns")
        for borrower in rec["holders"]["borrowers"]:
            edge(process(borrower), src, "borrows")
        for node_id in rec["nodes"]:
            alive = nodes[node_id]["alive"] if node_id in nodes else None
            edge(src, add("node", node_id, node_id, alive=alive), "located_at")
        edge(src, f"task:{rec['task_id']}", "created_by")
    # Second pass: containment and dependencies need every live object already added.
    for oid, rec in live.items():
        for outer in rec["holders"]["contained_in"] if rec["owner"] is not None else ():
            edge(f"object:{outer}", f"object:{oid}", "contains")
    for tid, rec in tasks.items():
        for dep in rec["deps"]:
            edge(f"task:{tid}", f"object:{dep}", "depends_on")
    return {"nodes": list(gnodes.values()), "edges": edges}
