"""memlab.exceptions: the hierarchy, messages, pickling, and TaskError's dual classes."""

from __future__ import annotations

import base64
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from typing import Any

import cloudpickle
import numpy as np
import pytest

import memlab.exceptions as exc_mod
from memlab.exceptions import (
    ActorDiedError,
    AuthenticationError,
    ConnectionClosedError,
    EventsUnavailableError,
    GetTimeoutError,
    HandshakeAbandonedError,
    MemlabError,
    ObjectLostError,
    ObjectReconstructionFailedError,
    ObjectStoreFullError,
    OwnerDiedError,
    ProtocolError,
    RuntimeConflictError,
    RuntimeNotStartedError,
    SerializationError,
    StaleRefError,
    TaskCancelledError,
    TaskError,
    TaskUnschedulableError,
    WorkerCrashedError,
)

MiB = 2**20
GiB = 2**30


class MyErr(Exception):
    """A user exception whose __init__ signature does not match its args."""

    def __init__(self, a: int, b: int) -> None:
        self.a = a
        super().__init__(f"{a}-{b}")


class LockedErr(Exception):
    """A user exception that cannot be pickled (it holds a lock)."""

    def __init__(self) -> None:
        super().__init__("holds a lock")
        self.lock = threading.Lock()


class RefusesSubclassing(Exception):
    """Stands in for a final exception class."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        raise TypeError("RefusesSubclassing is final")


class PickyNew(Exception):
    """Pickles fine, but its __new__ rejects its own args, so no subclass instance can be made."""

    def __new__(cls, a: int, b: int) -> PickyNew:
        return super().__new__(cls, a, b)

    def __init__(self, a: int, b: int) -> None:
        self.a, self.b = a, b
        super().__init__(f"{a}+{b}")

    def __reduce__(self) -> Any:
        return PickyNew, (self.a, self.b)


def user_task(exc: BaseException) -> None:
    raise exc


def wrap(exc: BaseException, name: str = "load") -> TaskError:
    """What a worker does: run the task and wrap what it raised, inside the except block."""
    try:
        user_task(exc)
    except BaseException as e:
        return TaskError.from_exception(name, e, pid=4242, worker_id="w-1")
    raise AssertionError("user_task did not raise")


def roundtrip(obj: Any, via: str) -> Any:
    if via == "pickle":
        return pickle.loads(pickle.dumps(obj, protocol=5))
    return cloudpickle.loads(cloudpickle.dumps(obj))


PICKLERS = ["pickle", "cloudpickle"]

# Built fresh for each test: tests mutate them (add_note).
EXAMPLES: list[tuple[Callable[[], BaseException], dict[str, Any]]] = [
    (lambda: MemlabError("plain message"), {"args": ("plain message",)}),
    (lambda: RuntimeNotStartedError("memlab.get()"), {"operation": "memlab.get()"}),
    (
        lambda: RuntimeConflictError({"num_workers": (4, 8)}),
        {"differences": {"num_workers": (4, 8)}},
    ),
    (
        lambda: EventsUnavailableError("memlab.state.objects()", "its collector is gone"),
        {"operation": "memlab.state.objects()", "reason": "its collector is gone"},
    ),
    (lambda: TaskCancelledError("load", "t-1"), {"task_name": "load", "task_id": "t-1"}),
    (
        lambda: TaskUnschedulableError("load", "t-1", "node-3", "died"),
        {"task_name": "load", "task_id": "t-1", "node_id": "node-3", "reason": "died"},
    ),
    (
        lambda: WorkerCrashedError("load", "w-1", 12, None, 9, 4),
        {"task_name": "load", "worker_id": "w-1", "pid": 12, "exitcode": None, "signal": 9},
    ),
    (
        lambda: ObjectLostError("ab12", "node 2 died", "cell 3, line 1"),
        {"object_id": "ab12", "reason": "node 2 died", "call_site": "cell 3, line 1"},
    ),
    (
        lambda: OwnerDiedError("ab12", "worker w-3", "cell 3, line 1"),
        {"object_id": "ab12", "owner": "worker w-3", "call_site": "cell 3, line 1"},
    ),
    (
        lambda: ObjectReconstructionFailedError("ab12", "load", 3, "budget exhausted", "f.py:9"),
        {"task_name": "load", "attempts": 3, "reason": "budget exhausted", "call_site": "f.py:9"},
    ),
    (
        lambda: StaleRefError("ab12", "cell 3, line 1"),
        {"object_id": "ab12", "call_site": "cell 3, line 1"},
    ),
    (lambda: GetTimeoutError(2.5, 3), {"timeout": 2.5, "pending": 3}),
    (
        lambda: ObjectStoreFullError(12 * MiB, 2 * GiB, GiB, 512 * MiB, "spilling failed"),
        {
            "requested": 12 * MiB,
            "capacity": 2 * GiB,
            "pinned": 512 * MiB,
            "detail": "spilling failed",
        },
    ),
    (
        lambda: SerializationError("cannot pickle '_thread.lock'", "Lock", "argument 1 of load"),
        {"message": "cannot pickle '_thread.lock'", "type_name": "Lock"},
    ),
    (lambda: ActorDiedError("Counter", "a-1", "its worker was killed"), {"actor_id": "a-1"}),
    (lambda: ProtocolError("frame too short", "worker w-2"), {"message": "frame too short"}),
    (lambda: AuthenticationError("bad HMAC", "pid 77"), {"peer": "pid 77"}),
    (
        lambda: HandshakeAbandonedError("peer closed before the answer"),
        {"message": "peer closed before the answer"},
    ),
    (
        lambda: ConnectionClosedError("node manager", "EOF"),
        {"peer": "node manager", "reason": "EOF"},
    ),
    (
        lambda: TaskError("load", ValueError("bad"), "Traceback ...", 3, "w-1"),
        {"task_name": "load", "traceback_str": "Traceback ...", "pid": 3, "worker_id": "w-1"},
    ),
]


def _example_id(example: tuple[Callable[[], BaseException], dict[str, Any]]) -> str:
    return type(example[0]()).__name__


@pytest.mark.parametrize("via", PICKLERS)
@pytest.mark.parametrize("example", EXAMPLES, ids=_example_id)
def test_every_error_roundtrips_with_its_attributes(
    example: tuple[Callable[[], BaseException], dict[str, Any]], via: str
) -> None:
    make, attrs = example
    error = make()
    error.add_note("added after construction")
    back = roundtrip(error, via)
    assert type(back) is type(error)
    assert str(back) == str(error)
    assert back.__notes__ == ["added after construction"]
    for name, value in attrs.items():
        assert getattr(back, name) == value


def test_every_public_class_is_documented_and_drawn_in_the_module_docstring() -> None:
    doc = exc_mod.__doc__ or ""
    for name in exc_mod.__all__:
        cls = getattr(exc_mod, name)
        assert name in doc
        assert "raised" in (cls.__doc__ or "").lower(), name
    tested = {type(make()).__name__ for make, _ in EXAMPLES}
    assert tested == set(exc_mod.__all__)


@pytest.mark.parametrize(
    ("cls", "bases"),
    [
        (RuntimeNotStartedError, (MemlabError, RuntimeError)),
        (RuntimeConflictError, (MemlabError, RuntimeError)),
        (OwnerDiedError, (ObjectLostError,)),
        (ObjectReconstructionFailedError, (ObjectLostError,)),
        (GetTimeoutError, (MemlabError, TimeoutError)),
        (SerializationError, (MemlabError, TypeError)),
        (AuthenticationError, (ProtocolError,)),
        (HandshakeAbandonedError, (AuthenticationError,)),
        (ConnectionClosedError, (MemlabError,)),
        (TaskError, (MemlabError,)),
    ],
)
def test_hierarchy(cls: type, bases: tuple[type, ...]) -> None:
    assert all(issubclass(cls, base) for base in bases)


def test_get_timeout_is_caught_as_a_builtin_timeout() -> None:
    with pytest.raises(TimeoutError) as info:
        raise GetTimeoutError(1.5, pending=2)
    assert "1.5 s" in str(info.value)
    assert "memlab.wait()" in str(info.value)


def test_runtime_messages_name_the_fix() -> None:
    assert "memlab.init()" in str(RuntimeNotStartedError("memlab.get()"))
    conflict = str(RuntimeConflictError({"num_workers": (4, 8), "num_nodes": (1, 2)}))
    assert "num_workers: running 4, requested 8" in conflict
    assert "num_nodes: running 1, requested 2" in conflict
    assert "memlab.shutdown()" in conflict


def test_taskerror_from_valueerror_is_caught_as_both() -> None:
    error = wrap(ValueError("bad value"))
    with pytest.raises(ValueError, match="bad value"):
        raise error
    with pytest.raises(TaskError):
        raise error
    assert type(error).__name__ == "TaskError(ValueError)"
    assert error.args == ("bad value",)
    assert (error.task_name, error.pid, error.worker_id) == ("load", 4242, "w-1")
    assert type(wrap(ValueError("other"))) is type(error)  # one class per cause class


@pytest.mark.parametrize("via", PICKLERS)
def test_dual_class_survives_pickling(via: str) -> None:
    error = wrap(KeyError("missing"))
    back = roundtrip(error, via)
    assert isinstance(back, KeyError)
    assert isinstance(back, TaskError)
    assert isinstance(back.cause, KeyError)
    assert back.traceback_str == error.traceback_str
    assert "in user_task" in back.traceback_str


def test_dual_class_is_rebuilt_in_another_process() -> None:
    # The child defines its exception class in __main__, so only cloudpickle (by value) can
    # carry it, and the parent has never seen the dual class.
    child = textwrap.dedent(
        """
        import base64, sys, cloudpickle
        from memlab.exceptions import TaskError
        class ChildError(LookupError):
            def __init__(self, key, where):
                self.key = key
                super().__init__(f"{key} not in {where}")
        def task():
            raise ChildError("k", "table")
        try:
            task()
        except Exception as e:
            err = TaskError.from_exception("child_task", e, pid=1, worker_id="w-9")
        sys.stdout.write(base64.b64encode(cloudpickle.dumps(err)).decode())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=60, check=True
    )
    error = pickle.loads(base64.b64decode(out.stdout))
    assert isinstance(error, LookupError)
    assert isinstance(error, TaskError)
    assert type(error).__name__ == "TaskError(ChildError)"
    assert error.key == "k"
    assert "k not in table" in str(error)
    assert "in task" in error.traceback_str


@pytest.mark.parametrize("via", PICKLERS)
def test_custom_init_signature_is_never_called_with_wrong_args(via: str) -> None:
    error = wrap(MyErr(1, 2))
    assert isinstance(error, MyErr)
    assert error.a == 1  # attributes of the cause read through the error
    assert "1-2" in str(error)
    back = roundtrip(error, via)
    assert isinstance(back, MyErr)
    assert back.a == 1
    assert back.args == ("1-2",)
    with pytest.raises(MyErr):
        raise back


def test_oserror_cause_keeps_errno_and_filename() -> None:
    error = wrap(FileNotFoundError(2, "No such file or directory", "/data/x.npy"))
    back = roundtrip(error, "pickle")
    for e in (error, back):
        assert isinstance(e, FileNotFoundError)
        assert (e.errno, e.filename) == (2, "/data/x.npy")


@pytest.mark.parametrize("via", PICKLERS)
def test_unpicklable_cause_keeps_its_repr(via: str) -> None:
    error = wrap(LockedErr())
    assert error.cause is None
    assert error.cause_repr == "LockedErr('holds a lock')"
    assert type(error) is TaskError
    back = roundtrip(error, via)
    assert back.cause is None
    assert back.cause_repr == error.cause_repr
    assert "LockedErr('holds a lock')" in str(back)
    assert "holds a lock" in back.traceback_str


def test_directly_built_error_with_unpicklable_cause_still_pickles() -> None:
    error = TaskError("load", LockedErr(), "tb")
    back = roundtrip(error, "pickle")
    assert back.cause is None
    assert back.cause_repr == "LockedErr('holds a lock')"


@pytest.mark.parametrize(
    "cause",
    [KeyboardInterrupt(), SystemExit(3), RefusesSubclassing("x"), PickyNew(1, 2)],
    ids=["KeyboardInterrupt", "SystemExit", "final-class", "picky-__new__"],
)
def test_unsubclassable_cause_falls_back_to_plain_taskerror(cause: BaseException) -> None:
    error = wrap(cause)
    assert type(error) is TaskError
    assert error.cause is cause
    assert not isinstance(error, type(cause))
    assert type(roundtrip(error, "pickle")) is TaskError


def test_as_instanceof_cause_is_idempotent() -> None:
    plain = TaskError("load", ZeroDivisionError("division by zero"), "tb", 1, "w-1")
    assert not isinstance(plain, ZeroDivisionError)
    dual = plain.as_instanceof_cause()
    assert isinstance(dual, ZeroDivisionError)
    assert dual.as_instanceof_cause() is dual
    assert (dual.task_name, dual.traceback_str, dual.pid) == ("load", "tb", 1)


def test_nested_task_failure_is_still_the_original_class() -> None:
    inner = wrap(ValueError("deep"), name="inner")
    outer = wrap(inner, name="outer")
    assert isinstance(outer, ValueError)
    assert outer.task_name == "outer"
    assert outer.cause is inner
    text = str(roundtrip(outer, "pickle"))
    assert "'outer'" in text
    assert "'inner'" in text


def test_str_shows_task_cause_and_remote_traceback() -> None:
    text = str(wrap(ValueError("bad value")))
    assert "Task 'load' failed on worker w-1, pid 4242" in text
    assert "ValueError: bad value" in text
    assert "Traceback (most recent call last)" in text
    assert "in user_task" in text


def test_render_traceback_for_ipython() -> None:
    lines = wrap(ValueError("bad value"))._render_traceback_()
    assert lines[0].startswith("TaskError(ValueError): Task 'load' failed on worker w-1, pid 4242")
    assert "Traceback (most recent call last):" in lines
    assert any("in user_task" in line for line in lines)
    assert lines[-1] == "ValueError: bad value"
    assert all("\n" not in line for line in lines)


def test_memlab_frames_are_trimmed_from_the_remote_traceback() -> None:
    # A stand-in for the worker's executor, compiled as if it lived inside the package.
    fake = os.path.join(os.path.dirname(exc_mod.__file__), "runtime", "fake_executor.py")
    source = "def execute(fn, arg):\n    try:\n        fn(arg)\n    except Exception as e:\n"
    source += "        return TaskError.from_exception('t', e)\n"
    namespace: dict[str, Any] = {"TaskError": TaskError}
    exec(compile(source, fake, "exec"), namespace)
    error = namespace["execute"](user_task, ValueError("x"))
    assert "fake_executor" not in error.traceback_str
    assert "in user_task" in error.traceback_str


def test_read_only_hint() -> None:
    view = np.zeros(3)
    view.flags.writeable = False
    try:
        view[0] = 1.0
    except ValueError as e:
        error = TaskError.from_exception("scale", e)
    assert "read-only" in str(error.cause)
    assert "arr.copy()" in str(error)
    assert any("arr.copy()" in line for line in error._render_traceback_())
    assert "arr.copy()" not in str(wrap(ValueError("bad value")))


@pytest.mark.parametrize(
    ("exitcode", "sig", "expected"),
    [
        (None, signal.SIGKILL, ["SIGKILL", "out-of-memory killer"]),
        (-9, None, ["SIGKILL", "out-of-memory killer"]),
        (None, signal.SIGSEGV, ["SIGSEGV", "native code"]),
        (3, None, ["exited with code 3", "os._exit"]),
        (None, None, ["lost its connection"]),
    ],
)
def test_worker_crash_messages(exitcode: int | None, sig: int | None, expected: list[str]) -> None:
    assert all(part in WorkerCrashedError.describe_exit(exitcode, sig) for part in expected)
    text = str(WorkerCrashedError("load", "w-1", 12, exitcode, sig, 4))
    assert all(part in text for part in expected)
    assert "Worker w-1 (pid 12)" in text
    assert "'load'" in text
    assert "4 times" in text
    assert "max_retries" in text


def test_object_store_full_message() -> None:
    text = str(ObjectStoreFullError(12 * MiB, 2 * GiB, int(1.5 * GiB), 512 * MiB))
    for part in ("12.0 MiB", "1.5 GiB", "2.0 GiB", "512.0 MiB", "pinned", "del refs"):
        assert part in text
    assert "memlab.init(object_store_memory=...)" in text
    assert "300 B" in str(ObjectStoreFullError(300, 4 * 1024, 0, 0))
    assert "4.0 KiB" in str(ObjectStoreFullError(300, 4 * 1024, 0, 0))


def test_object_lost_messages_name_object_site_and_fix() -> None:
    lost = str(ObjectLostError("ab12", "node 2 died", "cell 3, line 1"))
    assert "ab12" in lost
    assert "cell 3, line 1" in lost
    assert "node 2 died" in lost
    died = str(OwnerDiedError("ab12", "worker w-3"))
    assert "worker w-3" in died
    assert "fate-share" in died
    assert "driver" in died
    failed = str(ObjectReconstructionFailedError("ab12", "load", 3, "worker crashed"))
    assert "'load'" in failed
    assert "3 attempt" in failed
    assert "worker crashed" in failed
