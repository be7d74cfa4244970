"""Tasks and first-class refs: arguments, nested refs, returned refs, nested tasks, options."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

import memlab
from memlab.testing import shipped_functions, wait_for


@memlab.remote
def add(a: int, b: int = 0) -> int:
    return a + b


@memlab.remote(num_returns=2)
def pair(x: int) -> tuple[int, int]:
    return x, x * 10


@memlab.remote
def describe(x: Any) -> str:
    return type(x).__name__


@memlab.remote
def get_inner(refs: list[memlab.ObjectRef]) -> list[Any]:
    return memlab.get(refs)


@memlab.remote
def make_and_return_ref(n: int) -> memlab.ObjectRef:
    return memlab.put(np.full(n, 7, dtype=np.int64))  # owned by the worker


@memlab.remote
def pass_through(refs: list[memlab.ObjectRef]) -> memlab.ObjectRef:
    return refs[0]  # a ref owned by the driver, returned via a worker


@memlab.remote
def fan_out(n: int) -> int:
    return sum(memlab.get([add.remote(i, 1) for i in range(n)]))


def test_task_returns_value(rt: Any) -> None:
    assert memlab.get(add.remote(1, 2)) == 3
    assert memlab.get(add.remote(1, b=5)) == 6
    assert memlab.get([add.remote(i) for i in range(20)]) == list(range(20))


def test_num_returns_and_options(rt: Any) -> None:
    a, b = pair.remote(4)
    assert memlab.get([a, b]) == [4, 40]
    one = pair.options(num_returns=1).remote(3)
    assert memlab.get(one) == (3, 30)


def test_task_name_option_reaches_state(rt: Any) -> None:
    ref = add.options(name="custom-add").remote(1, 1)
    memlab.get(ref)
    wait_for(
        lambda: any(t["name"] == "custom-add" for t in memlab.state.tasks()),
        5,
        message="named task in memlab.state.tasks()",
    )


def test_top_level_ref_is_resolved_and_nested_ref_is_passed(rt: Any) -> None:
    x = memlab.put(41)
    assert memlab.get(add.remote(x, 1)) == 42
    assert memlab.get(describe.remote([x])) == "list"
    assert memlab.get(get_inner.remote([x, memlab.put("s")])) == [41, "s"]


def test_large_ref_argument_read_from_shared_memory(rt: Any) -> None:
    arr = np.arange(1_000_000, dtype=np.float64)  # 8 MB: stored, not inlined
    ref = memlab.put(arr)

    @memlab.remote
    def total(a: np.ndarray) -> tuple[float, bool]:
        return float(a.sum()), bool(a.flags.writeable)

    s, writeable = memlab.get(total.remote(ref))
    assert s == arr.sum()
    assert writeable is False
    # A large plain argument goes through the store too, and arrives intact.
    assert memlab.get(total.remote(arr))[0] == arr.sum()


def test_task_returns_ref_owned_by_worker(rt: Any) -> None:
    outer = make_and_return_ref.remote(200_000)  # 1.6 MB inner value in shared memory
    inner = memlab.get(outer)
    assert isinstance(inner, memlab.ObjectRef)
    assert inner.owner.startswith("w-")
    del outer
    value = memlab.get(inner)
    assert value.shape == (200_000,) and int(value[0]) == 7


def test_driver_ref_returned_through_worker_stays_alive(rt: Any) -> None:
    x = memlab.put(np.ones(300_000))
    back = memlab.get(pass_through.remote([x]))
    assert back == x
    del x
    assert memlab.get(back).sum() == 300_000


def test_refs_inside_put_values(rt: Any) -> None:
    inner = memlab.put([1, 2, 3])
    outer = memlab.put({"inner": inner})
    inner_id = inner.hex()
    del inner
    got = memlab.get(outer)["inner"]
    assert got.hex() == inner_id
    assert memlab.get(got) == [1, 2, 3]
    objects = {o["object_id"]: o for o in memlab.state.objects()}
    assert objects[inner_id]["holders"]["contained_in"] == [outer.hex()]


def test_nested_tasks_are_owned_by_the_worker(rt: Any) -> None:
    assert memlab.get(fan_out.remote(10)) == sum(range(1, 11))


def test_main_module_functions_work_remotely(rt: Any) -> None:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec("def triple(x):\n    return 3 * x\n", namespace)  # as a notebook cell defines it
    triple = memlab.remote(namespace["triple"])
    assert triple._function.__module__ == "__main__"
    assert memlab.get([triple.remote(i) for i in range(5)]) == [0, 3, 6, 9, 12]


def test_redefining_an_identical_function_does_not_grow_the_table(rt: Any) -> None:
    sizes = []
    for _ in range(3):
        namespace: dict[str, Any] = {"__name__": "__main__"}
        exec("def inc(x):\n    return x + 1\n", namespace)
        inc = memlab.remote(namespace["inc"])
        assert memlab.get(inc.remote(1)) == 2
        sizes.append(shipped_functions())
    assert sizes[0] == sizes[1] == sizes[2]


def test_object_ref_identity(rt: Any) -> None:
    r = memlab.put(1)
    same = memlab.get(memlab.put([r]))[0]
    assert same == r and hash(same) == hash(r) and same is not r
    assert len({r, same}) == 1
    assert r.hex() == same.hex() and len(r.hex()) == 32
    assert r.hex()[:16] in repr(r)


def test_wait_returns_ready_and_not_ready(rt: Any) -> None:
    @memlab.remote
    def slow(t: float) -> float:
        time.sleep(t)
        return t

    fast, late = slow.remote(0.0), slow.remote(2.0)
    ready, not_ready = memlab.wait([late, fast], num_returns=1, timeout=10)
    assert ready == [fast] and not_ready == [late]
    ready, not_ready = memlab.wait([late], timeout=0.01)
    assert ready == [] and not_ready == [late]
    memlab.cancel(late, force=True)


def test_get_timeout_leaves_the_task_running(rt: Any) -> None:
    @memlab.remote
    def slow() -> str:
        time.sleep(0.5)
        return "done"

    ref = slow.remote()
    with pytest.raises(memlab.GetTimeoutError):
        memlab.get(ref, timeout=0.05)
    assert memlab.get(ref, timeout=30) == "done"


def test_task_error_is_both_task_error_and_cause(rt: Any) -> None:
    @memlab.remote
    def boom() -> None:
        raise ValueError("bad value 17")

    with pytest.raises(ValueError, match="bad value 17") as info:
        memlab.get(boom.remote())
    assert isinstance(info.value, memlab.TaskError)
    assert "boom" in str(info.value)
    assert "raise ValueError" in info.value.traceback_str


def test_failed_dependency_fails_dependent_task(rt: Any) -> None:
    @memlab.remote
    def boom() -> int:
        raise KeyError("k")

    with pytest.raises(KeyError):
        memlab.get(add.remote(boom.remote(), 1))


def test_retry_exceptions_reruns_failed_task(rt: Any, tmp_path: Any) -> None:
    marker = str(tmp_path / "first")

    @memlab.remote(retry_exceptions=True, max_retries=2)
    def flaky(path: str) -> str:
        import os

        if not os.path.exists(path):
            open(path, "w").close()
            raise RuntimeError("first attempt fails")
        return "second attempt"

    assert memlab.get(flaky.remote(marker)) == "second attempt"


def test_main_module_classes_travel_by_value(rt: Any) -> None:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(
        "class Point:\n"
        "    def __init__(self, x, y):\n"
        "        self.x, self.y = x, y\n"
        "    def norm2(self):\n"
        "        return self.x ** 2 + self.y ** 2\n"
        "def shift(p):\n"
        "    return Point(p.x + 1, p.y + 1)\n",
        namespace,
    )
    shift = memlab.remote(namespace["shift"])
    moved = memlab.get(shift.remote(namespace["Point"](1, 2)))
    assert (moved.x, moved.y, moved.norm2()) == (2, 3, 13)
    stored = memlab.get(memlab.put(namespace["Point"](3, 4)))
    assert stored.norm2() == 25
