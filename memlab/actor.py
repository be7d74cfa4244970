"""Actors: ``@memlab.remote`` on a class. ``Cls.remote(...)`` starts one on a worker of its own
and returns an ``ActorHandle``; ``handle.method.remote(...)`` returns ObjectRefs, as tasks do.

Options (``Cls.options(...)``): ``name`` (find it with ``memlab.get_actor``), ``max_restarts``
(default 0; -1 unlimited), ``max_task_retries`` (resend calls in flight after a restart;
default 0; -1 unlimited), ``max_concurrency`` (default 1: calls run one at a time, in order).
Handles pickle: pass them to tasks and other actors. The actor lives while a handle does (named
actors until killed), and fate-shares with the process that created it.
"""

from __future__ import annotations

import inspect
from typing import Any, Generic, NoReturn, TypeVar

import cloudpickle

from memlab._calls import pack_nested, ship
from memlab._options import ACTOR_OPTIONS, validate_actor_options
from memlab.ids import object_id
from memlab.runtime.context import require_core
from memlab.runtime.coreworker.actors import ActorRecord
from memlab.runtime.coreworker.object_ref import ObjectRef
from memlab.runtime.coreworker.task_spec import TaskSpec, call_site

# The user's class that an ActorClass starts actors of.
_C = TypeVar("_C")


class ActorClass(Generic[_C]):
    """A class whose instances run as actors: ``Cls.remote(*args)`` returns an ActorHandle."""

    def __init__(self, cls: type[_C], options: dict[str, Any]) -> None:
        self._cls = cls
        self._options = {**ACTOR_OPTIONS, **validate_actor_options(options)}
        self._pickled: tuple[bytes, bytes, tuple[ObjectRef[Any], ...]] | None = None
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__module__ = cls.__module__
        self.__doc__ = cls.__doc__
        self.__memlab_target__ = cls  # what a worker runs when it imports this by name

    def __call__(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError(
            f"actor class {self._cls.__name__!r} cannot be instantiated directly; "
            f"call {self._cls.__name__}.remote(...) to start an actor"
        )

    def remote(self, *args: object, **kwargs: object) -> ActorHandle:
        """Start an actor: a worker of its own runs ``Cls(*args, **kwargs)``."""
        return _create(self, args, kwargs, self._options)

    def options(self, **options: Any) -> _BoundActorClass[_C]:
        """Override options for the actors started through the result (e.g. ``name``)."""
        return _BoundActorClass(self, {**self._options, **validate_actor_options(options)})

    def _pickled_class(self) -> tuple[bytes, bytes, tuple[ObjectRef[Any], ...]]:
        if self._pickled is None:
            self._pickled = ship(self._cls, self)
        return self._pickled


class _BoundActorClass(Generic[_C]):
    def __init__(self, actor_class: ActorClass[_C], options: dict[str, Any]) -> None:
        self._actor_class = actor_class
        self._options = options

    def remote(self, *args: object, **kwargs: object) -> ActorHandle:
        return _create(self._actor_class, args, kwargs, self._options)


def _methods(cls: type) -> tuple[str, ...]:
    return tuple(sorted(n for n, m in inspect.getmembers(cls, callable) if not n.startswith("_")))


def _create(
    ac: ActorClass[_C],
    args: tuple[object, ...],
    kwargs: dict[str, object],
    options: dict[str, Any],
) -> ActorHandle:
    core = require_core(f"{ac.__name__}.remote()")
    cls_hash, cls_bytes, captured = ac._pickled_class()
    if cls_hash not in core.submitter.functions:
        core.submitter.add_function(cls_hash, cls_bytes, bool(captured))
    cls_name = ac._cls.__name__
    keep: list[Any] = []
    payload, nested = pack_nested(core, f"{cls_name}.__init__", args, kwargs, keep)
    tid = core.ids.task_id()
    spec = TaskSpec(
        tid,
        f"{cls_name}.__init__",
        cls_hash,
        payload,
        [],
        nested,
        [object_id(tid, 0)],
        0,
        False,
        call_site(),
    )
    spec.actor = (tid, "create", {"cls": cls_name, "maxc": options["max_concurrency"]})
    spec.capture(captured)  # the spec lives in the actor's record: restarts need them too
    (creation_ref,) = core.submitter.register(spec)
    handle = ActorHandle(
        tid, core.proc, cls_name, _methods(ac._cls), options["max_task_retries"], creation_ref
    )
    name = options["name"]
    if name is not None:
        if not core.actors.register_name(name, cloudpickle.dumps(handle), tid):
            raise ValueError(
                f"an actor named {name!r} already exists; pick another name, or "
                f"get it with memlab.get_actor({name!r})"
            )
        core.actors.named_handles[name] = handle
    core.actors.created(ActorRecord(tid, cls_name, spec, options))
    return handle


class ActorHandle:
    """A reference to an actor: call ``handle.method.remote(...)``; pass it anywhere."""

    def __init__(
        self,
        actor_id: bytes,
        owner: str,
        cls_name: str,
        methods: tuple[str, ...],
        max_task_retries: int,
        creation_ref: ObjectRef[Any],
    ) -> None:
        self._actor_id = actor_id
        self._owner = owner
        self._cls_name = cls_name
        self._methods = methods
        self._max_task_retries = max_task_retries
        self._creation_ref = creation_ref

    def __getattr__(self, name: str) -> ActorMethod:
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._methods:
            raise AttributeError(
                f"actor {self._cls_name} has no method {name!r}; its methods "
                f"are {list(self._methods)}"
            )
        return ActorMethod(self, name)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return ActorHandle, (
            self._actor_id,
            self._owner,
            self._cls_name,
            self._methods,
            self._max_task_retries,
            self._creation_ref,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __hash__(self) -> int:
        return hash(self._actor_id)

    def __repr__(self) -> str:
        return f"ActorHandle({self._cls_name}, {self._actor_id.hex()[:12]}…, owner={self._owner})"


class ActorMethod:
    """One method of an actor: ``handle.method.remote(*args)`` calls it, in order per caller.

    Its result is typed ``Any``: the method's return type is not known through the handle, and
    ``.options(num_returns=n)`` makes the call return a list of ``n`` refs.
    """

    def __init__(self, handle: ActorHandle, name: str, num_returns: int = 1) -> None:
        self._handle = handle
        self._name = name
        self._num_returns = num_returns

    def remote(self, *args: object, **kwargs: object) -> Any:
        """Call the method on the actor; returns the ref of its result (a list for several)."""
        return _call(self._handle, self._name, args, kwargs, self._num_returns)

    def options(self, num_returns: int = 1) -> ActorMethod:
        """The same method with ``num_returns`` results per call."""
        if not isinstance(num_returns, int) or num_returns < 1:
            raise ValueError(f"num_returns must be a positive int, got {num_returns!r}")
        return ActorMethod(self._handle, self._name, num_returns)

    def __call__(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError(
            f"actor methods cannot be called directly; use handle.{self._name}.remote(...)"
        )


def _call(
    handle: ActorHandle,
    method: str,
    args: tuple[object, ...],
    kwargs: dict[str, object],
    num_returns: int,
) -> Any:
    core = require_core(f"{handle._cls_name}.{method}.remote()")
    name = f"{handle._cls_name}.{method}"
    keep: list[Any] = []
    payload, nested = pack_nested(core, name, args, kwargs, keep)
    tid = core.ids.task_id()
    spec = TaskSpec(
        tid,
        name,
        b"",
        payload,
        [],
        nested,
        [object_id(tid, i) for i in range(num_returns)],
        handle._max_task_retries,
        False,
        call_site(),
    )
    spec.actor = (handle._actor_id, "call", method)
    spec.held.append(handle._creation_ref.binary)  # the actor lives while calls are pending
    refs = core.submitter.register(spec)
    core.actors.call(spec, handle._owner, handle._cls_name)
    return refs[0] if num_returns == 1 else refs
