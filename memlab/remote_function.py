"""``@memlab.remote`` functions: ``f.remote(*args)`` submits a task and returns its ObjectRef(s).

How a call becomes a task spec (argument packing, shipping the code) is :mod:`memlab._calls`;
the options and their checks are :mod:`memlab._options`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Generic, NoReturn, ParamSpec, TypeVar

from memlab._calls import pack_task_args, ship
from memlab._options import TASK_OPTIONS, validate_task_options
from memlab.ids import object_id
from memlab.runtime.context import require_core
from memlab.runtime.coreworker.object_ref import ObjectRef
from memlab.runtime.coreworker.task_spec import TaskSpec, call_site

_P = ParamSpec("_P")
_R = TypeVar("_R")


class RemoteFunction(Generic[_P, _R]):
    """A function that runs as a task on a worker: ``f.remote(*args)`` returns ObjectRef(s).

    ``RemoteFunction[P, R]`` wraps a ``Callable[P, R]``; ``f.remote(...)`` is typed
    ``ObjectRef[R]``. Its arguments are typed ``object``, not ``P``: each may be the value the
    function takes or an ObjectRef to one (resolved before the task runs), which a ParamSpec
    cannot say. With ``num_returns=n > 1`` the call returns a list of ``n`` refs, which the
    type does not follow (as in Ray).
    """

    def __init__(self, fn: Callable[_P, _R], options: dict[str, Any]) -> None:
        self._function = fn
        self._options = {**TASK_OPTIONS, **validate_task_options(options)}
        self._pickled: bytes | None = None
        self._hash: bytes | None = None
        self._captured: tuple[ObjectRef[Any], ...] = ()  # refs its code holds (see ``ship``)
        self.__memlab_target__ = fn  # what a worker runs when it imports this by name
        functools.update_wrapper(self, fn)

    def __call__(self, *args: _P.args, **kwargs: _P.kwargs) -> NoReturn:
        raise TypeError(
            f"remote function {self._function.__name__!r} cannot be called directly; call "
            f"{self._function.__name__}.remote(...) to run it as a task"
        )

    def remote(self, *args: object, **kwargs: object) -> ObjectRef[_R]:
        """Submit a task that runs the function on ``args``; returns the ref of its result."""
        ref: ObjectRef[_R] = _submit(self, args, kwargs, self._options)
        return ref

    def options(self, **options: Any) -> _BoundOptions[_P, _R]:
        """Override options for one call: ``f.options(num_returns=2).remote(x)``."""
        return _BoundOptions(self, {**self._options, **validate_task_options(options)})

    def _pickled_function(self) -> tuple[bytes, bytes]:
        if self._pickled is None:
            self._hash, self._pickled, self._captured = ship(self._function, self)
        return self._hash, self._pickled  # type: ignore[return-value]


class _BoundOptions(Generic[_P, _R]):
    def __init__(self, fn: RemoteFunction[_P, _R], options: dict[str, Any]) -> None:
        self._fn = fn
        self._options = options

    def remote(self, *args: object, **kwargs: object) -> ObjectRef[_R]:
        ref: ObjectRef[_R] = _submit(self._fn, args, kwargs, self._options)
        return ref


def _submit(
    rf: RemoteFunction[_P, _R],
    args: tuple[object, ...],
    kwargs: dict[str, object],
    options: dict[str, Any],
) -> Any:
    core = require_core("f.remote()")
    fn_hash, fn_bytes = rf._pickled_function()
    submitter = core.submitter
    if fn_hash not in submitter.functions:
        submitter.add_function(fn_hash, fn_bytes, bool(rf._captured))
    name = options["name"] or getattr(rf._function, "__qualname__", "task")
    keep: list[Any] = []  # refs that must live until the task holds them
    payload, deps, nested = pack_task_args(core, name, args, kwargs, keep)
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
