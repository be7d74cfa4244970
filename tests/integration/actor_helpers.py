"""Shared helpers of the actor tests: state lookups and the check that no actor (nor the
worker that hosted it) outlives a test."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

import memlab
from memlab.testing import wait_for

DEADLINE = 10.0


def pid_of(worker_id: str) -> int:
    return next(w["pid"] for w in memlab.state.workers() if w["worker_id"] == worker_id)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def name_is_free(name: str) -> bool:
    """True once ``memlab.get_actor(name)`` finds no actor."""
    try:
        memlab.get_actor(name)
    except ValueError:
        return True
    return False


def actor_record(actor_id: str) -> dict[str, Any] | None:
    return next((a for a in memlab.state.actors() if a["actor_id"] == actor_id), None)


def actor_events(actor_id: str, since: int | None = None) -> list[dict[str, Any]]:
    return [
        e
        for e in memlab.state.events(since)
        if e["kind"].startswith("actor.") and e["actor_id"] == actor_id
    ]


def last_seq() -> int | None:
    return max((e["seq"] for e in memlab.state.events()), default=None)


@pytest.fixture(autouse=True)
def no_actor_survives(rt: Any) -> Iterator[None]:
    """After each test, every actor is dead and every worker that hosted one has exited."""
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
