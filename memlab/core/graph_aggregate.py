"""The ownership graph with objects and tasks grouped by what made them, for large sessions.

Pure, like :mod:`memlab.core.ownership_graph`, and in the same vocabulary (node kinds process,
task, node; edge kinds owns, borrows, contains, created_by, depends_on, located_at), plus node
kind ``"group"``: the live objects made by one function (the creating task's name) or, for
``put`` objects, at one call site. Unfinished tasks group by name into one ``"task"`` node each.
A graph of 10,000 objects becomes a few dozen nodes a person can read; every node and edge says
how many it stands for (``count``), and a group says its bytes and how many of its objects are
in each state, so a lost or reconstructing object still shows (``state`` is the most urgent
one: lost > reconstructing > failed > pending > spilled > ready).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memlab.core.ownership_graph import TERMINAL_TASK_STATES
from memlab.core.state_records import ObjectRecord

__all__ = ["URGENCY", "group_graph", "group_of"]

#: Object states from most to least urgent to show.
URGENCY = ("lost", "reconstructing", "failed", "pending", "spilled", "ready")
_RANK = {state: i for i, state in enumerate(URGENCY)}


def group_of(rec: ObjectRecord, tasks: Mapping[str, dict[str, Any]]) -> tuple[str, str]:
    """``(group id, label)`` of the group an object record falls in."""
    task = tasks.get(rec.task_id) if rec.task_id is not None else None
    if task is not None and task.get("name"):
        return f"group:task:{task['name']}", f"{task['name']}()"
    site = rec.call_site
    if site:
        return f"group:site:{site}", f"put @ {site}"
    return "group:other", "other objects"


def group_graph(
    objects: Mapping[str, ObjectRecord],
    tasks_by_id: Mapping[str, dict[str, Any]],
    workers: Mapping[str, dict[str, Any]],
    nodes: Mapping[str, dict[str, Any]],
) -> dict[str, Any]:
    """``{"nodes": [...], "edges": [...]}`` with objects and tasks grouped (module docstring)."""
    gnodes: dict[str, dict[str, Any]] = {}
    edges: dict[tuple[str, str, str], int] = {}
    group_of_object: dict[str, str] = {}

    def add(gid: str, kind: str, ref: str, label: str, **extra: Any) -> dict[str, Any]:
        node = gnodes.get(gid)
        if node is None:
            node = gnodes[gid] = {"id": gid, "kind": kind, "ref": ref, "label": label, **extra}
        return node

    def process(proc: str) -> str:
        worker = workers.get(proc)
        alive = None if worker is None else worker["state"] == "alive"
        gid: str = add(f"process:{proc}", "process", proc, proc, alive=alive)["id"]
        return gid

    def edge(src: str, dst: str, kind: str) -> None:
        key = (src, dst, kind)
        edges[key] = edges.get(key, 0) + 1

    for wid, worker in workers.items():
        if worker["state"] == "alive":
            process(wid)
    task_group: dict[str, str] = {}
    contained: list[tuple[str, str]] = []
    for tid, task in tasks_by_id.items():
        if task["state"] in TERMINAL_TASK_STATES:
            continue
        name = task["name"] or "task"
        node = add(f"task:group:{name}", "task", name, name, count=0, state=task["state"])
        node["count"] += 1
        if task["state"] == "running":
            node["state"] = "running"
        task_group[tid] = node["id"]
    # One pass over the objects (attribute reads: this runs for 10,000s of records).
    owners: dict[str, str] = {}
    located: dict[str, str] = {}
    for oid, rec in objects.items():
        owner = rec.owner
        if owner is None:
            continue
        gid, label = group_of(rec, tasks_by_id)
        found = gnodes.get(gid)
        node = (
            found
            if found is not None
            else add(
                gid, "group", gid.split(":", 1)[1], label, count=0, size=0, states={}, state="ready"
            )
        )
        node["count"] += 1
        node["size"] += rec.size or 0
        state = rec.state
        states = node["states"]
        states[state] = states.get(state, 0) + 1
        if state != "ready" and _RANK.get(state, 99) < _RANK.get(node["state"], 99):
            node["state"] = state
        group_of_object[oid] = gid
        pid = owners.get(owner) or owners.setdefault(owner, process(owner))
        edge(pid, gid, "owns")
        holders = rec.holders
        for borrower in holders["borrowers"]:
            edge(process(borrower), gid, "borrows")
        for node_id in rec.nodes:
            nid = located.get(node_id)
            if nid is None:
                alive = nodes[node_id]["alive"] if node_id in nodes else None
                nid = located[node_id] = add(
                    f"node:{node_id}", "node", node_id, node_id, alive=alive
                )["id"]
            edge(gid, nid, "located_at")
        creator = rec.task_id
        if creator is not None:
            tgid = task_group.get(creator)
            if tgid is None and creator in tasks_by_id:
                task = tasks_by_id[creator]
                name = task["name"] or "task"
                tgid = add(f"task:group:{name}", "task", name, name, count=0, state=task["state"])[
                    "id"
                ]
            if tgid is not None:
                edge(gid, tgid, "created_by")
        for outer in holders["contained_in"]:
            contained.append((outer, gid))
    for outer, gid in contained:
        if outer in group_of_object:
            edge(group_of_object[outer], gid, "contains")
    for tid, tgid in task_group.items():
        for dep in tasks_by_id[tid]["deps"]:
            if dep in group_of_object:
                edge(tgid, group_of_object[dep], "depends_on")
    out_edges = [
        {"src": s, "dst": d, "kind": k, "count": n}
        for (s, d, k), n in edges.items()
        if s in gnodes and d in gnodes
    ]
    return {"nodes": list(gnodes.values()), "edges": out_edges}
