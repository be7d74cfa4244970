"""Which notebook names hold which objects: what only the kernel can see.

The collector knows that the driver holds three refs to an object; only the kernel knows they
are ``x``, ``parts[2]`` and ``Out[4]``. ``HolderIndex.scan()`` walks the user namespace, the
output history and the last traceback's frames, and maps each object id (hex) to its holder
names, e.g. ``["x", "parts[2]", "Out[4]"]``; actor handles are mapped by actor id.

Cost bounds (a notebook may hold millions of values): the walk descends at most ``max_depth``
containers deep, visits at most ``max_items`` values and stops after ``budget`` seconds
(marking the result ``truncated``); it runs only when a view, ``%memlab refs`` or ``why`` asks,
and ``names()`` reuses a scan younger than ``min_interval`` (500 ms). ``benchmarks/notebook.py``
measures it at 10,000 names and 10,000 refs.
"""

from __future__ import annotations

import re
import sys
import time
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from memlab.actor import ActorHandle
from memlab.runtime.coreworker.object_ref import ObjectRef

# IPython's own bookkeeping: never a user's holder (Out is walked as ``Out[N]``).
_SKIP = frozenset(
    {
        "In",
        "Out",
        "_oh",
        "_ih",
        "_dh",
        "exit",
        "quit",
        "get_ipython",
        "_ii",
        "_iii",
        "_i",
        "__builtins__",
        "__builtin__",
        "__name__",
        "__doc__",
        "__package__",
        "__loader__",
        "__spec__",
    }
)
HISTORY_UNDERS = ("_", "__", "___")
_LEAVES = (
    str,
    bytes,
    bytearray,
    int,
    float,
    complex,
    bool,
    type(None),
    types.ModuleType,
    type,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    range,
)


@dataclass
class Scan:
    """One walk's result: holder names per object id and per actor id."""

    objects: dict[str, list[str]] = field(default_factory=dict)
    actors: dict[str, list[str]] = field(default_factory=dict)
    refs: dict[str, list[ObjectRef[Any]]] = field(default_factory=dict)
    visited: int = 0
    seconds: float = 0.0
    truncated: bool = False
    at: float = 0.0


def is_history_name(name: str) -> bool:
    """``Out[4]``, ``_4``, ``_``/``__``/``___`` (or inside them, ``Out[4][0]``): a holder in
    IPython's output history."""
    root = _ROOT.match(name)
    first = root.group(0) if root else name
    return (
        first == "Out" or first in HISTORY_UNDERS or (first.startswith("_") and first[1:].isdigit())
    )


_ROOT = re.compile(r"^[A-Za-z_]\w*")


def _is_input_history(name: str) -> bool:
    return name in ("_i", "_ii", "_iii") or (name.startswith("_i") and name[2:].isdigit())


def is_traceback_name(name: str) -> bool:
    return name.startswith("traceback ")


Found = tuple[tuple[str, Any], ...]  # (path suffix such as "[2]", ref or actor handle)
_NOTHING: Found = ()


class _Walk:
    """One walk. A container reached by two names (``parts`` and ``Out[4]``) is walked once:
    what it holds is remembered (``memo``) and named again under each path."""

    def __init__(
        self, scan: Scan, max_depth: int, max_items: int, deadline: float, keep_refs: bool
    ) -> None:
        self.scan = scan
        self.max_depth = max_depth
        self.max_items = max_items
        self.deadline = deadline
        self.keep_refs = keep_refs
        self.memo: dict[int, tuple[int, Found]] = {}  # id -> (depth walked at, what it holds)
        self.active: set[int] = set()  # containers being walked (a cycle ends there)

    def visit(self, value: Any, path: str) -> None:
        """Name every ref and actor handle reachable from ``value`` under ``path``."""
        if type(value) is ObjectRef or type(value) is ActorHandle:
            self._record(path, value)
            return
        for suffix, leaf in self._inside(value, 0):
            self._record(path + suffix, leaf)

    def _record(self, path: str, leaf: Any) -> None:
        scan = self.scan
        if type(leaf) is ObjectRef:
            key = leaf.hex()
            scan.objects.setdefault(key, []).append(path)
            if self.keep_refs:
                scan.refs.setdefault(key, []).append(leaf)
        else:
            scan.actors.setdefault(leaf._actor_id.hex(), []).append(path)

    def _tick(self) -> None:
        scan = self.scan
        scan.visited += 1
        if scan.visited >= self.max_items or (
            scan.visited % 1024 == 0 and time.perf_counter() > self.deadline
        ):
            scan.truncated = True
            raise _Stop

    def _inside(self, value: Any, depth: int) -> Found:
        if depth >= self.max_depth or isinstance(value, _LEAVES):
            return _NOTHING
        key = id(value)
        memo = self.memo.get(key)
        if memo is not None and memo[0] <= depth:
            return memo[1]
        if key in self.active:
            return _NOTHING
        kind = type(value)
        if kind is list or kind is tuple:
            items: Any = ((f"[{i}]", item) for i, item in enumerate(value))
        elif kind is dict:
            items = ((f"[{k!r}]", item) for k, item in value.items())
        elif kind is set or kind is frozenset:
            items = ((f"{{{item.hex()[:8]}…}}", item) for item in value if type(item) is ObjectRef)
        else:
            if kind.__module__ in _FOREIGN_MODULES:
                return _NOTHING
            try:  # never through __getattr__: a proxy's could compute, or call out
                attrs = object.__getattribute__(value, "__dict__")
            except (AttributeError, TypeError):
                return _NOTHING
            if type(attrs) is not dict:
                return _NOTHING
            items = ((f".{k}", item) for k, item in attrs.items())
        self.active.add(key)
        found: list[tuple[str, Any]] = []
        try:
            for suffix, item in items:
                self._tick()
                if type(item) is ObjectRef or type(item) is ActorHandle:
                    found.append((suffix, item))
                elif not isinstance(item, _LEAVES):
                    found += [(suffix + s, leaf) for s, leaf in self._inside(item, depth + 1)]
        finally:
            self.active.discard(key)
        result = tuple(found) if found else _NOTHING
        self.memo[key] = (depth, result)
        return result


# Objects of these libraries hold no refs worth a walk (and can be huge).
_FOREIGN_MODULES = frozenset(
    {
        "numpy",
        "pandas.core.frame",
        "pandas.core.series",
        "pyarrow.lib",
        "IPython.core.interactiveshell",
    }
)


class _Stop(Exception):
    pass


def scan_shell(
    shell: Any,
    *,
    max_depth: int = 3,
    max_items: int = 500_000,
    budget: float = 0.25,
    keep_refs: bool = False,
) -> Scan:
    """Walk ``shell``'s namespace, ``Out`` history and last traceback once.

    Args:
        shell: The IPython shell (anything with ``user_ns`` and ``user_ns_hidden``).
        max_depth: Containers deeper than this are not entered.
        max_items: Values visited at most; past it the scan stops (``truncated``).
        budget: Seconds the walk may take at most (``truncated`` past it).
        keep_refs: Also collect the ref instances themselves (``Scan.refs``), for ``gc``.
    """
    start = time.perf_counter()
    scan = Scan(at=time.monotonic())
    walk = _Walk(scan, max_depth, max_items, start + budget, keep_refs)
    ns: dict[str, Any] = shell.user_ns
    hidden: dict[str, Any] = getattr(shell, "user_ns_hidden", {})
    try:
        for name, value in list(ns.items()):
            if name in _SKIP or (
                name in hidden and hidden[name] is value and name not in HISTORY_UNDERS
            ):
                continue
            if (name[:1] == "_" and name[1:].isdigit()) or _is_input_history(name):
                continue  # _4 is Out[4] again; _i4 is input history
            if not isinstance(value, _LEAVES):
                _visit_root(walk, value, name)
        out = ns.get("Out")
        if isinstance(out, dict):
            for number, value in list(out.items()):
                if not isinstance(value, _LEAVES):
                    _visit_root(walk, value, f"Out[{number}]")
        _scan_traceback(walk, ns)
        for roots in _EXTRA_ROOTS:
            for name, value in roots():
                _visit_root(walk, value, name)
    except _Stop:
        pass
    for names in scan.objects.values():
        if len(names) > 1:  # variables first, then the output history, then the traceback
            names.sort(key=_name_order)
    scan.seconds = time.perf_counter() - start
    return scan


def _name_order(name: str) -> int:
    return 2 if is_traceback_name(name) else 1 if is_history_name(name) else 0


def _visit_root(walk: _Walk, value: Any, name: str) -> None:
    try:
        walk.visit(value, name)
    except RuntimeError:  # a container changed size under a scan from a view's thread: skip it
        pass


def _scan_traceback(walk: _Walk, ns: dict[str, Any]) -> None:
    error = getattr(sys, "last_value", None)
    if error is not None and not isinstance(error, _LEAVES):
        walk.visit(error, "traceback exception")
    tb = getattr(sys, "last_traceback", None)
    while tb is not None:
        frame = tb.tb_frame
        module = frame.f_globals.get("__name__", "")
        if frame.f_locals is not ns and not module.startswith(_TOOL_MODULES):
            where = f"{frame.f_code.co_name}()"
            for name, value in list(frame.f_locals.items()):
                if not isinstance(value, _LEAVES):
                    walk.visit(value, f"traceback {where} local {name}")
        tb = tb.tb_next


# Frames of the tools between the cell and the user's code: their locals are not the user's.
_TOOL_MODULES = ("memlab", "IPython", "ipykernel", "asyncio", "tornado", "runpy")


class HolderIndex:
    """A scan of one shell, redone at most every ``min_interval`` seconds, on demand only."""

    def __init__(self, shell: Any, min_interval: float = 0.5, **limits: Any) -> None:
        self.shell = shell
        self.min_interval = min_interval
        self.limits = limits
        self._last: Scan | None = None

    def scan(self, fresh: bool = False) -> Scan:
        last = self._last
        if fresh or last is None or time.monotonic() - last.at >= self.min_interval:
            last = self._last = scan_shell(self.shell, **self.limits)
        return last

    def names(self) -> dict[str, list[str]]:
        """Object id (hex) → holder names, from a scan at most ``min_interval`` old."""
        return self.scan().objects

    def invalidate(self) -> None:
        self._last = None


_active: HolderIndex | None = None
# Holders the kernel keeps on the user's behalf, by name (e.g. %%remote's store copies).
_EXTRA_ROOTS: list[Callable[[], Iterable[tuple[str, Any]]]] = []


def register_roots(roots: Callable[[], Iterable[tuple[str, Any]]]) -> None:
    """Make ``roots()``'s ``(name, value)`` pairs holders in every scan."""
    if roots not in _EXTRA_ROOTS:
        _EXTRA_ROOTS.append(roots)


def set_active(index: HolderIndex | None) -> None:
    global _active
    _active = index


def active() -> HolderIndex | None:
    """The holder index of the shell that loaded the extension, for views (the dashboard)
    that show holder names: ``active().names()`` maps object ids to names."""
    return _active
