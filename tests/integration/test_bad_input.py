"""Bad input: every misuse raises a typed error whose message names the problem and the fix, and
the work already in flight is not lost.

Each test submits a few tasks that stay pending behind a gate (a file they wait for), triggers
the bad input while they are in flight, then opens the gate and checks they all return the
right values. Worker crashes (segfault, ``os._exit``) are covered by the fault tests.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import memlab
from memlab.testing import gated, wait_for_file
from memlab.testing.leaks import session_files, wait_for

STORE = 256 << 20  # the shared runtime's store (tests/conftest.py)
OVER_STORE = 300 << 20


held = memlab.remote(gated)  # stays in flight until the test opens the gate


@memlab.remote
def ident(x: Any) -> Any:
    return x


@memlab.remote
def total(a: np.ndarray) -> int:
    return int(a.sum())


@memlab.remote
def returns_lock() -> Any:
    return threading.Lock()


@memlab.remote
def returns_huge() -> np.ndarray:
    return np.zeros(OVER_STORE, dtype=np.uint8)  # lazily zeroed pages: cheap to make


@memlab.remote(num_returns=2)
def returns_three() -> tuple[int, int, int]:
    return 1, 2, 3


@memlab.remote(num_returns=3)
def returns_two() -> tuple[int, int]:
    return 1, 2


@memlab.remote(num_returns=2)
def returns_none() -> None:
    return None


class FailsToUnpickle:
    """Pickles fine, but unpickling calls ``int("not a number")`` (no test module needed)."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return int, ("not a number",)


class InFlight:
    """Tasks submitted before the bad input; ``release()`` lets them finish."""

    def __init__(self, gate: Path, refs: list[memlab.ObjectRef]) -> None:
        self.gate = gate
        self.refs = refs

    def release(self) -> None:
        self.gate.touch()


@contextlib.contextmanager
def work_in_flight(tmp_path: Path, n: int = 3) -> Iterator[InFlight]:
    """Submit ``n`` gated tasks, run the body, then check every one returns its value."""
    gate = tmp_path / "gate"
    flight = InFlight(gate, [held.remote(i, str(gate)) for i in range(n)])
    ready, _ = memlab.wait(flight.refs, num_returns=n, timeout=0)
    assert ready == [], "the gated tasks finished before the bad input; the test proves nothing"
    try:
        yield flight
    finally:
        flight.release()
    assert memlab.get(flight.refs, timeout=30) == list(range(n))


def still_works() -> None:
    assert memlab.get([ident.remote(i) for i in range(6)], timeout=30) == list(range(6))


# -------------------------------------------------------------------------------- serialization


def test_unpicklable_argument_raises_at_remote_naming_type_and_argument(
    rt: Any, tmp_path: Path
) -> None:
    lock = threading.Lock()
    with work_in_flight(tmp_path):
        cases = [
            ((lock,), {}, "argument 0"),
            ((1, [2, lock]), {}, "argument 1"),
            ((), {"x": {"k": lock}}, "keyword argument 'x'"),
        ]
        for args, kwargs, where in cases:
            with pytest.raises(memlab.SerializationError) as info:
                ident.remote(*args, **kwargs)  # raised here, before anything is submitted
            error = info.value
            assert isinstance(error, TypeError)
            message = str(error)
            assert where in message and "ident()" in message, message
            assert "_thread.lock" in message, message
            assert "picklable" in message and "inside the task" in message, message  # the fix
            assert error.where == where and error.type_name == "_thread.lock"
    still_works()


def test_unpicklable_return_value_raises_serialization_error_at_get(
    rt: Any, tmp_path: Path
) -> None:
    with work_in_flight(tmp_path) as flight:
        ref = returns_lock.remote()
        flight.release()
        with pytest.raises(memlab.SerializationError) as info:
            memlab.get(ref, timeout=30)
    message = str(info.value)
    assert "_thread.lock" in message, message
    # It names which value failed: the return value of this task, not an argument.
    assert "returns_lock" in message and "return value" in message, message
    # ...and gives a fix that fits a return value (advice about arguments would mislead).
    assert "picklable" in message and "passing it in" not in message, message
    still_works()


def test_argument_that_fails_to_unpickle_in_the_worker(rt: Any, tmp_path: Path) -> None:
    with work_in_flight(tmp_path) as flight:
        ref = ident.remote(FailsToUnpickle())
        flight.release()
        with pytest.raises(memlab.SerializationError) as info:
            memlab.get(ref, timeout=30)
    message = str(info.value)
    assert "deserialize" in message and "not a number" in message, message
    assert "importable" in message, message  # the fix
    still_works()


# -------------------------------------------------------------------------------- store full


def _assert_store_full_message(error: memlab.ObjectStoreFullError) -> None:
    message = str(error)
    assert "300.0 MiB" in message, message  # what was asked for
    assert "of 256.0 MiB" in message, message  # how big the store is
    assert "pinned" in message and "in use" in message, message  # what holds it
    assert "memlab.init(object_store_memory=" in message, message  # how to raise the limit
    assert error.requested >= OVER_STORE and error.capacity == STORE


def test_value_larger_than_the_store(rt: Any, tmp_path: Path) -> None:
    assert rt.options.object_store_memory == STORE
    huge = np.zeros(OVER_STORE, dtype=np.uint8)
    with work_in_flight(tmp_path) as flight:
        with pytest.raises(memlab.ObjectStoreFullError) as put_info:
            memlab.put(huge)
        _assert_store_full_message(put_info.value)
        with pytest.raises(memlab.ObjectStoreFullError) as arg_info:
            ident.remote(huge)  # a large argument goes through the store, at .remote()
        _assert_store_full_message(arg_info.value)
        ref = returns_huge.remote()
        flight.release()
        with pytest.raises(memlab.ObjectStoreFullError) as ret_info:
            memlab.get(ref, timeout=30)
        _assert_store_full_message(ret_info.value)
    # The failed writes left nothing behind: a value of most of the store still fits.
    fits = memlab.put(np.ones(STORE // 2, dtype=np.uint8))
    assert memlab.get(total.remote(fits), timeout=30) == STORE // 2
    del fits
    still_works()


# -------------------------------------------------------------------------------- get / wait / put


def test_get_of_something_that_is_not_a_ref(rt: Any, tmp_path: Path) -> None:
    with work_in_flight(tmp_path) as flight:
        for bad in (5, "abc", None, {flight.refs[0]}):
            with pytest.raises(TypeError, match=r"ObjectRef.*f\.remote\(\) or memlab\.put\(\)"):
                memlab.get(bad)
        with pytest.raises(TypeError, match=r"at position 1.*ObjectRef"):
            memlab.get([flight.refs[0], 5])
        with pytest.raises(TypeError, match=r"at position 0.*ObjectRef"):
            memlab.get((flight.refs[0].hex(),))
    still_works()


def test_get_timeout_is_a_timeout_error_and_the_tasks_keep_running(rt: Any, tmp_path: Path) -> None:
    with work_in_flight(tmp_path) as flight:
        start = time.monotonic()
        with pytest.raises(memlab.GetTimeoutError) as info:
            memlab.get(flight.refs, timeout=0.05)
        assert time.monotonic() - start < 5
        error = info.value
        assert isinstance(error, TimeoutError)
        message = str(error)
        assert "timed out after 0.05 s" in message and "3 objects were not ready" in message
        assert "longer timeout" in message and "memlab.wait()" in message, message  # the fix
        done = memlab.put("ready")
        with pytest.raises(TimeoutError, match="1 object was not ready"):
            memlab.get([done, flight.refs[0]], timeout=0.01)
    still_works()


def test_put_of_a_ref(rt: Any, tmp_path: Path) -> None:
    with work_in_flight(tmp_path) as flight:
        ref = memlab.put(7)
        with pytest.raises(TypeError, match=r"memlab\.put\(\[ref\]\)"):
            memlab.put(ref)
        holder = memlab.put([ref])  # the suggested fix works
        (inner,) = memlab.get(holder)
        assert inner == ref and memlab.get(inner) == 7
        with pytest.raises(TypeError, match=r"put\(\) of an ObjectRef"):
            memlab.put(flight.refs[0])
    still_works()


def test_wait_with_bad_arguments(rt: Any, tmp_path: Path) -> None:
    with work_in_flight(tmp_path) as flight:
        ref = flight.refs[0]
        with pytest.raises(TypeError, match=r"list of ObjectRefs.*memlab\.wait\(\[ref\]\)"):
            memlab.wait(ref)
        with pytest.raises(TypeError, match="list of ObjectRefs"):
            memlab.wait("not refs")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"'int' at position 1.*ObjectRef"):
            memlab.wait([ref, 3])
        with pytest.raises(ValueError, match=r"between 0 and len\(refs\)=1, got 2"):
            memlab.wait([ref], num_returns=2)
        with pytest.raises(ValueError, match=r"between 0 and len\(refs\)=1, got -1"):
            memlab.wait([ref], num_returns=-1)
        with pytest.raises(ValueError, match="same ref twice; pass distinct refs"):
            memlab.wait([ref, ref])
        ready, not_ready = memlab.wait(flight.refs, timeout=0.01)  # a timeout is not an error
        assert ready == [] and not_ready == flight.refs
    still_works()


# -------------------------------------------------------------------------------- num_returns


def test_task_returning_the_wrong_number_of_values(rt: Any, tmp_path: Path) -> None:
    with work_in_flight(tmp_path) as flight:
        too_many = returns_three.remote()
        too_few = returns_two.remote()
        not_iterable = returns_none.remote()
        flight.release()
        cases = [
            (too_many, "returned 3 values", "num_returns=2"),
            (too_few, "returned 2 values", "num_returns=3"),
            (not_iterable, "returned a non-iterable", "num_returns=2"),
        ]
        for refs, what, declared in cases:
            assert isinstance(refs, list)
            for ref in refs:  # every return of the task carries the error
                with pytest.raises(memlab.TaskError) as info:
                    memlab.get(ref, timeout=30)
                assert isinstance(info.value, ValueError)
                message = str(info.value)
                assert what in message and declared in message, message
                assert "change num_returns" in message, message  # the fix
    still_works()


# -------------------------------------------------------------------------------- options


def test_bad_option_values_raise_at_decoration_and_options_time(rt: Any, tmp_path: Path) -> None:
    def plain(x: int) -> int:
        return x

    with work_in_flight(tmp_path):
        with pytest.raises(ValueError, match="num_returns must be a positive int, got 0"):
            memlab.remote(num_returns=0)
        with pytest.raises(ValueError, match="num_returns must be a positive int, got True"):
            memlab.remote(num_returns=True)
        with pytest.raises(ValueError, match=r"max_retries must be an int >= 0, or -1.*-2"):
            memlab.remote(max_retries=-2)
        with pytest.raises(TypeError, match=r"unknown remote option\(s\) \['retries'\]"):
            memlab.remote(retries=3)
        with pytest.raises(TypeError, match=r"valid options are \[.*'max_retries'.*\]"):
            memlab.remote(retries=3)
        with pytest.raises(ValueError, match="num_returns must be a positive int, got 0"):
            ident.options(num_returns=0)  # at options(), not at .remote()
        with pytest.raises(TypeError, match=r"unknown remote option\(s\) \['bogus'\]"):
            ident.options(bogus=1)
        with pytest.raises(TypeError, match=r"@memlab\.remote\(option=value"):
            memlab.remote(plain, 2)
        unlimited = memlab.remote(max_retries=-1)(plain).remote(4)  # -1 is valid: unlimited
    assert memlab.get(unlimited, timeout=30) == 4
    still_works()


def test_calling_a_remote_function_directly(rt: Any, tmp_path: Path) -> None:
    cannot = r"cannot be called directly; call ident\.remote\("
    with work_in_flight(tmp_path), pytest.raises(TypeError, match=cannot):
        ident(1)
    still_works()


# -------------------------------------------------------------------------------- init / lifecycle


def test_init_with_conflicting_arguments_names_them_and_says_shutdown(
    rt: Any, tmp_path: Path
) -> None:
    with work_in_flight(tmp_path):
        with pytest.raises(memlab.RuntimeConflictError) as info:
            memlab.init(num_workers=3, object_store_memory=STORE)
        error = info.value
        assert isinstance(error, RuntimeError)
        assert error.differences == {"num_workers": (2, 3)}  # the agreeing arg is not listed
        message = str(error)
        assert "num_workers: running 2, requested 3" in message, message
        assert "object_store_memory" not in message, message
        assert "memlab.shutdown() first" in message, message
        with pytest.raises(memlab.RuntimeConflictError) as info:
            memlab.init(num_workers=5, inline_threshold=1024)
        assert set(info.value.differences) == {"num_workers", "inline_threshold"}
        with pytest.raises(ValueError, match="num_workers must be a positive int, got 0"):
            memlab.init(num_workers=0)
        assert memlab.is_initialized()
    still_works()


def test_init_again_with_same_or_no_arguments_returns_the_running_runtime(
    rt: Any, tmp_path: Path
) -> None:
    with work_in_flight(tmp_path):
        assert memlab.init() is rt
        assert memlab.init(num_workers=2) is rt
        assert memlab.init(num_workers=2, object_store_memory=STORE) is rt
        assert memlab.is_initialized()
    still_works()


_LIFECYCLE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import memlab

    def attempt(label, call):
        try:
            call()
        except Exception as exc:
            out.append([label, type(exc).__name__, isinstance(exc, RuntimeError), str(exc)])
        else:
            out.append([label, None, False, ""])

    def double(x):
        return 2 * x

    out = []
    f = memlab.remote(double)
    attempt("before: get", lambda: memlab.get([]))
    attempt("before: put", lambda: memlab.put(1))
    attempt("before: wait", lambda: memlab.wait([], num_returns=0))
    attempt("before: remote", lambda: f.remote(1))
    rt = memlab.init(num_workers=1, object_store_memory=64 << 20)
    ref = f.remote(21)
    value = memlab.get(ref)
    memlab.shutdown()
    memlab.shutdown()  # idempotent
    attempt("after: get", lambda: memlab.get(ref))
    attempt("after: put", lambda: memlab.put(1))
    attempt("after: wait", lambda: memlab.wait([ref]))
    attempt("after: remote", lambda: f.remote(1))
    del ref
    print(json.dumps({"value": value, "initialized": memlab.is_initialized(),
                      "session_dir": rt.session_dir, "results": out}))
    """
)


def test_use_before_init_and_after_shutdown_says_to_call_init(tmp_path: Path) -> None:
    # A child process, so that shutting down does not end this module's shared runtime.
    proc = subprocess.run(
        [sys.executable, "-c", _LIFECYCLE_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Exception ignored" not in proc.stderr, proc.stderr  # e.g. from ObjectRef.__del__
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["value"] == 42 and report["initialized"] is False
    assert len(report["results"]) == 8
    for label, kind, is_runtime_error, message in report["results"]:
        assert kind == "RuntimeNotStartedError", (label, kind, message)
        assert is_runtime_error, label
        assert "needs a running memlab runtime" in message, (label, message)
        assert "call memlab.init() first" in message, (label, message)
    wait_for(
        lambda: not session_files(report["session_dir"]),
        10,
        message="the child's session files removed",
    )


# -------------------------------------------------------------------------------- timeout values


@pytest.mark.parametrize("bad", [-1, -0.5, "5", float("nan"), True, [1]])
def test_bad_timeout_is_refused_naming_the_argument(rt: Any, tmp_path: Path, bad: Any) -> None:
    with work_in_flight(tmp_path) as flight:
        for call in (
            lambda: memlab.get(flight.refs[0], timeout=bad),
            lambda: memlab.get(flight.refs, timeout=bad),
            lambda: memlab.wait(flight.refs, timeout=bad),
            lambda: wait_for(lambda: False, timeout=bad),
            lambda: wait_for_file(tmp_path / "never", timeout=bad),
        ):
            start = time.monotonic()
            with pytest.raises(
                ValueError,
                match=r"timeout must be None or a number of "
                r"seconds >= 0 \(0 polls\), got ",
            ) as info:
                call()
            assert repr(bad) in str(info.value)
            assert time.monotonic() - start < 5  # refused at once, never waited on (nan)
    still_works()


def test_timeout_zero_polls(rt: Any, tmp_path: Path) -> None:
    done = memlab.put("ready")
    assert memlab.get(done, timeout=0) == "ready"
    with work_in_flight(tmp_path) as flight:
        with pytest.raises(memlab.GetTimeoutError):
            memlab.get(flight.refs[0], timeout=0)
        assert memlab.wait([done, *flight.refs], timeout=0) == ([done], flight.refs)
        assert memlab.get([done], timeout=0.0) == ["ready"]
    still_works()


# -------------------------------------------------------------------------------- message sizes


def test_function_capturing_a_large_value_is_refused_at_remote(rt: Any, tmp_path: Path) -> None:
    captured = b"x" * (101 << 20)  # over the code limit (a task message carries the function)

    def uses_captured() -> int:
        return len(captured)

    remote_fn = memlab.remote(uses_captured)
    with work_in_flight(tmp_path), pytest.raises(ValueError) as info:
        remote_fn.remote()
    message = str(info.value)
    assert "uses_captured" in message and "over the 100 MiB limit" in message, message
    assert "captures a large value" in message and "memlab.put()" in message, message  # the fix
    still_works()


def test_many_inline_arguments_adding_up_past_a_message_are_refused(
    rt: Any, tmp_path: Path
) -> None:
    # Each small enough to travel inline (distinct: pickle would write one object once); 66 MiB.
    pieces = [bytes([i % 256]) * (40 << 10) for i in range(1700)]
    with work_in_flight(tmp_path):
        with pytest.raises(
            ValueError,
            match=r"arguments of ident\(\) that travel inline add up "
            r"to .* MiB.*as one list",
        ):
            ident.remote(*pieces)
        with pytest.raises(ValueError, match=r"inline_threshold must be at most 16777216 bytes"):
            memlab.init(inline_threshold=(16 << 20) + 1)
        as_one = ident.remote(pieces)  # the suggested fix: one argument, through the store
    assert len(memlab.get(as_one, timeout=30)) == len(pieces)
    del as_one
    still_works()


@memlab.remote
def count_args(*parts: bytes) -> int:
    return len(parts)


def test_task_whose_inline_dependencies_outgrow_a_message_fails_clearly(
    rt: Any, tmp_path: Path
) -> None:
    # Each value is small enough to live in the driver's memory and travel inline with the
    # task; 2,800 of them are more than one message may carry (256 MiB).
    refs = [memlab.put(bytes([i % 256]) * 100_000) for i in range(2800)]
    with work_in_flight(tmp_path):
        too_many = count_args.remote(*refs)
    with pytest.raises(
        ValueError,
        match=r"count_args\(\) would travel as a 267 MiB message.*"
        r"over the 256 MiB limit; pass the refs inside one list",
    ):
        memlab.get(too_many, timeout=30)
    assert memlab.get(count_args.remote(*refs[:100]), timeout=30) == 100
    del refs, too_many
    still_works()
