"""Fixtures shared by the integration tests (the runtime fixtures are in tests/conftest.py)."""

from __future__ import annotations

import gc
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

import memlab
from memlab.testing import wait_for
from tests.integration.actor_helpers import DEADLINE, gone, last_seq


@pytest.fixture
def private_tmp() -> Iterator[str]:
    """A short private $TMPDIR for a driver under test, so its session directory lives there.

    Any ``memlab.init()`` on this machine (other test runs included) reaps the files of sessions
    whose driver is dead, in /tmp and /dev/shm. A session directory in this private TMPDIR is out
    of their reach, so a test sees what the session itself cleaned up, not what a stranger did.
    """
    path = tempfile.mkdtemp(prefix="mlt-", dir="/tmp")  # short: socket paths are limited
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def no_actor_survives(rt: Any) -> Iterator[None]:
    """After the test, every actor is dead and every worker that hosted one has exited (use it
    with ``pytestmark = pytest.mark.usefixtures("no_actor_survives")``)."""
    since = last_seq()
    yield
    gc.collect()
    wait_for(
        lambda: all(a["state"] == "dead" for a in memlab.state.actors()),
        DEADLINE,
        message="every actor dead after the test",
    )
    pids = {w["worker_id"]: w["pid"] for w in memlab.state.workers()}
    hosts = {e["worker"] for e in memlab.state.events(since) if e["kind"] == "actor.created"}
    wait_for(
        lambda: all(gone(pids[w]) for w in hosts if w in pids),
        DEADLINE,
        message=f"the workers that hosted actors ({sorted(hosts)}) exited",
    )
