"""Actor crashes: the crash table (who calls the actor x how its worker dies) and owner death.

Every row kills a real actor worker from inside a method call (SIGKILL, ``os._exit(3)``, a
segfault) and checks, for three restart settings, that the call in flight fails with
``ActorDiedError`` or is resent to the restarted actor, that later calls reach the restarted
actor (its ``__init__`` ran again) or fail saying why it died, that tasks in flight beside the
crash complete, that ``memlab.state`` shows the restart or the death, and that no worker that
hosted an actor outlives it. The caller is the driver, or a task that creates the actor and
calls it (the task's worker is then the actor's owner).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import memlab
from memlab.testing import actor_id, crash_once, kill_worker, wait_for, wait_for_file
from tests.integration.actor_helpers import (
    actor_events,
    actor_record,
    gone,
    last_seq,
    name_is_free,
)
from tests.integration.helpers import DEATHS

pytestmark = pytest.mark.usefixtures("no_actor_survives")

DEADLINE = 10.0
START = 7  # what __init__ sets the actor's counter to


@memlab.remote
class Victim:
    def __init__(self, start: int) -> None:
        self.n = start

    def add(self, k: int) -> int:
        self.n += k
        return self.n

    def crash(self, how: str, marker: str | None) -> int:
        crash_once(marker, how)
        return self.n

    def whoami(self) -> tuple[int, int]:
        return self.n, os.getpid()

    def wait_gate(self, gate: str) -> int:
        wait_for_file(gate, DEADLINE)
        return self.n


@memlab.remote
def square(x: int) -> int:
    return x * x


@memlab.remote
def wait_then_square(gate: str, x: int) -> int:
    wait_for_file(gate, DEADLINE)
    return x * x


def _outcome(ref: memlab.ObjectRef) -> tuple[str, Any]:
    try:
        return "ok", memlab.get(ref, timeout=DEADLINE)
    except memlab.ActorDiedError as exc:
        return "died", str(exc)


def run_scenario(how: str, marker: str | None, max_restarts: int, retries: int) -> dict[str, Any]:
    """Create an actor, change its state, crash it in a call, then call it again (in the driver
    or in a task: the caller is the actor's owner)."""
    h = Victim.options(max_restarts=max_restarts, max_task_retries=retries).remote(START)
    before = memlab.get(h.add.remote(5), timeout=DEADLINE)
    _, pid = memlab.get(h.whoami.remote(), timeout=DEADLINE)
    crashed = _outcome(h.crash.remote(how, marker))
    later = _outcome(h.whoami.remote())  # sent once the crashing call has its answer
    return {
        "aid": actor_id(h),
        "before": before,
        "pid": pid,
        "crashed": crashed,
        "later": later,
    }


@memlab.remote
def nested_scenario(how: str, marker: str | None, max_restarts: int, retries: int) -> Any:
    return run_scenario(how, marker, max_restarts, retries)


@memlab.remote
def make_named_actor(name: str) -> int:
    """A task that creates a named actor (this worker owns it) and returns the worker's pid."""
    h = Victim.options(name=name).remote(0)
    memlab.get(h.add.remote(0), timeout=DEADLINE)
    return os.getpid()


@memlab.remote
def make_actor(start: int) -> tuple[memlab.ActorHandle, int]:
    """A task that creates an actor and returns its handle: this worker owns the actor."""
    h = Victim.remote(start)
    memlab.get(h.add.remote(0), timeout=DEADLINE)
    return h, os.getpid()


# ---------------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Scenario:
    """A restart setting and what the actor's callers must see under it."""

    name: str
    max_restarts: int
    max_task_retries: int
    only_first_attempt: bool  # the crashing call crashes only once (a marker file)
    crash_call_succeeds: bool  # resent to the restarted actor; else ActorDiedError
    restarts: int  # restarts the actor makes


SCENARIOS = (
    Scenario("no_restart", 0, 0, only_first_attempt=False, crash_call_succeeds=False, restarts=0),
    Scenario(
        "restart_no_retry", 1, 0, only_first_attempt=False, crash_call_succeeds=False, restarts=1
    ),
    Scenario(
        "restart_retry_once", 1, 1, only_first_attempt=True, crash_call_succeeds=True, restarts=1
    ),
)

CRASH_TABLE = [
    pytest.param(caller, how, id=f"{caller}-{how}")
    for caller in ("driver", "task")
    for how in ("sigkill", "exit", "segfault")
]


# ------------------------------------------------------------------------------------ helpers


def _worker_id(pid: int) -> str:
    return next(w["worker_id"] for w in memlab.state.workers() if w["pid"] == pid)


# ------------------------------------------------------------------------------- crash table


@pytest.mark.parametrize(("caller", "how"), CRASH_TABLE)
def test_actor_worker_dies_in_a_call(rt: Any, tmp_path: Path, caller: str, how: str) -> None:
    death = DEATHS[how]
    for sc in SCENARIOS:
        name = f"{caller}-{how}-{sc.name}"
        since = last_seq()
        marker = str(tmp_path / f"{name}.marker") if sc.only_first_attempt else None
        others = [square.remote(i) for i in range(6)]
        args = (how, marker, sc.max_restarts, sc.max_task_retries)
        if caller == "driver":
            out = run_scenario(*args)
        else:
            out = memlab.get(nested_scenario.options(max_retries=0).remote(*args), timeout=30)
        assert out["before"] == START + 5, (name, out)

        # The call in flight when the worker died.
        kind, value = out["crashed"]
        if sc.crash_call_succeeds:
            assert (kind, value) == ("ok", START), (name, out)  # ran on a fresh instance
        else:
            assert kind == "died", (name, out)
            assert "Victim" in value and "died" in value, value
            if sc.max_restarts > 0:
                assert "while the call ran" in value and "max_task_retries" in value, value

        # A call made after it: on the restarted actor (state reset by __init__), or failing
        # with the reason it died.
        kind, value = out["later"]
        if sc.restarts:
            assert kind == "ok", (name, out)
            n, pid = value
            assert n == START and pid != out["pid"], (name, out)
            assert gone(out["pid"]), (name, out)
        else:
            assert kind == "died", (name, out)
            assert "max_restarts=0 is spent" in value, value
            assert death.says in value, value  # says why it died

        assert memlab.get(others, timeout=DEADLINE) == [i * i for i in range(6)], name

        # The state model and the events show the restart or the death.
        aid = out["aid"]
        want = "actor.restarted" if sc.restarts else "actor.died"
        wait_for(
            lambda aid=aid, since=since, want=want: any(
                e["kind"] == want for e in actor_events(aid, since)
            ),
            DEADLINE,
            message=f"{name}: {want} event",
        )
        events = actor_events(aid, since)
        restarted = [e for e in events if e["kind"] == "actor.restarted"]
        assert len(restarted) == sc.restarts, (name, events)
        if not sc.restarts:
            (died,) = [e for e in events if e["kind"] == "actor.died"]
            assert "max_restarts=0 is spent" in died["reason"], died
        # Every handle is gone once the scenario returns: the actor ends dead, restarts counted.
        wait_for(
            lambda aid=aid: (actor_record(aid) or {}).get("state") == "dead",
            DEADLINE,
            message=f"{name}: actor dead in memlab.state.actors()",
        )
        record = actor_record(aid)
        assert record is not None and record["restarts"] == sc.restarts, (name, record)


def test_restart_retries_every_call_in_flight_in_order(rt: Any, tmp_path: Path) -> None:
    """Calls queued behind the crashing one are resent too, in their submission order."""
    h = Victim.options(max_restarts=1, max_task_retries=1).remote(START)
    assert memlab.get(h.add.remote(1), timeout=DEADLINE) == START + 1
    crashed = h.crash.remote("sigkill", str(tmp_path / "marker"))
    behind = [h.add.remote(1) for _ in range(5)]
    assert memlab.get(crashed, timeout=DEADLINE) == START
    assert memlab.get(behind, timeout=DEADLINE) == [START + i for i in range(1, 6)]


# ------------------------------------------------------------------------------- owner death


def test_actor_fate_shares_with_its_owner(rt: Any, tmp_path: Path) -> None:
    h, owner_pid = memlab.get(make_actor.remote(START), timeout=DEADLINE)
    n, actor_pid = memlab.get(h.whoami.remote(), timeout=DEADLINE)
    assert n == START and actor_pid != owner_pid
    gate = tmp_path / "gate"
    in_flight = h.wait_gate.remote(str(gate))
    others = [wait_then_square.remote(str(gate), i) for i in range(4)]
    owner = _worker_id(owner_pid)

    kill_worker(owner)
    with pytest.raises(memlab.ActorDiedError) as info:
        memlab.get(in_flight, timeout=DEADLINE)
    assert "Victim" in str(info.value), str(info.value)
    with pytest.raises(memlab.ActorDiedError, match=f"owner {owner} died"):
        memlab.get(h.add.remote(1), timeout=DEADLINE)
    wait_for(lambda: gone(actor_pid), DEADLINE, message="the actor's worker killed with its owner")
    wait_for(lambda: gone(owner_pid), DEADLINE, message="the owner's worker gone")

    gate.touch()  # tasks in flight beside the owner's death complete (retried if they were there)
    assert memlab.get(others, timeout=DEADLINE) == [i * i for i in range(4)]
    # A handle to the dead actor still refuses calls, with the same reason.
    with pytest.raises(memlab.ActorDiedError, match="owner"):
        memlab.get(h.whoami.remote(), timeout=DEADLINE)


def test_an_actor_name_is_freed_when_its_owner_dies(rt: Any) -> None:
    owner_pid = memlab.get(make_named_actor.remote("owned-by-a-worker"), timeout=DEADLINE)
    assert memlab.get_actor("owned-by-a-worker") is not None
    kill_worker(_worker_id(owner_pid))
    wait_for(
        lambda: name_is_free("owned-by-a-worker"),
        DEADLINE,
        message="the dead owner's actor name released",
    )
    h = Victim.options(name="owned-by-a-worker").remote(7)
    assert memlab.get(h.add.remote(1), timeout=DEADLINE) == 8
    memlab.kill(h)
