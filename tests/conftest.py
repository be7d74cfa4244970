"""Fixtures: a shared runtime for light tests, fresh ones for tests that break things, and the
leak check every runtime gets when it ends (no process, socket or /dev/shm file left)."""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import memlab
from memlab.runtime.context import current_runtime
from memlab.testing.invariants import validate_session
from memlab.testing.leaks import SHM_DIR, assert_session_gone, session_processes, wait_for

STORE = 256 << 20

# Every process of every runtime the suite starts (workers too) checks its ownership invariants
# every 50 ms; ``validate_session`` at each runtime's teardown reports a failure from any of them.
os.environ.setdefault("MEMLAB_VALIDATE_EVERY", "0.05")


def _pids(runtime: Any) -> list[int]:
    return [p.pid for p in session_processes()]


def stop_and_check(runtime: Any) -> None:
    pids = _pids(runtime)
    session_dir = runtime.session_dir
    gc.collect()
    if current_runtime() is runtime:
        validate_session()  # the driver's core and every live worker's
    else:  # the test shut it down itself: only the driver's table is left to check
        runtime.core.validate()
    memlab.shutdown()
    runtime.shutdown()
    assert_session_gone(session_dir, pids, plasma_directory=runtime.options.plasma_directory)
    wait_for(
        lambda: not [t for t in threading.enumerate() if t.name.startswith("memlab")],
        5,
        message="runtime threads stopped",
    )


@pytest.fixture(scope="module")
def shared_runtime() -> Iterator[Any]:
    runtime = memlab.init(num_workers=2, object_store_memory=STORE)
    yield runtime
    stop_and_check(runtime)


@pytest.fixture
def rt(shared_runtime: Any) -> Iterator[Any]:
    """The module's shared runtime; its ownership invariants are validated after each test."""
    yield shared_runtime
    gc.collect()
    validate_session()


@pytest.fixture
def fresh_runtime() -> Iterator[Callable[..., Any]]:
    """A factory for a dedicated runtime, leak-checked at teardown."""
    started: list[Any] = []

    def start(**kwargs: Any) -> Any:
        if memlab.is_initialized():
            memlab.shutdown()
        kwargs.setdefault("num_workers", 2)
        kwargs.setdefault("object_store_memory", STORE)
        runtime = memlab.init(**kwargs)
        started.append(runtime)
        return runtime

    yield start
    for runtime in started:
        stop_and_check(runtime)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if memlab.is_initialized():
        memlab.shutdown()
    mine = (
        [f for f in os.listdir(SHM_DIR) if f.startswith(f"memlab-{os.getpid()}-")]
        if os.path.isdir(SHM_DIR)
        else []
    )
    assert not mine, f"shared-memory files left behind by this test run: {mine}"
