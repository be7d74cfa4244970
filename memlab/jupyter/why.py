"""``%memlab why NAME_OR_ID``: why is this object still alive?

Builds the chain of holders from the object up to each root, from ``memlab.state`` (what the
owner counts: pending tasks, borrowers, containing objects) and the kernel's holder scan (what
only the kernel can name: variables, ``Out[N]``, the last traceback, actor handles)::

    object 3f2a9c1e7b00 (7.6 MiB, ready, owned by driver, made at Cell In[3], line 2)
    ├── notebook variable parts[2]
    ├── Out[4] (output history: %memlab gc drops it)
    └── inside object 9a8b7c6d5e4f (made at Cell In[5], line 1)
        └── notebook variable nested
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from typing import Any

from IPython.core.error import UsageError

import memlab
import memlab.state as st
from memlab.jupyter.holders import HolderIndex, Scan, is_history_name, is_traceback_name
from memlab.jupyter.parsing import MagicParser, format_bytes

# A name with attributes and literal subscripts (parts[2], d['k'], Out[4]): resolving it calls
# nothing but lookups.
_EXPRESSION = re.compile(r"""^[A-Za-z_]\w*(\.\w+|\[(-?\d+|'[^'\\]*'|"[^"\\]*")\])*$""")
_HEX = re.compile(r"^[0-9a-f]{4,32}$")
MAX_DEPTH = 8


@dataclass
class Holder:
    """One link of the chain: ``kind`` (variable, history, traceback, task, borrower, actor,
    handle, container, owner, unnamed), a sentence, and what holds it in turn."""

    kind: str
    text: str
    holders: list[Holder] = field(default_factory=list)


@dataclass
class Why:
    object_id: str
    title: str
    holders: list[Holder]

    def kinds(self) -> set[str]:
        found: set[str] = set()
        todo = list(self.holders)
        while todo:
            h = todo.pop()
            found.add(h.kind)
            todo += h.holders
        return found

    def text(self) -> str:
        lines = [self.title]
        _render(self.holders, "", lines)
        if not self.holders:
            lines.append("nothing holds it any more: it is being freed")
        return "\n".join(lines)


def _render(holders: list[Holder], indent: str, lines: list[str]) -> None:
    for i, h in enumerate(holders):
        last = i == len(holders) - 1
        lines.append(f"{indent}{'└── ' if last else '├── '}{h.text}")
        _render(h.holders, indent + ("    " if last else "│   "), lines)


def why_parser() -> MagicParser:
    p = MagicParser("%memlab why", "What keeps an object alive: the chain of holders.")
    p.add_argument("target", help="a notebook name (x, parts[2], Out[4]) or an object id prefix")
    return p


def why_magic(args: argparse.Namespace, shell: Any, index: HolderIndex) -> Why:
    result = explain(args.target, shell, index)
    print(result.text())
    return result


def resolve(target: str, shell: Any, objects: dict[str, dict[str, Any]]) -> str:
    """The object id ``target`` names: a notebook expression's ref, or an id prefix."""
    looked = []
    if _EXPRESSION.match(target):
        looked.append(f"a notebook name {target!r}")
        try:
            value = eval(target, shell.user_ns)  # the user's own expression, in their kernel
        except Exception:
            value = None
        else:
            if isinstance(value, memlab.ObjectRef):
                return value.hex()
            if value is not None:
                raise UsageError(
                    f"{target} is a {type(value).__name__}, not an ObjectRef; "
                    "ask about a ref (e.g. an element of it) or an object id"
                )
    if _HEX.match(target.lower()):
        looked.append(f"an object id starting with {target!r} among {len(objects)} live objects")
        matches = [oid for oid in objects if oid.startswith(target.lower())]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise UsageError(
                f"{len(matches)} live objects have ids starting with {target!r} "
                f"({', '.join(m[:12] for m in matches[:5])}…); give more digits"
            )
    raise UsageError(
        f"nothing matches {target!r}: looked for "
        + " and ".join(looked or ["a notebook name or a hex object id"])
        + ". %memlab refs lists the live objects."
    )


def explain(target: str, shell: Any, index: HolderIndex) -> Why:
    objects = {o["object_id"]: o for o in st.objects()}
    oid = resolve(target, shell, objects)
    ctx = _Context(objects, {t["task_id"]: t for t in st.tasks()}, st.actors(), index.scan())
    rec = objects.get(oid)
    if rec is None:
        return Why(oid, f"object {oid[:12]} is not alive: it was freed (or never existed).", [])
    holders = ctx.holders_of(oid, 0, {oid})
    if not any(h.kind in _KERNEL_KINDS for h in _flatten(holders)):
        procs = sorted({rec["owner"], *rec["holders"]["borrowers"]} - {"driver"})
        if procs:
            holders.append(
                Holder(
                    "elsewhere",
                    f"nothing in this kernel holds it; process(es) {', '.join(procs)} do",
                )
            )
    return Why(oid, ctx.describe(rec), holders)


_KERNEL_KINDS = {"variable", "history", "traceback", "handle", "unnamed"}


def _flatten(holders: list[Holder]) -> list[Holder]:
    out = []
    for h in holders:
        out.append(h)
        out += _flatten(h.holders)
    return out


class _Context:
    def __init__(
        self,
        objects: dict[str, dict[str, Any]],
        tasks: dict[str, dict[str, Any]],
        actors: list[dict[str, Any]],
        scan: Scan,
    ) -> None:
        self.objects = objects
        self.tasks = tasks
        self.actors_by_worker: dict[str, list[dict[str, Any]]] = {}
        for actor in actors:
            if actor["state"] != "dead" and actor["worker"]:
                self.actors_by_worker.setdefault(actor["worker"], []).append(actor)
        self.scan = scan

    def describe(self, rec: dict[str, Any]) -> str:
        site = f", made at {rec['call_site']}" if rec["call_site"] else ""
        return (
            f"object {rec['object_id'][:12]} ({format_bytes(rec['size'])}, {rec['state']}, "
            f"owned by {rec['owner']}{site})"
        )

    def holders_of(self, oid: str, depth: int, seen: set[str]) -> list[Holder]:
        rec = self.objects.get(oid)
        out = [self._named(name) for name in self.scan.objects.get(oid, [])]
        if rec is None:
            return out
        h = rec["holders"]
        if h["tasks"]:
            out += self._tasks_taking(oid, h["tasks"])
        for proc in h["borrowers"]:
            out.append(self._borrower(proc, oid))
        for outer in h["contained_in"]:
            inner = Holder("container", f"inside {self._short(outer)}")
            if outer in seen or depth >= MAX_DEPTH:
                inner.text += " (already shown)" if outer in seen else " (deeper links cut)"
            else:
                inner.holders = self.holders_of(outer, depth + 1, seen | {outer})
            out.append(inner)
        named = [x for x in out if x.kind in ("variable", "history", "traceback")]
        if h["local"] and rec["owner"] == "driver" and not named:
            out.append(
                Holder(
                    "unnamed",
                    f"{h['local']} ObjectRef instance(s) in this kernel "
                    "that no notebook name reaches (a closure, a deep attribute, a "
                    "running thread or a library's cache)",
                )
            )
        elif h["local"] and rec["owner"] != "driver":
            out.append(Holder("owner", f"{h['local']} ref(s) in its owner {rec['owner']}"))
        return out

    def _short(self, oid: str) -> str:
        rec = self.objects.get(oid)
        site = f" (made at {rec['call_site']})" if rec and rec["call_site"] else ""
        return f"object {oid[:12]}{site}"

    def _named(self, name: str) -> Holder:
        if is_traceback_name(name):
            return Holder(
                "traceback",
                f"the last traceback: {name[len('traceback ') :]} (%memlab gc drops it)",
            )
        if is_history_name(name):
            return Holder("history", f"{name} (output history: %memlab gc drops it)")
        return Holder("variable", f"notebook variable {name}")

    def _tasks_taking(self, oid: str, count: int) -> list[Holder]:
        found = []
        for task in self.tasks.values():
            if task["state"] in ("pending", "running") and oid in task["deps"]:
                where = f", running on {task['worker']}" if task["state"] == "running" else ""
                site = f" submitted at {task['call_site']}" if task["call_site"] else ""
                found.append(
                    Holder("task", f"argument of {task['state']} task {task['name']}{site}{where}")
                )
        if len(found) < count:
            found.append(
                Holder(
                    "task",
                    f"{count - len(found)} more pending task(s) that take it inside an argument",
                )
            )
        return found

    def _borrower(self, proc: str, oid: str) -> Holder:
        running = [
            t for t in self.tasks.values() if t["state"] == "running" and t["worker"] == proc
        ]
        actors = self.actors_by_worker.get(proc, [])
        if actors:
            actor = actors[0]
            label = actor["name"] or actor["actor_id"][:12]
            holder = Holder("actor", f"actor {label} on {proc} holds it (borrowed)")
            for handle in self.scan.actors.get(actor["actor_id"], []):
                holder.holders.append(
                    Holder("handle", f"actor handle {handle} in the notebook keeps the actor alive")
                )
            return holder
        if running:
            tasks = ", ".join(
                f"{t['name']}" + (f" (submitted at {t['call_site']})" if t["call_site"] else "")
                for t in running
            )
            return Holder("borrower", f"borrowed by worker {proc}, running {tasks}")
        return Holder("borrower", f"borrowed by process {proc}")
