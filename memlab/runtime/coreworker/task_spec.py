"""What the owner keeps of a submitted task, and the markers that stand for resolved arguments.

A ``TaskSpec`` is the task's lineage: enough to run it again (function hash, argument bytes,
dependencies) plus its retry budget and where it runs now. Top-level ObjectRef arguments are
replaced by ``ArgRef(i)`` markers before the arguments are pickled; the worker swaps each marker
for the value of dependency ``i`` (read zero-copy when it lives in shared memory).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memlab.runtime.coreworker.placement import NodeAffinity


class ArgRef:
    """Marker for the value of dependency ``i`` of a task."""

    __slots__ = ("i",)

    def __init__(self, i: int) -> None:
        self.i = i

    def __reduce__(self) -> tuple[Any, tuple[int]]:
        return ArgRef, (self.i,)


class TaskSpec:
    __slots__ = (
        "actor",
        "args",
        "attempt",
        "call_site",
        "cancelled",
        "captured",
        "deps",
        "fn_hash",
        "held",
        "lineage_bytes",
        "lineage_evicted",
        "live_returns",
        "lost_retries",
        "max_retries",
        "name",
        "nested",
        "node_affinity",
        "num_returns",
        "output",
        "pinned",
        "pushed_at",
        "rebuilding",
        "remaining",
        "resolved",
        "retry_exceptions",
        "returns",
        "task_id",
        "worker",
    )

    def __init__(
        self,
        task_id: bytes,
        name: str,
        fn_hash: bytes,
        args: bytes,
        deps: list[tuple[bytes, str]],
        nested: list[bytes],
        returns: list[bytes],
        max_retries: int,
        retry_exceptions: bool,
        call_site: str | None,
    ) -> None:
        self.task_id = task_id
        self.name = name
        self.fn_hash = fn_hash
        self.args = args
        self.deps = deps  # (object id, owner) of each top-level ref argument
        self.nested = nested  # ids of refs pickled inside the arguments (borrowed by the worker)
        self.returns = returns
        self.num_returns = len(returns)
        self.max_retries = max_retries
        self.retry_exceptions = retry_exceptions
        self.call_site = call_site
        self.attempt = 0
        self.worker: str | None = None
        self.pushed_at = 0.0  # when it was last handed to a lease (pipelining looks at it)
        self.resolved: list[Any] = []
        self.remaining = 0
        self.cancelled = False
        self.node_affinity: NodeAffinity | None = None  # run on this node (placement.py)
        self.actor: tuple[Any, ...] | None = None  # (actor id, "create" | "call", detail)
        self.rebuilding = False  # re-running to rebuild lost results
        self.pinned: list[bytes] = []  # owned arguments kept for this task's lineage
        self.live_returns = 0
        self.lineage_bytes = 0
        self.lineage_evicted = False
        self.lost_retries = 0
        self.held = [d for d, _ in deps] + nested  # counted in the owner's ``tasks`` while pending
        # Refs captured in the function's (or actor class's) code: the pickled code holds them,
        # so the spec keeps them alive while it may be run (or re-run from lineage).
        self.captured: tuple[Any, ...] = ()
        # Where its stdout/stderr goes (``output_channel.route``): a front end's tag (str) or
        # the capture of the task that submitted it here.
        self.output: Any = None

    def capture(self, refs: tuple[Any, ...]) -> None:
        """The task's code holds these ObjectRefs; count them as its arguments are."""
        if refs:
            self.captured = refs
            self.held.extend(r.binary for r in refs)

    def may_retry(self) -> bool:
        return self.max_retries < 0 or self.attempt < self.max_retries


# One string per call site, shared by every ref made there: a loop that makes 100k refs would
# otherwise keep 100k equal strings alive in the owner's tables and the event log.
_SITES: dict[tuple[str, int], str] = {}
_MAX_SITES = 4096

# A front end's names for files it compiled (a notebook kernel's cells are temporary files):
# filename -> label such as "Cell In[3]", or None for files it does not know. Set by
# ``memlab.jupyter``; this layer never imports IPython.
_translate: Callable[[str], str | None] | None = None


def set_filename_translator(translate: Callable[[str], str | None] | None) -> None:
    """Name call sites in files ``translate`` knows as ``"<label>, line <n>"`` (None: stop)."""
    global _translate
    _translate = translate


def filename_translator() -> Callable[[str], str | None] | None:
    return _translate


def call_site(skip_package: str = "memlab") -> str | None:
    """``file:line`` of the first frame outside memlab: where the user made the ref."""
    frame = sys._getframe(2)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if not (module == skip_package or module.startswith(skip_package + ".")):
            filename = frame.f_code.co_filename
            translate = _translate
            label = None if translate is None else translate(filename)
            key = (filename if label is None else label, frame.f_lineno)
            site = _SITES.get(key)
            if site is None:
                if len(_SITES) >= _MAX_SITES:
                    _SITES.clear()
                site = _SITES[key] = (
                    f"{key[0]}:{key[1]}" if label is None else f"{label}, line {key[1]}"
                )
            return site
        frame = frame.f_back  # type: ignore[assignment]
    return None
