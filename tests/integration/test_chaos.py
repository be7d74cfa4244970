"""Chaos: a mixed workload keeps giving right answers while workers and nodes die at random.

A background thread runs ``memlab.testing.chaos`` (SIGKILL of random workers and of whole
non-head nodes, each dead node replaced by a new one) for about 20 s. Meanwhile the driver runs
rounds of a mixed workload: plain tasks, tasks that submit and get nested tasks, tasks whose
arguments are lists of refs (refs in containers), large numpy values that live in shared memory
(and spill, as the stores are small), chains of tasks each reading the previous large result,
and calls to an actor that restarts without limit.

Every ``get`` must return the right value or raise one of the documented errors (see
``DOCUMENTED``). A wrong value, an undocumented error or a ``get`` that times out fails the
test at once. After the chaos the runtime still works, and after the last ref is dropped and the
runtime shut down nothing is left: no process, no /dev/shm arena, no spill file.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

import memlab
import memlab.state
import memlab.testing
from memlab.exceptions import (
    ActorDiedError,
    GetTimeoutError,
    ObjectLostError,
    WorkerCrashedError,
)
from memlab.testing import ChaosReport, chaos, store_object, wait_for

SEED = int(os.environ.get("MEMLAB_CHAOS_SEED", "20240611"))
CHAOS_SECONDS = 22.0
KILL_RATE = 1.0  # kills a second, on average
NUM_NODES = 3
NUM_WORKERS = 6
# Small stores (24 MiB a node) so the large values below also spill and are restored; not so
# small that objects pinned by tasks reading them could fill a store on their own.
STORE = NUM_NODES * (24 << 20)
GET_TIMEOUT = 45.0  # a get that takes this long is a hang: a hard failure
NESTED_TIMEOUT = 30.0  # gets inside tasks time out first, so the driver sees the TaskError

PLAIN = 120  # plain tasks a round
NESTED = 4  # tasks a round that fan out to FANOUT nested tasks each
FANOUT = 4
CONTAINERS = 4  # tasks a round whose argument is a list of CONTAINED refs
CONTAINED = 6
BIG_SIZES = (256 << 10, 512 << 10, 1 << 20, 2 << 20)  # bytes: all above the inline threshold
CHAIN = 4
ACTOR_CALLS = 12
HOLD = 6  # rounds whose large results stay referenced and are read again
MIN_CORRECT = 0.9
# plain, nested with children, containers, bigs and their readers, chain, big container,
# nested big (and its child), actor calls
TASKS_PER_ROUND = (
    PLAIN
    + NESTED * (1 + FANOUT)
    + CONTAINERS
    + 2 * len(BIG_SIZES)
    + CHAIN
    + 1
    + 2
    + 2 * ACTOR_CALLS
    + 1
)
MIN_TASKS = 2000  # tasks the whole run must submit, nested ones included

# The errors a get may raise under chaos: the worker died on every allowed attempt, the object
# (or its owner) is gone and cannot be rebuilt, or the actor could not be restarted. A nested
# get that raised one of them reaches the driver as a TaskError that is also an instance of it.
DOCUMENTED = (WorkerCrashedError, ObjectLostError, ActorDiedError)

RETRY = {"max_retries": -1}
# Event kinds (after the dot) the summary counts.
RECOVERY = {"died", "retried", "lost", "reconstructed", "spilled", "restored", "restarted"}

# ------------------------------------------------------------------------------ remote functions


def _big(value: float, nbytes: int) -> np.ndarray:
    return np.full(nbytes // 8, value, dtype=np.float64)


@memlab.remote(**RETRY)
def square(i: int) -> int:
    return i * i


@memlab.remote(**RETRY)
def fan_out(i: int, k: int) -> int:
    """Submit ``k`` nested tasks (owned by this worker), then get them."""
    refs = [square.remote(i + j) for j in range(k)]
    return sum(memlab.get(refs, timeout=NESTED_TIMEOUT))


@memlab.remote(**RETRY)
def sum_refs(refs: list[memlab.ObjectRef]) -> int:
    """The refs arrive inside a list, so they are borrowed, not resolved: get them here."""
    return sum(memlab.get(refs, timeout=NESTED_TIMEOUT))


@memlab.remote(**RETRY)
def make_big(value: float, nbytes: int) -> np.ndarray:
    return _big(value, nbytes)


@memlab.remote(**RETRY)
def inc_big(a: np.ndarray) -> np.ndarray:
    return a + 1


@memlab.remote(**RETRY)
def describe(a: np.ndarray) -> tuple[float, float, int]:
    return float(a.min()), float(a.max()), a.size


@memlab.remote(**RETRY)
def sum_big_refs(refs: list[memlab.ObjectRef]) -> float:
    """Large values borrowed through a container: read zero-copy from shared memory."""
    return float(sum(float(a[0]) * a.size for a in memlab.get(refs, timeout=NESTED_TIMEOUT)))


@memlab.remote(**RETRY)
def nested_big(value: float, nbytes: int) -> tuple[float, float, int]:
    """A worker-owned large value made by a nested task, read back by its owner."""
    a = memlab.get(make_big.remote(value, nbytes), timeout=NESTED_TIMEOUT)
    return float(a.min()), float(a.max()), a.size


@memlab.remote
class Calculator:
    """State-independent methods, so answers stay checkable across restarts (which lose state)."""

    def echo(self, x: Any) -> Any:
        return x

    def affine(self, x: int) -> int:
        return 3 * x + 1

    def summarize(self, a: np.ndarray) -> tuple[float, float, int]:
        return float(a.min()), float(a.max()), a.size


# ------------------------------------------------------------------------------ bookkeeping


@dataclass
class Outcomes:
    """What every checked get returned, by workload kind."""

    correct: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    messages: dict[str, str] = field(default_factory=dict)  # the first error of each kind
    submitted: int = 0

    @property
    def total(self) -> int:
        return sum(self.correct.values()) + sum(self.errors.values())

    def summary(self) -> str:
        return (
            f"{sum(self.correct.values())}/{self.total} correct, "
            f"{self.submitted} tasks submitted; correct by kind {dict(self.correct)}; "
            f"documented errors {dict(self.errors)}; first messages {self.messages}"
        )


def check(
    outcomes: Outcomes,
    kind: str,
    ref: memlab.ObjectRef,
    expected: Any,
    same: Callable[[Any, Any], bool] | None = None,
) -> None:
    """Get ``ref`` and record the outcome; fail at once on a wrong value, hang or odd error."""
    try:
        value = memlab.get(ref, timeout=GET_TIMEOUT)
    except GetTimeoutError as exc:  # also a TaskError wrapping a nested get's timeout
        core = memlab.api._core("debug")
        sub = core.submitter
        with core.lock:
            dbg = {
                "tasks": [
                    (
                        s.name,
                        s.worker,
                        s.attempt,
                        s.remaining,
                        [
                            (d.hex()[:8], sl.state if sl else None, sl.node if sl else None)
                            for (d, _), sl in zip(s.deps, s.resolved or [None] * len(s.deps))
                        ],
                    )
                    for s in list(sub.tasks.values())[:8]
                ],
                "queue": len(sub.queue),
                "leases": {w: (lease.node, len(lease.inflight)) for w, lease in sub.leases.items()},
                "req": sub.lease_requests,
                "by_node": dict(sub.requests_by_node),
                "max": sub.max_leases,
                "nodes": core.nodes,
            }
        raise AssertionError(f"{kind}: get hung ({exc}); {outcomes.summary()} DEBUG {dbg}") from exc
    except DOCUMENTED as exc:
        key = f"{kind}:{type(exc).__name__}"
        outcomes.errors[key] += 1
        outcomes.messages.setdefault(key, str(exc)[:300])
        return
    except Exception as exc:
        raise AssertionError(f"{kind}: undocumented error {exc!r}; {outcomes.summary()}") from exc
    ok = same(value, expected) if same is not None else value == expected
    assert ok, f"{kind}: WRONG value {value!r}, expected {expected!r}; {outcomes.summary()}"
    outcomes.correct[kind] += 1


def same_array(value: Any, expected: tuple[float, int]) -> bool:
    fill, size = expected
    return isinstance(value, np.ndarray) and value.size == size and bool((value == fill).all())


Held = list[tuple[memlab.ObjectRef, tuple[float, int]]]


def run_round(r: int, actor: Any, outcomes: Outcomes, held: Held, puts: Held) -> None:
    """One round of every workload kind; every result is checked.

    ``held`` keeps the large results of the last ``HOLD`` rounds. They are read again each
    round, so a copy lost on a node killed since has to be rebuilt from its lineage (a chain's
    freed intermediates recursively), and holding them fills the small stores until they spill.
    ``puts`` are driver-owned values on the head node (never killed), read back every round.
    """
    for ref, want in held:
        check(outcomes, "big-held", ref, want, same_array)
    for ref, want in puts:
        check(outcomes, "put", ref, want, same_array)
    base = r * 1000
    plain = [square.remote(base + i) for i in range(PLAIN)]
    nested = [fan_out.remote(base + i, FANOUT) for i in range(NESTED)]
    groups = [plain[c * CONTAINED : (c + 1) * CONTAINED] for c in range(CONTAINERS)]
    contained = [sum_refs.remote(g) for g in groups]
    nbytes = [BIG_SIZES[(r + k) % len(BIG_SIZES)] for k in range(len(BIG_SIZES))]
    bigs = [make_big.remote(float(base + k), n) for k, n in enumerate(nbytes)]
    described = [describe.remote(b) for b in bigs]
    chain = bigs[0]
    for _ in range(CHAIN):
        chain = inc_big.remote(chain)
    big_container = sum_big_refs.remote(bigs)
    owned_big = nested_big.remote(float(r), nbytes[1])
    echoes = [actor.echo.remote(base + i) for i in range(ACTOR_CALLS)]
    affines = [actor.affine.remote(base + i) for i in range(ACTOR_CALLS)]
    actor_big = actor.summarize.remote(bigs[-1])
    outcomes.submitted += TASKS_PER_ROUND

    for i, ref in enumerate(plain):
        check(outcomes, "plain", ref, (base + i) ** 2)
    for i, ref in enumerate(nested):
        check(outcomes, "nested", ref, sum((base + i + j) ** 2 for j in range(FANOUT)))
    for c, ref in enumerate(contained):
        want = sum((base + i) ** 2 for i in range(c * CONTAINED, (c + 1) * CONTAINED))
        check(outcomes, "refs-in-list", ref, want)
    for k, ref in enumerate(bigs):
        check(outcomes, "big", ref, (float(base + k), nbytes[k] // 8), same_array)
    for k, ref in enumerate(described):
        v = float(base + k)
        check(outcomes, "big-arg", ref, (v, v, nbytes[k] // 8))
    check(outcomes, "big-chain", chain, (float(base + CHAIN), nbytes[0] // 8), same_array)
    want = float(sum((base + k) * (n // 8) for k, n in enumerate(nbytes)))
    check(outcomes, "big-refs-in-list", big_container, want)
    check(outcomes, "nested-big", owned_big, (float(r), float(r), nbytes[1] // 8))
    for i, ref in enumerate(echoes):
        check(outcomes, "actor", ref, base + i)
    for i, ref in enumerate(affines):
        check(outcomes, "actor", ref, 3 * (base + i) + 1)
    last = float(base + len(bigs) - 1)
    check(outcomes, "actor-big", actor_big, (last, last, nbytes[-1] // 8))
    held += [(ref, (float(base + k), n // 8)) for k, (ref, n) in enumerate(zip(bigs, nbytes))]
    held.append((chain, (float(base + CHAIN), nbytes[0] // 8)))
    del held[: -HOLD * (len(bigs) + 1)]


def spill_files(session_dir: str) -> list[str]:
    found = []
    for entry in os.listdir(session_dir):
        if entry.startswith("spill-"):
            path = os.path.join(session_dir, entry)
            found += [os.path.join(path, f) for f in os.listdir(path)]
    return found


# -------------------------------------------------------------------------------------- test


@pytest.mark.slow
def test_mixed_workload_survives_random_kills(fresh_runtime: Any) -> None:
    runtime = fresh_runtime(num_nodes=NUM_NODES, num_workers=NUM_WORKERS, object_store_memory=STORE)
    actor = Calculator.options(max_restarts=-1, max_task_retries=-1).remote()
    assert memlab.get(actor.echo.remote("ready"), timeout=GET_TIMEOUT) == "ready"

    stop = threading.Event()
    done: list[ChaosReport | BaseException] = []

    def killer() -> None:
        try:
            done.append(
                chaos(
                    duration=CHAOS_SECONDS,
                    rate=KILL_RATE,
                    kinds=("worker", "node"),
                    seed=SEED,
                    stop=stop,
                )
            )
        except BaseException as exc:  # handed to the main thread, which fails the test
            done.append(exc)

    thread = threading.Thread(target=killer, name="chaos-killer", daemon=True)
    outcomes = Outcomes()
    held: Held = []
    puts: Held = [(memlab.put(_big(-k, n)), (-k, n // 8)) for k, n in enumerate(BIG_SIZES)]
    events: Counter[str] = Counter()
    unsubscribe = memlab.state.subscribe(lambda batch: events.update(e["kind"] for e in batch))
    rounds = 0
    thread.start()
    try:
        while not done:
            run_round(rounds, actor, outcomes, held, puts)
            rounds += 1
    finally:
        stop.set()
        thread.join(30)
        unsubscribe()
    assert not thread.is_alive(), "the chaos thread did not stop within 30 s"
    report = done[0]
    if isinstance(report, BaseException):
        raise report
    kills = len(report.workers_killed) + len(report.nodes_killed)
    print(
        f"\nchaos seed {SEED}: {rounds} rounds under {len(report.workers_killed)} worker "
        f"kills and {len(report.nodes_killed)} node kills (nodes added "
        f"{report.nodes_added}); {outcomes.summary()}; events "
        f"{ {k: v for k, v in sorted(events.items()) if k.split('.')[1] in RECOVERY} }"
    )

    assert kills >= CHAOS_SECONDS * KILL_RATE / 3, f"chaos killed too little: {report}"
    assert report.nodes_killed, f"chaos killed no node: {report}"
    assert outcomes.submitted >= MIN_TASKS, f"too little work ran: {outcomes.summary()}"
    correct = sum(outcomes.correct.values())
    assert correct >= MIN_CORRECT * outcomes.total, (
        f"fewer than {MIN_CORRECT:.0%} of results were correct: {outcomes.summary()}"
    )

    # After the chaos the runtime works: a fresh round is right in every result.
    after = Outcomes()
    run_round(rounds, actor, after, held, puts)
    assert not after.errors, f"errors after the chaos ended: {after.summary()}"

    # Dropping the last refs frees every spilled copy; a dead node's spill files are its lost
    # disk, so they go with it, as its arena does.
    del actor, held, puts
    gc.collect()
    session_dir = runtime.session_dir
    try:
        wait_for(lambda: not spill_files(session_dir), 10, message="spill files removed")
    except AssertionError:
        files = spill_files(session_dir)
        left = Counter(os.path.basename(os.path.dirname(f)) for f in files)
        infos = []
        for f in files[:3]:
            node = os.path.basename(os.path.dirname(f))[len("spill-") :]
            oid = bytes.fromhex(os.path.basename(f))
            with contextlib.suppress(Exception):
                infos.append(store_object(node, oid))
        raise AssertionError(
            f"spill files left after the last ref was dropped, by directory: "
            f"{dict(left)} (alive nodes: {memlab.testing.nodes_alive()}); what their node "
            f"knows of them: {infos}"
        ) from None
