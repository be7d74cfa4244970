"""``ObjectRef``: a first-class reference to an immutable object in the shared address space.

A ref is 16 bytes of id plus the owner's process id, so any holder reaches the owner directly
(there is no central directory). Creating and dropping an instance updates this process's
reference table (``local`` count); pickling one records it as contained in the value being
pickled, and unpickling one registers this process as a borrower with the owner before the
handoff completes (see ``memlab.core.ownership``).
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from memlab.runtime import context
from memlab.serialization.context import record_ref

# The type of the value a ref names, for type checkers only (refs are immutable: covariant).
_T_co = TypeVar("_T_co", covariant=True)

# A front end's HTML view of a ref (set by ``memlab.jupyter``; this layer never imports IPython).
_html_renderer: Callable[[ObjectRef[Any]], str] | None = None


def set_html_renderer(render: Callable[[ObjectRef[Any]], str] | None) -> None:
    global _html_renderer
    _html_renderer = render


class ObjectRef(Generic[_T_co]):
    """A reference to an object that may not exist yet; pass it to tasks or ``memlab.get`` it.

    Refs are hashable and compare by object id. ``ref.hex()`` is the id used by ``memlab.state``.
    ``ObjectRef[T]`` is a ref to a value of type ``T``: ``memlab.get`` of it returns a ``T``.
    """

    __slots__ = ("__weakref__", "_core", "_id", "_owner")

    def __init__(self, object_id: bytes, owner: str, _core_: Any = None) -> None:
        # Refs made by the runtime are already counted; ``_core_`` says which table holds them.
        self._id = object_id
        self._owner = owner
        self._core = _core_

    def hex(self) -> str:
        """The object id as a hex string (as in ``memlab.state.objects()``)."""
        return self._id.hex()

    @property
    def binary(self) -> bytes:
        return self._id

    @property
    def owner(self) -> str:
        """The id of the process that owns this object."""
        return self._owner

    def __hash__(self) -> int:
        return hash(self._id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectRef) and other._id == self._id

    def __repr__(self) -> str:
        return f"ObjectRef({self._id.hex()[:16]}…, owner={self._owner})"

    def local_info(self) -> dict[str, Any] | None:
        """What this process's reference table knows of the object, without asking anyone.

        A cheap local read for reprs: ``{"owner", "owned", "state", "size", "call_site",
        "holders"}`` (``holders`` as in ``memlab.state.objects()``; a borrower knows only its
        own counts), or None when the runtime is not running or the object left the table.
        """
        core = context.core
        if core is None:
            return None
        with core.lock:  # the reader threads change the entry's sets
            entry = core.table.get(self._id)
            if entry is None:
                return None
            return {
                "owner": entry.owner,
                "owned": entry.owned,
                "state": entry.state,
                "size": entry.size,
                "call_site": entry.call_site,
                "holders": entry.holders(),
            }

    def _repr_html_(self) -> str | None:
        render = _html_renderer
        return None if render is None else render(self)

    def __reduce__(self) -> tuple[Any, tuple[bytes, str]]:
        if self._core is not context.core and context.core is not None:
            raise stale_ref_error(self)  # a task argument or put value holds an old ref
        record_ref(self)
        return _rebuild_ref, (self._id, self._owner)

    def __del__(self) -> None:
        core = self._core
        if core is context.core and core is not None:
            core.remove_local_ref(self._id)

    def future(self) -> concurrent.futures.Future[Any]:
        """A ``concurrent.futures.Future`` that completes with the object's value (or error)."""
        core = context.core
        if core is None:
            from memlab.exceptions import RuntimeNotStartedError

            raise RuntimeNotStartedError("ObjectRef.future()")
        check_session(self)
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def resolve() -> None:
            # A thread that waits like ``get``: a value on another node is fetched, which a
            # reader thread's callback must never do.
            try:
                future.set_result(core.get([self])[0])
            except BaseException as exc:
                future.set_exception(exc)

        threading.Thread(target=resolve, name="memlab-ref-future", daemon=True).start()
        return future

    def __await__(self) -> Any:
        import asyncio

        return asyncio.wrap_future(self.future()).__await__()


def check_session(ref: ObjectRef) -> None:
    """Refuse a ref made by an earlier session's core (kept across ``shutdown``/``init``).

    Its ids mean nothing to this session's tables: used as is it would read as "not held" or
    "freed", which sends the user looking for a bug that is not there.
    """
    if ref._core is not context.core and context.core is not None:
        raise stale_ref_error(ref)


def stale_ref_error(ref: ObjectRef) -> Exception:
    from memlab.exceptions import StaleRefError

    entry = None
    # The ended session's table is still in memory while this ref lives: it knows the call site.
    table = getattr(ref._core, "table", None)
    if table is not None:
        entry = table.get(ref._id)
    return StaleRefError(ref.hex(), getattr(entry, "call_site", None))


def _rebuild_ref(object_id: bytes, owner: str) -> ObjectRef:
    core = context.core
    if core is None:
        from memlab.exceptions import RuntimeNotStartedError

        raise RuntimeNotStartedError()
    return core.ref_from_wire(object_id, owner)
