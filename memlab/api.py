"""The public API, with Ray's names and semantics: init, shutdown, remote, get, put, wait, cancel.

Every function works in the driver and inside tasks (a worker is a core worker too: what a task
creates, the worker owns). Misuse raises a typed error whose message says what to call instead.
"""

from __future__ import annotations

import math
import numbers
import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, cast, overload

from memlab._options import ACTOR_ONLY, check_decorator_options, validate_task_options
from memlab.actor import ActorClass, ActorHandle
from memlab.exceptions import RuntimeConflictError
from memlab.protocol.frames import MAX_INLINE_THRESHOLD
from memlab.remote_function import RemoteFunction
from memlab.runtime import context
from memlab.runtime.context import require_core
from memlab.runtime.coreworker import object_ref as _object_ref
from memlab.runtime.coreworker.object_ref import ObjectRef

if TYPE_CHECKING:
    from memlab.runtime.driver.runtime import Runtime

_P = ParamSpec("_P")
_R = TypeVar("_R")
_T = TypeVar("_T")
_C = TypeVar("_C")

_init_lock = threading.Lock()

# A front end's wrapper around blocking ``get``/``wait`` (``memlab.jupyter`` shows a progress
# bar past 2 s and cancels the awaited tasks on KeyboardInterrupt). Called as
# ``hook(verb, refs, need, timeout, call)``: ``need`` of ``refs`` must be ready, and ``call(t)``
# does the operation with timeout ``t``.
BlockingHook = Callable[[str, list[ObjectRef[Any]], int, "float | None", Callable[[Any], Any]], Any]
_blocking_hook: BlockingHook | None = None


def set_blocking_hook(hook: BlockingHook | None) -> None:
    global _blocking_hook
    _blocking_hook = hook


def init(
    num_workers: int | None = None,
    num_nodes: int | None = None,
    object_store_memory: int | None = None,
    *,
    inline_threshold: int | None = None,
    events: bool | None = None,
    lineage_budget: int | None = None,
    plasma_directory: str | None = None,
) -> Runtime:
    """Start the runtime, or return the running one when the arguments agree with it.

    Args:
        num_workers: worker processes in all (default: the number of CPUs).
        num_nodes: simulated nodes, each with its own store and workers (default 1).
        object_store_memory: bytes of shared memory for all stores together (default: 30% of
            available memory).
        inline_threshold: values up to this many bytes travel inline instead of through shared
            memory (default 100 KiB, at most 16 MiB).
        events: emit the event stream that dashboards read (default True).
        lineage_budget: bytes of task lineage each owner keeps for rebuilding lost objects
            (default 1 GiB); past it the oldest lineage is dropped.
        plasma_directory: the directory of the stores' shared-memory files (default
            /dev/shm). A tmpfs mounted with ``huge=always`` gives the stores huge pages, which
            makes reading large values faster (Ray's ``_plasma_directory``).

    Raises:
        RuntimeConflictError: a runtime runs with different arguments; call
            ``memlab.shutdown()`` first.
        ValueError: an argument is out of range, or ``plasma_directory`` is not a writable
            directory.
    """
    from memlab.runtime.coreworker.recovery import DEFAULT_LINEAGE_BUDGET
    from memlab.runtime.driver.runtime import Runtime, RuntimeOptions
    from memlab.runtime.session import check_plasma_directory, place_store

    asked = {
        "num_workers": num_workers,
        "num_nodes": num_nodes,
        "object_store_memory": object_store_memory,
        "inline_threshold": inline_threshold,
        "events": events,
        "lineage_budget": lineage_budget,
        "plasma_directory": plasma_directory,
    }
    for key in (
        "num_workers",
        "num_nodes",
        "object_store_memory",
        "inline_threshold",
        "lineage_budget",
    ):
        value = asked[key]
        if value is not None and (
            not isinstance(value, int)
            or isinstance(value, bool)
            or value < (0 if key == "inline_threshold" else 1)
        ):
            raise ValueError(f"{key} must be a positive int, got {value!r}")
    if inline_threshold is not None and inline_threshold > MAX_INLINE_THRESHOLD:
        raise ValueError(
            f"inline_threshold must be at most {MAX_INLINE_THRESHOLD} bytes "
            f"({MAX_INLINE_THRESHOLD >> 20} MiB), got {inline_threshold}; larger "
            "values are read faster from shared memory than through a socket"
        )
    if plasma_directory is not None:
        plasma_directory = asked["plasma_directory"] = check_plasma_directory(plasma_directory)
    with _init_lock:
        running = context.current_runtime()
        if running is not None:
            current = vars(running.options)
            differences = {
                k: (current[k], v) for k, v in asked.items() if v is not None and current[k] != v
            }
            if differences:
                raise RuntimeConflictError(differences)
            return cast("Runtime", running)  # the one runtime a driver runs is this class
        if context.current_core() is not None:
            raise RuntimeError(
                "memlab.init() is for the driver; inside a task the runtime is already running"
            )
        # A small /dev/shm moves the stores to the temporary directory (with a warning).
        store_memory, store_directory = place_store(object_store_memory, plasma_directory)
        options = RuntimeOptions(
            num_workers=num_workers or os.cpu_count() or 1,
            num_nodes=num_nodes or 1,
            object_store_memory=store_memory,
            inline_threshold=100 * 1024 if inline_threshold is None else inline_threshold,
            events=True if events is None else events,
            lineage_budget=DEFAULT_LINEAGE_BUDGET if lineage_budget is None else lineage_budget,
            plasma_directory=store_directory,
        )
        if options.num_nodes > options.num_workers:
            raise ValueError(
                f"num_nodes={options.num_nodes} needs at least as many workers; "
                f"got num_workers={options.num_workers}"
            )
        return Runtime(options).start()


def shutdown() -> None:
    """Stop the runtime: every process and shared-memory segment of the session goes."""
    with _init_lock:
        runtime = context.current_runtime()
        if runtime is not None:
            runtime.shutdown()


def is_initialized() -> bool:
    """True while a runtime started by ``init`` runs in this process."""
    return context.current_runtime() is not None


class RemoteDecorator(Protocol):
    """What ``memlab.remote(option=value, ...)`` returns: apply it to a function or a class."""

    # A class is callable too: the first overload that matches wins, so classes come first.
    @overload
    def __call__(self, target: type[_C], /) -> ActorClass[_C]: ...  # type: ignore[overload-overlap]
    @overload
    def __call__(self, target: Callable[_P, _R], /) -> RemoteFunction[_P, _R]: ...


@overload
def remote(target: type[_C], /) -> ActorClass[_C]: ...  # type: ignore[overload-overlap]
@overload
def remote(target: Callable[_P, _R], /) -> RemoteFunction[_P, _R]: ...
@overload
def remote(
    *,
    num_returns: int = ...,
    max_retries: int = ...,
    retry_exceptions: bool = ...,
    name: str | None = ...,
    max_restarts: int = ...,
    max_task_retries: int = ...,
    max_concurrency: int = ...,
) -> RemoteDecorator: ...
def remote(*args: Any, **options: Any) -> Any:
    """Make a function a remote function: ``@memlab.remote`` or ``@memlab.remote(num_returns=2)``.

    On a class it makes an actor class. Options of functions: ``num_returns``, ``max_retries``
    (default 3; -1 for unlimited), ``retry_exceptions`` and ``name``; of classes: ``name``,
    ``max_restarts``, ``max_task_retries`` and ``max_concurrency`` (see :mod:`memlab.actor`).

    Raises:
        TypeError: positional arguments besides the one function or class, an unknown option,
            or an option of the other kind (an actor option on a function).
        ValueError: an option's value is out of range.
    """
    if len(args) == 1 and not options and callable(args[0]):
        return _make_remote(args[0], {})
    if args:
        raise TypeError("use @memlab.remote or @memlab.remote(option=value, ...)")

    def decorate(target: Any) -> Any:
        return _make_remote(target, options)

    if not (ACTOR_ONLY & set(options)):
        validate_task_options({k: v for k, v in options.items() if k != "name"})
    return decorate


def _make_remote(target: Any, options: dict[str, Any]) -> Any:
    check_decorator_options(target, options)
    if isinstance(target, type):
        return ActorClass(target, options)
    if not callable(target):
        raise TypeError(f"@memlab.remote takes a function or a class, got {type(target).__name__}")
    return RemoteFunction(target, options)


def put(value: _T) -> ObjectRef[_T]:
    """Store ``value`` in the shared address space and return a ref to it (owned by the caller).

    Raises:
        TypeError: ``value`` is an ObjectRef (put a container holding it instead).
    """
    if isinstance(value, ObjectRef):
        raise TypeError(
            "memlab.put() of an ObjectRef is not allowed; pass the ref itself, or "
            "put a container holding it, e.g. memlab.put([ref])"
        )
    return require_core("put()").put(value)


@overload
def get(refs: ObjectRef[_T], *, timeout: float | None = None) -> _T: ...
@overload
def get(refs: Sequence[ObjectRef[_T]], *, timeout: float | None = None) -> list[_T]: ...
def get(refs: ObjectRef[Any] | Sequence[ObjectRef[Any]], *, timeout: float | None = None) -> Any:
    """The value(s) of ``refs``, waiting for them; numpy and Arrow data come back zero-copy.

    Args:
        refs: a ref, or a list of refs.
        timeout: seconds to wait at most; ``None`` waits for ever and ``0`` polls.

    Raises:
        GetTimeoutError: ``timeout`` seconds passed first.
        TaskError: the task raised (also an instance of the original exception class).
        ValueError: ``timeout`` is negative, NaN or not a number.
    """
    # The single-ref path is the hot one (get calls row): checks inlined where they are cheap.
    if timeout is not None:
        timeout = check_timeout(timeout)
    core = require_core("get()")
    hook = _blocking_hook
    if isinstance(refs, ObjectRef):
        if refs._core is not core:  # a ref of an ended session (check_session, inlined)
            raise _object_ref.stale_ref_error(refs)
        if hook is None:
            return core.get([refs], timeout)[0]
        return hook("get", [refs], 1, timeout, lambda t: core.get([refs], t))[0]
    if isinstance(refs, (list, tuple)):
        _check_refs(refs, "get")
        listed = list(refs)
        if hook is None:
            return core.get(listed, timeout)
        return hook("get", listed, len(listed), timeout, lambda t: core.get(listed, t))
    raise TypeError(
        f"memlab.get() takes an ObjectRef or a list of ObjectRefs, got {type(refs).__name__}; "
        "call it on what f.remote() or memlab.put() returned"
    )


def wait(
    refs: Sequence[ObjectRef[_T]], *, num_returns: int = 1, timeout: float | None = None
) -> tuple[list[ObjectRef[_T]], list[ObjectRef[_T]]]:
    """Wait until ``num_returns`` of ``refs`` are ready; returns ``(ready, not_ready)``.

    ``timeout`` is in seconds: ``None`` waits for ever and ``0`` polls. A ``ValueError`` refuses
    one that is negative, NaN or not a number.
    """
    timeout = check_timeout(timeout)
    if isinstance(refs, ObjectRef) or not isinstance(refs, (list, tuple)):
        raise TypeError("memlab.wait() takes a list of ObjectRefs, e.g. memlab.wait([ref])")
    _check_refs(refs, "wait")
    if not 0 <= num_returns <= len(refs):
        raise ValueError(
            f"num_returns must be between 0 and len(refs)={len(refs)}, got {num_returns}"
        )
    if len(set(refs)) != len(refs):
        raise ValueError("memlab.wait() got the same ref twice; pass distinct refs")
    core = require_core("wait()")
    listed = list(refs)
    hook = _blocking_hook
    done_and_pending: tuple[list[ObjectRef[_T]], list[ObjectRef[_T]]]
    if hook is None:
        done_and_pending = core.wait(listed, num_returns, timeout)
    else:
        done_and_pending = hook(
            "wait", listed, num_returns, timeout, lambda t: core.wait(listed, num_returns, t)
        )
    return done_and_pending


def cancel(ref: ObjectRef[object], *, force: bool = False) -> None:
    """Cancel the task that makes ``ref``: queued tasks never run; running ones get
    KeyboardInterrupt, or with ``force=True`` their worker is killed. ``get`` then raises
    ``TaskCancelledError``. Cancelling a finished task does nothing."""
    if not isinstance(ref, ObjectRef):
        raise TypeError(f"memlab.cancel() takes an ObjectRef, got {type(ref).__name__}")
    require_core("cancel()")
    _object_ref.check_session(ref)
    require_core("cancel()").submitter.cancel(ref.binary, force)


def get_actor(name: str) -> ActorHandle:
    """The handle of the actor created with ``Cls.options(name=name).remote(...)``.

    Raises:
        ValueError: no actor has that name.
    """
    import cloudpickle

    core = require_core("get_actor()")
    data = core.actors.lookup_name(name)
    if data is None:
        raise ValueError(
            f"no actor is named {name!r}; create one with Cls.options(name={name!r}).remote(...)"
        )
    handle: ActorHandle = cloudpickle.loads(data)
    return handle


def kill(actor: ActorHandle, *, no_restart: bool = True) -> None:
    """Kill an actor's worker at once. Calls in flight fail with ``ActorDiedError``; with
    ``no_restart=False`` it is restarted if ``max_restarts`` allows."""
    if not isinstance(actor, ActorHandle):
        raise TypeError(
            f"memlab.kill() takes an ActorHandle, got {type(actor).__name__}; "
            "to stop a task use memlab.cancel(ref, force=True)"
        )
    require_core("kill()").actors.kill(actor._actor_id, actor._owner, no_restart)


def check_timeout(timeout: Any, name: str = "timeout") -> float | None:
    """``timeout`` as a float of seconds (or None), refusing what would wait wrongly.

    NaN must be refused here: every comparison with it is false, so a deadline of NaN never
    passes and the wait would last for ever.
    """
    if timeout is None:
        return None
    seconds = float(timeout) if isinstance(timeout, numbers.Real) else math.nan
    if isinstance(timeout, bool) or math.isnan(seconds) or seconds < 0:
        raise ValueError(
            f"{name} must be None or a number of seconds >= 0 (0 polls), got "
            f"{timeout!r}; pass e.g. {name}=30, or {name}=None to wait for ever"
        )
    return seconds


def _check_refs(refs: Sequence[Any], verb: str) -> None:
    for i, r in enumerate(refs):
        if not isinstance(r, ObjectRef):
            raise TypeError(
                f"memlab.{verb}() got a value of type {type(r).__name__!r} at position {i}; every "
                "item must be an ObjectRef returned by f.remote() or memlab.put()"
            )
        _object_ref.check_session(r)
