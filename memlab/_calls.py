"""A Python call turned into what a ``TaskSpec`` carries: the shipped code and the arguments.

Top-level ObjectRef arguments of a task become dependencies (resolved before the task runs);
refs nested deeper are pickled as refs (borrowed by the worker); large plain arguments are put
into the shared-memory store once rather than copied through a socket. Code is pickled once (by
value for notebook code) and identified by the hash of its bytes, so re-running a cell does not
re-export an unchanged function.
"""

from __future__ import annotations

import hashlib
import importlib
import pickle
import sys
from typing import TYPE_CHECKING, Any

from memlab.exceptions import SerializationError
from memlab.protocol.frames import MAX_FUNCTION_BYTES, MAX_INLINE_ARGS_BYTES
from memlab.runtime.coreworker.object_ref import ObjectRef, check_session
from memlab.runtime.coreworker.task_spec import ArgRef
from memlab.serialization import dumps_code, serialize

if TYPE_CHECKING:
    from memlab.runtime.coreworker.core_worker import CoreWorker


def ship(code: Any, wrapper: Any) -> tuple[bytes, bytes, tuple[ObjectRef[Any], ...]]:
    """``(content hash, bytes, captured refs)`` of a function or class to run remotely.

    Importable code (its module attribute is our ``wrapper``) ships by name, so the worker uses
    the module's real globals; notebook (``__main__``) or local code ships by value, together
    with the ObjectRefs its closure and globals hold (the captured refs: every task that runs
    this code counts them, as it counts its arguments).
    """
    module = sys.modules.get(code.__module__)
    captured: list[Any] = []
    if (
        code.__module__ != "__main__"
        and module is not None
        and getattr(module, code.__qualname__, None) is wrapper
    ):
        data = pickle.dumps(_ImportedFunction(code.__module__, code.__qualname__))
    else:
        data, captured = dumps_code(code)
    if len(data) > MAX_FUNCTION_BYTES:
        kind = "class" if isinstance(code, type) else "function"
        raise ValueError(
            f"remote {kind} {getattr(code, '__qualname__', code)!r} pickles to "
            f"{len(data) / 2**20:.1f} MiB, over the {MAX_FUNCTION_BYTES >> 20} MiB limit for "
            f"code; it captures a large value in its closure or globals. Pass the value as an "
            f"argument, or memlab.put() it and pass the ref"
        )
    unique = tuple({r.binary: r for r in captured if type(r) is ObjectRef}.values())
    return hashlib.blake2b(data, digest_size=16).digest(), data, unique


class _ImportedFunction:
    """A remote function shipped by name: the worker imports its module."""

    def __init__(self, module: str, qualname: str) -> None:
        self.module = module
        self.qualname = qualname

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return _import_function, (self.module, self.qualname)


def _import_function(module: str, qualname: str) -> Any:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    # A RemoteFunction or ActorClass wraps the user's code; the worker runs the code itself.
    return getattr(obj, "__memlab_target__", obj)


def pack_task_args(
    core: CoreWorker, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], keep: list[Any]
) -> tuple[bytes, list[tuple[bytes, str]], list[bytes]]:
    if not args and not kwargs:
        return b"", [], []
    deps: list[tuple[bytes, str]] = []

    def dep(value: Any) -> Any:
        if type(value) is ObjectRef:
            check_session(value)
            keep.append(value)
            deps.append((value.binary, value.owner))
            return ArgRef(len(deps) - 1)
        return value

    a = [dep(v) for v in args]
    k = {key: dep(v) for key, v in kwargs.items()}
    sv, refs = _serialize_args(name, a, k)
    if sv.total_size > core.inline_threshold:
        # Large plain arguments go to shared memory once, then travel as dependencies.
        for i, v in enumerate(a):
            if type(v) is not ArgRef and serialize(v).total_size > core.inline_threshold // 2:
                a[i] = dep(core.put(v))
        for key, v in k.items():
            if type(v) is not ArgRef and serialize(v).total_size > core.inline_threshold // 2:
                k[key] = dep(core.put(v))
        sv, refs = _serialize_args(name, a, k)
    _check_inline_args(name, sv.total_size)
    keep.extend(refs)
    return sv.to_bytes(), deps, [r.binary for r in refs]


def pack_nested(
    core: CoreWorker, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], keep: list[Any]
) -> tuple[bytes, list[bytes]]:
    """Arguments for actor work: every ref travels as a ref (the worker resolves top-level
    ones itself); large plain values go to shared memory once."""
    if not args and not kwargs:
        return b"", []
    a, k = list(args), dict(kwargs)
    sv, refs = _serialize_args(name, a, k)
    if sv.total_size > core.inline_threshold:
        for i, v in enumerate(a):
            if type(v) is not ObjectRef and serialize(v).total_size > core.inline_threshold // 2:
                a[i] = core.put(v)
        for key, v in k.items():
            if type(v) is not ObjectRef and serialize(v).total_size > core.inline_threshold // 2:
                k[key] = core.put(v)
        sv, refs = _serialize_args(name, a, k)
    _check_inline_args(name, sv.total_size)
    keep.extend(refs)
    return sv.to_bytes(), [r.binary for r in refs]


def _check_inline_args(name: str, size: int) -> None:
    # Many arguments each small enough to travel inline can add up past what a task message
    # may carry; a list of them is one argument, which goes through the store.
    if size > MAX_INLINE_ARGS_BYTES:
        raise ValueError(
            f"the arguments of {name}() that travel inline add up to {size / 2**20:.1f} MiB, "
            f"over the {MAX_INLINE_ARGS_BYTES >> 20} MiB a task message carries; pass them "
            f"as one list (large values go through shared memory), or memlab.put() them"
        )


def _serialize_args(name: str, a: list[Any], k: dict[str, Any]) -> tuple[Any, list[Any]]:
    try:
        sv = serialize((tuple(a), k))
        return sv, list(sv.contained_refs)
    except SerializationError as exc:
        for where, value in [
            *((f"argument {i}", v) for i, v in enumerate(a)),
            *((f"keyword argument {key!r}", v) for key, v in k.items()),
        ]:
            try:
                serialize(value)
            except SerializationError as inner:
                raise SerializationError(
                    f"{where} of {name}() cannot be serialized: {inner.message}",
                    inner.type_name,
                    where,
                ) from exc
        raise
