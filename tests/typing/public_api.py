"""The public API's types, checked by mypy (``make lint``), never run.

Each ``assert_type`` pins what a type checker sees for one call of the public API, so a change
that loosens a signature back to ``Any`` (or breaks an overload) fails the lint. Lines marked
``type: ignore[...]`` must stay errors: ``warn_unused_ignores`` fails the lint if they pass.
"""

from __future__ import annotations

from typing import Any

from typing_extensions import assert_type

import memlab
from memlab.actor import ActorClass, ActorHandle
from memlab.remote_function import RemoteFunction
from memlab.runtime.driver.runtime import Runtime


@memlab.remote
def square(x: int, /) -> int:  # positional-only, so its ParamSpec reads [int]
    return x * x


@memlab.remote(max_retries=0, name="halve")
def halve(x: float, /) -> float:
    return x / 2


class _Counter:
    def __init__(self, start: int) -> None:
        self.n = start

    def add(self, k: int) -> int:
        self.n += k
        return self.n


class _Restarting:
    pass


# mypy does not apply a class decorator's return type (python/mypy#3135): ``@memlab.remote``
# on a class runs as it should, but a type checker still sees the class. Called as a function,
# the decorator's type shows.
Counter = memlab.remote(_Counter)
Restarting = memlab.remote(max_restarts=1)(_Restarting)


def check_init_and_decorators() -> None:
    assert_type(memlab.init(num_workers=2), Runtime)
    assert_type(memlab.is_initialized(), bool)
    assert_type(memlab.shutdown(), None)
    assert_type(square, RemoteFunction[[int], int])
    assert_type(halve, RemoteFunction[[float], float])
    assert_type(Counter, ActorClass[_Counter])
    assert_type(Restarting, ActorClass[_Restarting])


def check_tasks_and_get() -> None:
    ref = square.remote(3)
    assert_type(ref, memlab.ObjectRef[int])
    assert_type(square.remote(ref), memlab.ObjectRef[int])  # a ref stands for its value
    assert_type(square.options(max_retries=1).remote(3), memlab.ObjectRef[int])
    assert_type(halve.remote(1.0), memlab.ObjectRef[float])
    assert_type(memlab.get(ref), int)
    assert_type(memlab.get(ref, timeout=1.0), int)
    assert_type(memlab.get([ref, square.remote(4)]), list[int])
    assert_type(memlab.get((ref,)), list[int])
    mixed = memlab.get([ref, halve.remote(1.0)])
    assert_type(mixed, list[float])  # int widens to float in the join of the two
    assert_type(memlab.put("text"), memlab.ObjectRef[str])
    assert_type(memlab.get(memlab.put([1, 2])), list[int])
    ready, pending = memlab.wait([ref], num_returns=1, timeout=0)
    assert_type(ready, list[memlab.ObjectRef[int]])
    assert_type(pending, list[memlab.ObjectRef[int]])
    assert_type(memlab.cancel(ref), None)
    # A ref of a subtype is a ref of its supertype (refs are immutable).
    as_object: memlab.ObjectRef[object] = ref
    assert_type(as_object, memlab.ObjectRef[object])


def check_actors() -> None:
    handle = Counter.remote(0)
    assert_type(handle, ActorHandle)
    assert_type(Counter.options(name="c").remote(0), ActorHandle)
    assert_type(handle.add.remote(1), Any)  # a method's result type is not known via the handle
    assert_type(memlab.get_actor("c"), ActorHandle)
    assert_type(memlab.kill(handle), None)
    assert_type(memlab.kill(handle, no_restart=False), None)


def check_misuse_is_a_type_error() -> None:
    memlab.kill(square.remote(1))  # type: ignore[arg-type]
    memlab.get(3)  # type: ignore[call-overload]
    memlab.remote(3)  # type: ignore[call-overload]
    memlab.remote(unknown_option=1)  # type: ignore[call-overload]
