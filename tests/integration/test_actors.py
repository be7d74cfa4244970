"""Actors: handles, ordered calls, options, names, kill, handles passed around, async methods,
constructor failures, lifetime by handles, their state and events, and bad input.

Every test runs on the module's shared runtime; an autouse fixture checks after each one that
every actor it started is dead and its worker process has exited (named ones are killed by the
test), so no actor outlives the handles to it.
"""

from __future__ import annotations

import asyncio
import gc
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import memlab
from memlab.testing import actor_id, wait_for, wait_for_file, worker_pids
from tests.integration.actor_helpers import (
    actor_events,
    actor_record,
    gone,
    last_seq,
    name_is_free,
    pid_of,
)

pytestmark = pytest.mark.usefixtures("no_actor_survives")

DEADLINE = 10.0
BIG = 50_000  # float64 elements: 400 kB, above the inline threshold


@memlab.remote
class Counter:
    def __init__(self, start: int = 0) -> None:
        self.n = start
        self.items: list[int] = []

    def add(self, k: int = 1) -> int:
        self.n += k
        return self.n

    def get(self) -> int:
        return self.n

    def append(self, i: int) -> int:
        self.items.append(i)
        return len(self.items)

    def seen(self) -> list[int]:
        return list(self.items)

    def pid(self) -> int:
        return os.getpid()

    def total(self, a: np.ndarray) -> float:
        return float(a.sum())

    def wait_gate(self, gate: str) -> int:
        wait_for_file(gate, DEADLINE)
        return self.n


@memlab.remote
class Caller:
    """An actor that calls another actor through a handle it was given."""

    def __init__(self, other: memlab.ActorHandle) -> None:
        self.other = other

    def bump(self, k: int) -> int:
        return memlab.get(self.other.add.remote(k))

    def bump_via(self, other: memlab.ActorHandle, k: int) -> int:
        return memlab.get(other.add.remote(k))


@memlab.remote
class Holder:
    """Async methods: each call holds a slot until the gate opens; ``peak`` is the most at once."""

    def __init__(self) -> None:
        self.active = 0
        self.peak = 0

    async def hold(self, i: int, tmp: str) -> int:
        self.active += 1
        self.peak = max(self.peak, self.active)
        Path(tmp, f"entered-{i}").touch()
        while not os.path.exists(os.path.join(tmp, "gate")):
            await asyncio.sleep(0.005)  # a gate file: there is no cross-process event to await
        self.active -= 1
        return i

    async def get_peak(self) -> int:
        return self.peak


@memlab.remote
class BrokenInit:
    def __init__(self, why: str) -> None:
        raise ValueError(f"cannot start: {why}")

    def ping(self) -> int:
        return 1


@memlab.remote
def add_through(h: memlab.ActorHandle, k: int) -> int:
    return memlab.get(h.add.remote(k))


@memlab.remote
def append_many(h: memlab.ActorHandle, start: int, n: int) -> list[int]:
    """A task as a caller: its own calls run in its submission order."""
    return memlab.get([h.append.remote(i) for i in range(start, start + n)])


@memlab.remote
def square(x: int) -> int:
    return x * x


def plain_function() -> int:
    return 1


# ------------------------------------------------------------------------------------ helpers


# ---------------------------------------------------------------------------------- the basics


def test_remote_returns_a_handle_and_methods_return_refs(rt: Any) -> None:
    h = Counter.remote(10)
    assert isinstance(h, memlab.ActorHandle)
    ref = h.add.remote(5)
    assert isinstance(ref, memlab.ObjectRef)
    assert memlab.get(ref, timeout=DEADLINE) == 15
    assert memlab.get([h.add.remote() for _ in range(3)], timeout=DEADLINE) == [16, 17, 18]
    assert memlab.get(h.get.remote(), timeout=DEADLINE) == 18
    # An actor runs on a worker of its own, outside the task pool.
    assert memlab.get(h.pid.remote(), timeout=DEADLINE) in set(worker_pids())
    assert memlab.get(square.remote(7), timeout=DEADLINE) == 49


def test_calls_from_one_caller_run_in_submission_order(rt: Any) -> None:
    h = Counter.remote()
    lengths = memlab.get([h.append.remote(i) for i in range(200)], timeout=DEADLINE)
    assert lengths == list(range(1, 201))
    assert memlab.get(h.seen.remote(), timeout=DEADLINE) == list(range(200))
    # A task is a caller too: its calls keep its own order.
    assert memlab.get(append_many.remote(h, 200, 50), timeout=DEADLINE) == list(range(201, 251))
    assert memlab.get(h.seen.remote(), timeout=DEADLINE) == list(range(250))


def test_state_and_events_follow_an_actor_from_creation_to_death(rt: Any) -> None:
    since = last_seq()
    h = Counter.options(max_restarts=1).remote()
    pid = memlab.get(h.pid.remote(), timeout=DEADLINE)
    aid = actor_id(h)
    wait_for(lambda: actor_record(aid) is not None, DEADLINE, message="the actor in memlab.state")
    record = actor_record(aid)
    assert record is not None
    assert (record["name"], record["state"], record["restarts"]) == ("Counter", "alive", 0)
    assert pid_of(record["worker"]) == pid

    assert memlab.get(h.add.remote(5), timeout=DEADLINE) == 5
    memlab.kill(h, no_restart=False)  # restarted: max_restarts allows it
    # A call sent before the owner sees the death would fail; wait for the restart first.
    wait_for(
        lambda: (actor_record(aid) or {}).get("restarts") == 1,
        DEADLINE,
        message="the restart in memlab.state.actors()",
    )
    assert memlab.get(h.get.remote(), timeout=DEADLINE) == 0  # __init__ ran again
    assert memlab.get(h.pid.remote(), timeout=DEADLINE) != pid
    record = actor_record(aid)
    assert record is not None and record["state"] == "alive", record
    # The new worker's actor.created comes in its next event batch; a kill before that batch
    # is sent would lose it, so wait for it.
    wait_for(
        lambda: [e["kind"] for e in actor_events(aid, since)].count("actor.created") == 2,
        DEADLINE,
        message="actor.created from the restarted worker",
    )

    memlab.kill(h)
    wait_for(
        lambda: (actor_record(aid) or {}).get("state") == "dead",
        DEADLINE,
        message="the death in memlab.state.actors()",
    )

    def kinds() -> list[str]:
        return sorted(e["kind"] for e in actor_events(aid, since))

    want = ["actor.created", "actor.created", "actor.died", "actor.restarted", "actor.restarting"]
    wait_for(lambda: kinds() == want, DEADLINE, message=f"events {want}")
    record = actor_record(aid)
    assert record is not None and record["state"] == "dead", record  # a late created: still dead
    died = next(e for e in actor_events(aid, since) if e["kind"] == "actor.died")
    assert "memlab.kill()" in died["reason"], died


# ------------------------------------------------------------------------- names, kill, scope


def test_named_actor_is_found_by_name_and_lives_until_killed(rt: Any) -> None:
    h = Counter.options(name="test-actors-named").remote(100)
    pid = memlab.get(h.pid.remote(), timeout=DEADLINE)
    found = memlab.get_actor("test-actors-named")
    assert isinstance(found, memlab.ActorHandle) and found == h
    assert memlab.get(found.add.remote(1), timeout=DEADLINE) == 101
    with pytest.raises(ValueError, match=r"already exists.*get_actor"):
        Counter.options(name="test-actors-named").remote()
    with pytest.raises(ValueError, match=r"no actor is named 'nobody'.*options\(name="):
        memlab.get_actor("nobody")

    del h, found
    gc.collect()
    # Still alive with no handle left: a named actor lives until it is killed.
    again = memlab.get_actor("test-actors-named")
    assert memlab.get(again.add.remote(1), timeout=DEADLINE) == 102
    assert memlab.get(again.pid.remote(), timeout=DEADLINE) == pid

    memlab.kill(again)
    wait_for(lambda: gone(pid), DEADLINE, message="the killed actor's worker exited")
    aid = actor_id(again)
    wait_for(
        lambda: (actor_record(aid) or {}).get("state") == "dead",
        DEADLINE,
        message="the owner saw the kill (memlab.state.actors())",
    )
    with pytest.raises(memlab.ActorDiedError, match=r"killed with memlab\.kill\(\)"):
        memlab.get(again.get.remote(), timeout=DEADLINE)


def test_a_killed_actors_name_is_free_again(rt: Any) -> None:
    first = Counter.options(name="test-actors-reused").remote(1)
    first_pid = memlab.get(first.pid.remote(), timeout=DEADLINE)
    memlab.kill(first)
    wait_for(lambda: gone(first_pid), DEADLINE, message="the killed actor's worker exited")
    wait_for(
        lambda: name_is_free("test-actors-reused"),
        DEADLINE,
        message="the dead actor's name released",
    )
    second = Counter.options(name="test-actors-reused").remote(50)
    assert memlab.get(second.add.remote(1), timeout=DEADLINE) == 51
    assert memlab.get_actor("test-actors-reused") == second != first
    memlab.kill(second)


def test_kill_fails_calls_in_flight_and_later_ones(rt: Any, tmp_path: Path) -> None:
    h = Counter.options(max_restarts=3).remote()
    pid = memlab.get(h.pid.remote(), timeout=DEADLINE)
    others = [square.remote(i) for i in range(8)]
    blocked = h.wait_gate.remote(str(tmp_path / "never"))
    queued = h.add.remote(1)
    memlab.kill(h, no_restart=True)  # no restart even though max_restarts allows three
    for ref in (blocked, queued):
        with pytest.raises(memlab.ActorDiedError) as info:
            memlab.get(ref, timeout=DEADLINE)
        assert "Counter" in str(info.value), str(info.value)
    with pytest.raises(memlab.ActorDiedError, match=r"memlab\.kill\(\)"):
        memlab.get(h.get.remote(), timeout=DEADLINE)
    assert memlab.get(others, timeout=DEADLINE) == [i * i for i in range(8)]
    wait_for(lambda: gone(pid), DEADLINE, message="the killed actor's worker exited")


def test_actor_is_killed_when_every_handle_goes_out_of_scope(rt: Any) -> None:
    since = last_seq()
    h = Counter.remote()
    pid = memlab.get(h.pid.remote(), timeout=DEADLINE)
    aid = actor_id(h)
    # A handle held by a task keeps it alive while the task runs.
    assert memlab.get(add_through.remote(h, 3), timeout=DEADLINE) == 3
    assert not gone(pid)
    del h
    gc.collect()
    wait_for(lambda: gone(pid), DEADLINE, message="the actor's worker exited after del handle")

    def died() -> bool:
        return any(e["kind"] == "actor.died" for e in actor_events(aid, since))

    wait_for(died, DEADLINE, message="an actor.died event")
    reason = next(e for e in actor_events(aid, since) if e["kind"] == "actor.died")["reason"]
    assert "out of scope" in reason, reason


def test_actor_dropped_before_it_started_is_killed(rt: Any) -> None:
    pool = set(worker_pids())
    Counter.remote()  # the handle is dropped at once, while its worker is still starting
    gc.collect()
    # The autouse fixture checks the actor ends up dead and its worker gone; check it here too
    # so the failure names this case.
    wait_for(
        lambda: (
            set(worker_pids()) <= pool and all(a["state"] == "dead" for a in memlab.state.actors())
        ),
        DEADLINE,
        message="an actor whose handle was dropped at creation killed, its worker exited",
    )


# ------------------------------------------------------------------------ handles passed around


def test_handles_pass_to_tasks_and_to_other_actors(rt: Any) -> None:
    target = Counter.remote()
    assert memlab.get(add_through.remote(target, 2), timeout=DEADLINE) == 2
    caller = Caller.remote(target)  # a handle as a constructor argument
    assert memlab.get(caller.bump.remote(10), timeout=DEADLINE) == 12
    assert memlab.get(caller.bump_via.remote(target, 100), timeout=DEADLINE) == 112
    assert memlab.get(target.get.remote(), timeout=DEADLINE) == 112
    # The second actor keeps the first alive through its handle after ours is gone.
    pid = memlab.get(target.pid.remote(), timeout=DEADLINE)
    del target
    gc.collect()
    assert memlab.get(caller.bump.remote(1), timeout=DEADLINE) == 113
    assert not gone(pid)


# ------------------------------------------------------------------------------- concurrency


def test_async_methods_run_concurrently_up_to_max_concurrency(rt: Any, tmp_path: Path) -> None:
    h = Holder.options(max_concurrency=4).remote()
    refs = [h.hold.remote(i, str(tmp_path)) for i in range(8)]

    def entered() -> int:
        return len(list(tmp_path.glob("entered-*")))

    # Four calls are inside the method at once while the gate is closed: they run concurrently.
    wait_for(lambda: entered() >= 4, DEADLINE, message="four async calls running at once")
    (tmp_path / "gate").touch()
    assert memlab.get(refs, timeout=DEADLINE) == list(range(8))
    assert entered() == 8
    assert memlab.get(h.get_peak.remote(), timeout=DEADLINE) == 4  # never more than four


def test_max_concurrency_one_runs_calls_one_at_a_time(rt: Any, tmp_path: Path) -> None:
    h = Holder.remote()
    refs = [h.hold.remote(i, str(tmp_path)) for i in range(3)]
    wait_for(lambda: (tmp_path / "entered-0").exists(), DEADLINE, message="first call entered")
    (tmp_path / "gate").touch()
    assert memlab.get(refs, timeout=DEADLINE) == [0, 1, 2]
    assert memlab.get(h.get_peak.remote(), timeout=DEADLINE) == 1


# -------------------------------------------------------------------------- failures, bad input


def test_constructor_error_fails_every_call_and_says_why(rt: Any) -> None:
    # Calls sent with the creation are in flight when the owner learns the constructor failed
    # and stops the worker; whether the worker answers them first is a race, so run it often.
    for _ in range(10):
        since = last_seq()
        h = BrokenInit.remote("no config")
        for ref in [h.ping.remote() for _ in range(4)]:
            with pytest.raises(memlab.ActorDiedError) as info:
                memlab.get(ref, timeout=DEADLINE)
            message = str(info.value)
            assert "constructor" in message and "cannot start: no config" in message, message
            assert "BrokenInit" in message, message
    aid = actor_id(h)
    wait_for(
        lambda: (actor_record(aid) or {}).get("state") == "dead",
        DEADLINE,
        message="the failed actor dead in memlab.state.actors()",
    )
    died = [e for e in actor_events(aid, since) if e["kind"] == "actor.died"]
    assert len(died) == 1 and "cannot start: no config" in died[0]["reason"], died


def test_bad_input_errors_at_the_call_site_and_loses_nothing(rt: Any, tmp_path: Path) -> None:
    h = Counter.remote(1)
    gate = tmp_path / "gate"
    in_flight = h.wait_gate.remote(str(gate))
    others = [square.remote(i) for i in range(6)]

    for bad in (-2, -100, 1.5, "3", True):
        with pytest.raises(ValueError, match=r"max_restarts must be an int >= 0, or -1"):
            Counter.options(max_restarts=bad)
        with pytest.raises(ValueError, match=r"max_task_retries must be an int >= 0, or -1"):
            Counter.options(max_task_retries=bad)
    with pytest.raises(ValueError, match="max_restarts"):

        @memlab.remote(max_restarts=-2)
        class Negative:
            pass

    for bad in (0, -1):
        with pytest.raises(ValueError, match="max_concurrency must be a positive int"):
            Counter.options(max_concurrency=bad)
    with pytest.raises(TypeError, match=r"unknown actor option\(s\) \['max_retries'\]"):
        Counter.options(max_retries=3)
    # Actor options on a function: the error names the option and says they are for classes.
    for option in ("max_restarts", "max_task_retries", "max_concurrency"):
        with pytest.raises(TypeError, match=f"{option}.*class"):
            memlab.remote(**{option: 1})(plain_function)
    with pytest.raises(AttributeError, match=r"no method 'nope'; its methods are \['add'"):
        h.nope.remote()
    with pytest.raises(TypeError, match=r"cannot be instantiated directly.*Counter\.remote"):
        Counter(1)
    with pytest.raises(TypeError, match=r"use handle\.add\.remote"):
        h.add(1)
    with pytest.raises(TypeError, match="takes an ActorHandle"):
        memlab.kill(square)  # type: ignore[arg-type]

    gate.touch()
    assert memlab.get(in_flight, timeout=DEADLINE) == 1
    assert memlab.get(others, timeout=DEADLINE) == [i * i for i in range(6)]
    assert memlab.get(h.add.remote(1), timeout=DEADLINE) == 2


def test_ref_arguments_are_resolved_before_the_method_runs(rt: Any) -> None:
    h = Counter.remote()
    big = memlab.put(np.arange(BIG, dtype=np.float64))  # in the store, read zero-copy
    want = float(np.arange(BIG, dtype=np.float64).sum())
    assert memlab.get(h.total.remote(big), timeout=DEADLINE) == want
    assert memlab.get(h.add.remote(square.remote(3)), timeout=DEADLINE) == 9
    assert memlab.get(h.add.remote(k=square.remote(2)), timeout=DEADLINE) == 13
