"""Collect the ObjectRefs met while a value is pickled.

This module owns a per-thread stack of lists. ``collecting_refs()`` pushes a
fresh list for the duration of a ``with`` block; ``record_ref`` (called from
``ObjectRef.__reduce__`` in the runtime) appends to the innermost list. It
never imports the ref class, so serialization stays below the runtime layer.

Invariants:
- A ref is recorded in exactly one list: the innermost active one in the
  calling thread. Nested contexts (a ``__reduce__`` that itself serializes a
  sub-value) therefore never mix their refs.
- Outside any context ``record_ref`` is a no-op: plain ``pickle.dumps`` of a
  ref works and records nothing.
- Each thread has its own stack; concurrent serializations do not interfere.
"""

from __future__ import annotations

import threading
from types import TracebackType

_local = threading.local()


def _stack() -> list[list[object]]:
    try:
        stack: list[list[object]] = _local.stack
    except AttributeError:
        stack = _local.stack = []
    return stack


class _Collecting:
    """Context manager returned by ``collecting_refs`` (a class: cheaper than a generator)."""

    __slots__ = ("_refs",)

    def __init__(self) -> None:
        self._refs: list[object] = []

    def __enter__(self) -> list[object]:
        _stack().append(self._refs)
        return self._refs

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack = _stack()
        # Pop by identity, not blindly: an exception must never leave a stale
        # list that would capture refs of a later, unrelated serialization.
        for i in range(len(stack) - 1, -1, -1):
            if stack[i] is self._refs:
                del stack[i]
                break


def collecting_refs() -> _Collecting:
    """Record the refs pickled inside the ``with`` block into a fresh list.

    Example::

        with collecting_refs() as refs:
            pickler.dump(value)
        # refs now holds every ObjectRef met, in pickling order

    Returns:
        A context manager whose ``__enter__`` returns the list.
    """
    return _Collecting()


def record_ref(ref: object) -> None:
    """Append ``ref`` to the innermost active ``collecting_refs`` list, if any.

    Args:
        ref: The ObjectRef being pickled.
    """
    stack = getattr(_local, "stack", None)
    if stack:
        stack[-1].append(ref)
