"""``@memlab.remote`` functions: ``f.remote(*args)`` submits a task and returns its ObjectRef(s).

How a call becomes a task spec (argument packing, shipping the code) is :mod:`memlab._calls`;
the options and their checks are :mod:`memlab._options`.
"""

from __future__ import annotations

import functools
from typing import Any

from memlab._calls import pack_task_args, ship
from memlab._options import TASK_OPTIONS, validate_task_options
from memlab.ids import object_id
from memlab.runtime.context import require_core
from memlab.runtime.coreworker.object_ref import ObjectRef
from memlab.runtime.coreworker.task_spec import TaskSpec, call_site


class RemoteFunction:
    """A function that runs as a task on a worker: ``f.remote(*args)`` returns ObjectRef(s)."""

    def __init__(self, fn: Any, options: dict[str, Any]) -> None:
        self._function = fn
        self._options = {**TASK_OPTIONS, **validate_task_options(options)}
        self._pickled: bytes | None = None
        self._hash: bytes | None = None
        self._captured: tuple[ObjectRef, ...] = ()  # refs its code holds (see ``ship``)
        self.__memlab_target__ = fn  # what a worker runs when it imports this by name
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
        return _BoundOptions(self, {**self._options, **validate_task_options(options)})

    def _pickled_function(self) -> tuple[bytes, bytes]:
        if self._pickled is None:
            self._hash, self._pickled, self._captured = ship(self._function, self)
        return self._hash, self._pickled  # type: ignore[return-value]


class _BoundOptions:
    def __init__(self, fn: RemoteFunction, options: dict[str, Any]) -> None:
        self._fn = fn
        self._options = options

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return _submit(self._fn, args, kwargs, self._options)


def _submit(
    rf: RemoteFunction, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]
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
