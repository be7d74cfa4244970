"""Fault injection: ways for a task to kill its own worker, and for the driver to kill one.

This module owns the failures memlab's tests (and users checking their own pipelines) inject
on purpose. Functions marked "in a task" run inside a worker process; the others run in the
driver.

==============  ===============================  ==========================================
how             what the worker does             how it ends (``expected_exit(how)``)
==============  ===============================  ==========================================
``"sigkill"``   ``os.kill(os.getpid(), 9)``      killed by SIGKILL (as the OOM killer does)
``"exit"``      ``os._exit(3)``                  exit code 3, no cleanup, no reply
``"segfault"``  reads address 0 through ctypes   killed by SIGSEGV (a native-code crash)
==============  ===============================  ==========================================

Crashing at a chosen stage of a task::

    execution        crash(how) or crash_once(marker, how) in the task body
    argument fetch   an argument holding CrashOnUnpickle(value, how): the worker dies while it
                     deserializes the argument (e.g. a large value read from shared memory)
    result store     return CrashOnPickle(value, how): the worker dies while it serializes
                     the result, before anything reaches the owner

"Only the first attempt crashes": pass a ``marker`` path that does not exist yet. The first
attempt creates the file and then crashes; a retry finds the file and carries on, so a retried
task succeeds. The file is created with ``O_EXCL``, so exactly one attempt crashes even when
attempts race.

Invariant: ``kill_worker`` signals only live workers of a runtime this process started (it
checks the pid first), so a stale or mistyped pid never reaches an unrelated process.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from typing import TYPE_CHECKING, Any, NoReturn

import psutil

if TYPE_CHECKING:
    from memlab.runtime.driver.runtime import Runtime

__all__ = [
    "CRASH_MODES",
    "EXIT_CODE",
    "CrashOnPickle",
    "CrashOnUnpickle",
    "crash",
    "crash_once",
    "expected_exit",
    "first_attempt",
    "gated",
    "kill_worker",
    "wait_for_file",
    "worker_pids",
]

#: The values ``how`` accepts, in the order of the table above.
CRASH_MODES: tuple[str, ...] = ("sigkill", "exit", "segfault")

#: The exit status of ``crash("exit")``.
EXIT_CODE = 3

_WORKER_MODULE = "memlab.runtime.worker.main"


def _check_how(how: str) -> None:
    if how not in CRASH_MODES:
        raise ValueError(f"unknown crash mode {how!r}; use one of {', '.join(CRASH_MODES)}")


def crash(how: str = "sigkill") -> NoReturn:
    """Kill the current process at once, the way ``how`` names (in a task).

    Args:
        how: ``"sigkill"`` (SIGKILL to itself), ``"exit"`` (``os._exit(3)``) or
            ``"segfault"`` (a real segmentation fault: a read of address 0).

    Raises:
        ValueError: ``how`` is not one of ``CRASH_MODES`` (checked before anything dies).
    """
    _check_how(how)
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "exit":
        os._exit(EXIT_CODE)
    else:
        _no_core_dump()
        ctypes.string_at(0)
    # SIGKILL is delivered before kill() returns to a process that signals itself; this line
    # is only reached if the platform let the process survive.
    raise AssertionError(f"crash({how!r}) returned; the process should be dead")


def _no_core_dump() -> None:
    """Keep a deliberate segfault from writing a core file (slow, and litter in the cwd)."""
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def first_attempt(marker: str | os.PathLike[str]) -> bool:
    """Create ``marker`` if it does not exist; True only for the call that created it.

    Args:
        marker: A file path; its directory must exist.
    """
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def crash_once(marker: str | os.PathLike[str] | None, how: str = "sigkill") -> None:
    """Crash unless ``marker`` exists, creating it first, so only the first attempt dies.

    Args:
        marker: A file path that does not exist before the first attempt, or None to crash on
            every attempt.
        how: One of ``CRASH_MODES``.

    Raises:
        ValueError: ``how`` is not one of ``CRASH_MODES``.
    """
    _check_how(how)
    if marker is None or first_attempt(marker):
        crash(how)


def _seconds(timeout: float) -> float:
    from memlab.api import check_timeout

    seconds = check_timeout(timeout)
    if seconds is None:
        raise ValueError("timeout must be a number of seconds here, not None")
    return seconds


def wait_for_file(path: str | os.PathLike[str], timeout: float = 30.0) -> None:
    """Block until ``path`` exists: a gate another process opens (in a task or the driver).

    Args:
        path: The file to wait for.
        timeout: Seconds before giving up.

    Raises:
        TimeoutError: The file did not appear within ``timeout`` seconds.
        ValueError: ``timeout`` is negative, NaN or not a number.
    """
    deadline = time.monotonic() + _seconds(timeout)
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{path} did not appear within {timeout:g} s; the process meant to create it "
                "did not get that far (check that it was started)"
            )
        time.sleep(0.005)  # polling a file: there is no cross-process event to block on


def gated(value: Any, gate: str | os.PathLike[str], timeout: float = 30.0) -> Any:
    """In a task: stay in flight until the file ``gate`` exists, then return ``value``.

    Keeps work in flight while a test does something else (``memlab.remote(gated)``).
    """
    wait_for_file(gate, timeout)
    return value


def _identity(value: Any) -> Any:
    return value


def _unpickle_or_crash(value: Any, how: str, marker: str | None) -> Any:
    crash_once(marker, how)
    return value


class CrashOnPickle:
    """A task result that crashes the worker while the worker serializes it.

    Return it from a task to kill the worker in the result-store stage, after user code has
    finished and before the owner hears anything. When it does not crash (``marker`` already
    exists), it pickles as ``value`` itself, so the owner receives ``value``.

    Args:
        value: What the result is when no crash happens (large arrays go to shared memory).
        how: One of ``CRASH_MODES``.
        marker: See ``crash_once``; None crashes every time it is pickled.
    """

    def __init__(
        self, value: Any, how: str = "sigkill", marker: str | os.PathLike[str] | None = None
    ) -> None:
        _check_how(how)
        self.value = value
        self.how = how
        self.marker = None if marker is None else os.fspath(marker)

    def __reduce__(self) -> tuple[Any, tuple[Any]]:
        crash_once(self.marker, self.how)
        return _identity, (self.value,)


class CrashOnUnpickle:
    """A value that pickles normally and crashes the process that unpickles it.

    Pass it (or ``memlab.put`` it and pass the ref) as a task argument to kill the worker in
    the argument-fetch stage. Never ``memlab.get`` it in the driver: the driver would crash.
    When it does not crash (``marker`` already exists), it unpickles as ``value``.

    Args:
        value: What the argument is when no crash happens.
        how: One of ``CRASH_MODES``.
        marker: See ``crash_once``; None crashes every time it is unpickled.
    """

    def __init__(
        self, value: Any, how: str = "sigkill", marker: str | os.PathLike[str] | None = None
    ) -> None:
        _check_how(how)
        self.value = value
        self.how = how
        self.marker = None if marker is None else os.fspath(marker)

    def __reduce__(self) -> tuple[Any, tuple[Any, str, str | None]]:
        return _unpickle_or_crash, (self.value, self.how, self.marker)


def expected_exit(how: str) -> tuple[int | None, int | None]:
    """The ``(exitcode, signal)`` a worker killed by ``crash(how)`` is reported with.

    Raises:
        ValueError: ``how`` is not one of ``CRASH_MODES``.
    """
    _check_how(how)
    if how == "exit":
        return EXIT_CODE, None
    return None, int(signal.SIGKILL if how == "sigkill" else signal.SIGSEGV)


def _is_worker(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE and _WORKER_MODULE in proc.cmdline()
    except psutil.NoSuchProcess:
        return False


def worker_pids() -> list[int]:
    """Pids of the live worker processes of the runtime this process started (in the driver)."""
    try:
        children = psutil.Process().children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return sorted(p.pid for p in children if _is_worker(p))


def kill_worker(target: int | str | None = None, sig: int = signal.SIGKILL) -> int | str:
    """Kill a worker of this process's runtime (in the driver); returns what was killed.

    The runtime sees an unexpected death: tasks running there are retried or fail with
    ``WorkerCrashedError``, objects the worker owned fail with ``OwnerDiedError``, and the
    node manager starts a replacement.

    Args:
        target: a worker id (``"w-…"``, as in ``memlab.state.workers()``), a worker's pid
            (from ``worker_pids()`` or ``os.getpid()`` in a task), or None for a random worker.
        sig: The signal to send (default SIGKILL).

    Raises:
        ValueError: ``pid`` is not a live worker of a runtime started by this process; this
            guard keeps a stale or mistyped pid from killing an unrelated process.
    """
    if not isinstance(target, int):
        return driver_runtime().nodes.kill_worker(target)
    pid = target
    if pid not in worker_pids():
        raise ValueError(
            f"pid {pid} is not a live memlab worker of this process's runtime; pass a pid "
            "from memlab.testing.worker_pids() or one a running task reported (os.getpid())"
        )
    with contextlib.suppress(ProcessLookupError):  # it died on its own meanwhile
        os.kill(pid, sig)
    return pid


def driver_runtime() -> Runtime:
    """The runtime ``memlab.init()`` started in this process (the driver), for fault injection."""
    from memlab.runtime.context import current_runtime
    from memlab.runtime.driver.runtime import Runtime

    runtime = current_runtime()
    if not isinstance(runtime, Runtime):
        raise ValueError("no runtime runs in this process; call memlab.init() first")
    return runtime
