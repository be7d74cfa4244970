"""Shared helpers of the actor tests: state lookups (the check that no actor outlives a test
is the ``no_actor_survives`` fixture in conftest.py)."""

from __future__ import annotations

from typing import Any

import psutil

import memlab

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
