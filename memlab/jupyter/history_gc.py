"""``%memlab gc``: drop refs held only by IPython's output history and the last traceback.

``Out[4]``, ``_4``, ``_``/``__``/``___`` and ``sys.last_traceback`` keep values alive long
after the user stopped looking at them (DESIGN §3: ``Out[]`` is a holder like any other). This
drops those entries that hold a ref no notebook variable holds, then reports how many objects
and bytes were freed, as ``memlab.state`` sees it once the frees are through.
"""

from __future__ import annotations

import gc
import sys
import time
from typing import Any

import memlab.state as st
from memlab.jupyter.holders import is_history_name, is_traceback_name, scan_shell
from memlab.jupyter.parsing import format_bytes

FREE_TIMEOUT = 5.0  # seconds to wait for the frees to reach the collector


def collect_history(shell: Any) -> dict[str, Any]:
    """Drop history entries holding refs nothing else in the notebook holds.

    Returns:
        ``{"dropped": [holder names], "freed": n objects, "bytes": n, "pending": [ids]}``
        where ``pending`` lists objects dropped here that are still alive (another process
        or an unnamed ref holds them).
    """
    scan = scan_shell(shell, keep_refs=False, budget=2.0)
    candidates: dict[str, list[str]] = {}
    for oid, names in scan.objects.items():
        if names and all(is_history_name(n) or is_traceback_name(n) for n in names):
            candidates[oid] = names
    if not candidates:
        return {"dropped": [], "freed": 0, "bytes": 0, "pending": []}
    sizes = {o["object_id"]: o["size"] or 0 for o in st.objects()}
    dropped = sorted({n for names in candidates.values() for n in names})
    _drop(shell, dropped)
    del scan
    gc.collect()
    watched = [oid for oid in candidates if oid in sizes]
    deadline = time.monotonic() + FREE_TIMEOUT
    alive = set(watched)
    while alive and time.monotonic() < deadline:
        alive &= {o["object_id"] for o in st.objects()}
        if alive:
            time.sleep(0.05)  # the owner batches frees every few ms; polled with a deadline
    freed = [oid for oid in watched if oid not in alive]
    return {
        "dropped": dropped,
        "freed": len(freed),
        "bytes": sum(sizes[o] for o in freed),
        "pending": sorted(alive),
    }


def _drop(shell: Any, names: list[str]) -> None:
    ns = shell.user_ns
    out = ns.get("Out", {})
    tracebacks = False
    dropped: list[Any] = []
    for name in names:
        if name.startswith("Out["):
            number = int(name[4 : name.index("]")])
            value = out.pop(number, None)
            dropped.append(value)
            ns.pop(f"_{number}", None)
            getattr(shell, "user_ns_hidden", {}).pop(f"_{number}", None)
            for under in ("_", "__", "___"):  # they point at the most recent Out entries
                if value is not None and ns.get(under) is value:
                    _clear_under(shell, under)
        elif _root(name) in ("_", "__", "___"):
            dropped.append(ns.get(_root(name)))
            _clear_under(shell, _root(name))
        elif is_traceback_name(name):
            tracebacks = True
    # The shell's result of the last cell holds its value too, while the next cell runs.
    last = getattr(shell, "last_execution_result", None)
    if last is not None and any(last.result is v for v in dropped if v is not None):
        last.result = None
    if tracebacks:
        # Others keep the traceback too (the shell's last execution result holds the
        # exception): clearing its frames' locals lets go of the refs wherever it is held.
        _clear_frames(getattr(sys, "last_traceback", None))
        for attr in ("last_traceback", "last_value", "last_type"):
            if hasattr(sys, attr):
                setattr(sys, attr, None)


def _root(name: str) -> str:
    end = min(
        (i for i in (name.find("["), name.find("."), name.find("{")) if i >= 0), default=len(name)
    )
    return name[:end]


def _clear_frames(tb: Any) -> None:
    while tb is not None:
        frame = tb.tb_frame
        # Python 3.11's frame.clear() keeps the f_locals snapshot (the holder scan made one).
        frame.f_locals.clear()
        try:
            frame.clear()
        except RuntimeError:  # still executing (this very call's callers): leave it
            pass
        tb = tb.tb_next


def _clear_under(shell: Any, under: str) -> None:
    # The display hook keeps its own copy, and updates the unders later only while the
    # namespace's (and the hidden namespace's) values are its own: keep all three in step.
    shell.user_ns[under] = ""
    hidden = getattr(shell, "user_ns_hidden", None)
    if hidden is not None and under in hidden:
        hidden[under] = ""
    hook = getattr(shell, "displayhook", None)
    if hook is not None and hasattr(hook, under):
        setattr(hook, under, "")


def report(result: dict[str, Any]) -> str:
    if not result["dropped"]:
        return "Nothing to collect: no ref is held only by Out[], _, __, ___ or the last traceback."
    text = (
        f"Dropped {', '.join(result['dropped'])}: freed {result['freed']} object(s), "
        f"{format_bytes(result['bytes'])}."
    )
    if result["pending"]:
        text += (
            f" {len(result['pending'])} object(s) stay alive because another process or "
            "an unnamed ref still holds them (see %memlab why ID)."
        )
    return text
