"""``@memlab.remote`` functions: options, argument packing and submission.

Owns the translation of a Python call into a ``TaskSpec``: top-level ObjectRef arguments become
dependencies (resolved before the task runs), refs nested deeper are pickled as refs (borrowed
by the worker), and large plain arguments are put into the shared-memory store once rather than
copied through a socket. The function itself is pickled once (by value for notebook code) and
identified by the hash of its bytes, so re-running a cell does not re-export an unchanged
function.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import pickle
import sys
from typing import Any

from memlab.exceptions import SerializationError
from memlab.ids import object_id
from memlab.protocol.frames import MAX_FUNCTION_BYTES, MAX_INLINE_ARGS_BYTES
from memlab.runtime.object_ref import ObjectRef, check_session
from memlab.runtime.task_spec import ArgRef, TaskSpec, call_site
from memlab.serialization import dumps_code, serialize

DEFAULT_OPTIONS: dict[str, Any] = {
    "num_returns": 1,
    "max_retries": 3,
    "retry_exceptions": False,
    "name": None,
}


def validate_options(options: dict[str, Any]) -> dict[str, Any]:
    unknown = set(options) - set(DEFAULT_OPTIONS)
    if unknown:
        raise TypeError(
            f"unknown remote option(s) {sorted(unknown)}; valid options are "
            f"{sorted(DEFAULT_OPTIONS)}"
        )
    check_count(options, "num_returns", 1)
    check_count(options, "max_retries", 3, unlimited=True)
    return options


def check_count(options: dict[str, Any], key: str, default: int, unlimited: bool = False) -> None:
    """``options[key]`` must be a positive int, or with ``unlimited`` an int >= 0 or -1."""
    value = options.get(key, default)
    ok = isinstance(value, int) and not isinstance(value, bool)
    if unlimited and not (ok and value >= -1):
        raise ValueError(f"{key} must be an int >= 0, or -1 for unlimited; got {value!r}")
    if not unlimited and not (ok and value >= 1):
        raise ValueError(f"{key} must be a positive int, got {value!r}")


class RemoteFunction:
    """A function that runs as a task on a worker: ``f.remote(*args)`` returns ObjectRef(s)."""

    def __init__(self, fn: Any, options: dict[str, Any]) -> None:
        self._function = fn
        self._options = {**DEFAULT_OPTIONS, **validate_options(options)}
        self._pickled: bytes | None = None
        self._hash: bytes | None = None
        self._captured: tuple[ObjectRef, ...] = ()  # refs its code holds (see ``ship``)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"remote function {self._function.__name__!r} cannot be called directly; call "
            f"{self._function.__name__}.remote(...) to run it as a task"
        )

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return _submit(self, args, kwargs, self._options)

    def options(self, **options: Any) -> _BoundOptions:
        """Override options for one call: ``f.options(num_returns=2).remote(x)``."""
        return _BoundOptions(self, {**self._options, **validate_options(options)})

    def _pickled_function(self) -> tuple[bytes, bytes]:
        if self._pickled is None:
            self._hash, self._pickled, self._captured = ship(self._function, self)
        return self._hash, self._pickled  # type: ignore[return-value]


def ship(code: Any, wrapper: Any) -> tuple[bytes, bytes, tuple[ObjectRef, ...]]:
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
    if isinstance(obj, RemoteFunction):
        return obj._function
    from memlab.actor import ActorClass

    return obj._cls if isinstance(obj, ActorClass) else obj


class _BoundOptions:
    def __init__(self, fn: RemoteFunction, options: dict[str, Any]) -> None:
        self._fn = fn
        self._options = options

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return _submit(self._fn, args, kwargs, self._options)


def _submit(
    rf: RemoteFunction, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]
) -> Any:
    from memlab.api import _core

    core = _core("f.remote()")
    fn_hash, fn_bytes = rf._pickled_function()
    submitter = core.submitter
    if fn_hash not in submitter.functions:
        submitter.add_function(fn_hash, fn_bytes, bool(rf._captured))
    name = options["name"] or getattr(rf._function, "__qualname__", "task")
    keep: list[Any] = []  # refs that must live until the task holds them
    payload, deps, nested = _pack(core, name, args, kwargs, keep)
    task_id = core.ids.task_id()
    returns = [object_id(task_id, i) for i in range(options["num_returns"])]
    spec = TaskSpec(
        task_id,
        name,
        fn_hash,
        payload,
        deps,
        nested,
        returns,
        options["max_retries"],
        options["retry_exceptions"],
        call_site(),
    )
    spec.capture(rf._captured)
    refs = submitter.submit(spec, keep)
    return refs[0] if len(refs) == 1 else refs


def _pack(
    core: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], keep: list[Any]
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
    core: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], keep: list[Any]
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
