"""Randomized test of the reference-counting protocol over real processes.

A seeded generator builds a program that creates, passes, nests, returns, captures, stores and
drops refs across tasks and actors on two nodes, with a random delay at each handoff. At every
step, ``get`` of every ref the program still holds (a sample, when there are many) must return
its value, and ``validate()`` must hold in every process; once every ref is dropped, every
reference table and every store must be empty within a second.

A failure names its seed. Replay one with::

    MEMLAB_PROTOCOL_SEED=1234 pytest tests/integration/test_ref_protocol_random.py

``MEMLAB_PROTOCOL_STEPS`` sets the program length (default 60); ``MEMLAB_PROTOCOL_SEEDS=N``
runs N fresh random seeds instead of the fixed ones.
"""

from __future__ import annotations

import gc
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

import memlab
from memlab.testing.invariants import validate_session, wait_session_empty

BIG = 150_000  # elements of uint8: above the inline threshold, so it lives in a node's store
DEADLINE = 30.0
FIXED_SEEDS = [11, 2026, 90125]


def _seeds() -> list[int]:
    if "MEMLAB_PROTOCOL_SEED" in os.environ:
        return [int(os.environ["MEMLAB_PROTOCOL_SEED"])]
    if "MEMLAB_PROTOCOL_SEEDS" in os.environ:
        return [random.randrange(1 << 30) for _ in range(int(os.environ["MEMLAB_PROTOCOL_SEEDS"]))]
    return FIXED_SEEDS


def _pause(delay: float) -> None:
    if delay:
        time.sleep(delay)  # the handoff's random delay (part of the program, not a wait)


# -- the program's building blocks ---------------------------------------------------------------


@memlab.remote
def make(tag: int, big: bool, delay: float) -> Any:
    _pause(delay)
    return np.full(BIG, tag % 251, dtype=np.uint8) if big else tag


@memlab.remote
def echo(box: list[memlab.ObjectRef], delay: float) -> memlab.ObjectRef:
    _pause(delay)
    return box[0]  # a borrowed ref, returned


@memlab.remote
def wrap(box: list[memlab.ObjectRef], delay: float) -> dict[str, list[memlab.ObjectRef]]:
    _pause(delay)
    return {"refs": [box[0]]}  # nested in a returned container


@memlab.remote
def make_owned(tag: int, big: bool, depth: int, delay: float) -> memlab.ObjectRef:
    _pause(delay)
    if depth == 0:
        return make.remote(tag, big, delay)  # owned by this worker
    return make_owned.remote(tag, big, depth - 1, delay)


@memlab.remote
def forward(box: list[memlab.ObjectRef], delay: float) -> memlab.ObjectRef:
    return memlab.get(echo.remote(box, delay))  # a borrower's borrower hands it back


@memlab.remote
def read(box: list[memlab.ObjectRef], delay: float) -> Any:
    _pause(delay)
    return memlab.get(box[0])


@memlab.remote
class Keeper:
    def __init__(self) -> None:
        self.kept: dict[int, memlab.ObjectRef] = {}

    def keep(self, key: int, box: list[memlab.ObjectRef], delay: float) -> int:
        _pause(delay)
        self.kept[key] = box[0]
        return key

    def give(self, key: int) -> memlab.ObjectRef:
        return self.kept[key]

    def drop(self, key: int) -> None:
        self.kept.pop(key, None)


# -- expected values ----------------------------------------------------------------------------
# ("v", tag, big): the value itself; ("ref", e): a ref whose value is e; ("refs", [e]): a dict
# {"refs": [ref]} whose refs have values [e].


def _check(ref: memlab.ObjectRef, expected: tuple[Any, ...]) -> None:
    value = memlab.get(ref, timeout=DEADLINE)
    _check_value(value, expected)


def _check_value(value: Any, expected: tuple[Any, ...]) -> None:
    kind = expected[0]
    if kind == "v":
        _, tag, big = expected
        if big:
            assert isinstance(value, np.ndarray) and value.shape == (BIG,), type(value)
            assert int(value[0]) == tag % 251 and int(value[-1]) == tag % 251
        else:
            assert value == tag, (value, tag)
    elif kind == "ref":
        assert isinstance(value, memlab.ObjectRef), type(value)
        _check(value, expected[1])
    else:
        assert isinstance(value, dict) and len(value["refs"]) == len(expected[1])
        for inner, e in zip(value["refs"], expected[1]):
            _check(inner, e)


@dataclass
class Program:
    rng: random.Random
    held: dict[int, tuple[memlab.ObjectRef, tuple[Any, ...]]] = field(default_factory=dict)
    in_keeper: dict[int, tuple[Any, ...]] = field(default_factory=dict)
    keeper: Any = None
    next_key: int = 0
    handoffs: int = 0
    log: list[str] = field(default_factory=list)

    def delay(self) -> float:
        return self.rng.choice([0.0, 0.0, 0.001, 0.005, 0.02])

    def hold(self, ref: memlab.ObjectRef, expected: tuple[Any, ...]) -> None:
        self.next_key += 1
        self.held[self.next_key] = (ref, expected)

    def pick(self) -> tuple[int, memlab.ObjectRef, tuple[Any, ...]] | None:
        if not self.held:
            return None
        key = self.rng.choice(sorted(self.held))
        ref, expected = self.held[key]
        return key, ref, expected

    def step(self) -> None:
        rng = self.rng
        ops = [
            "put",
            "make",
            "owned",
            "echo",
            "wrap",
            "forward",
            "read",
            "capture",
            "nest_put",
            "keep",
            "give",
            "drop",
            "drop",
            "drop_keeper",
        ]
        op = rng.choice(ops)
        picked = self.pick()
        tag, big = rng.randrange(10_000), rng.random() < 0.4
        self.log.append(op)
        if op == "put" or picked is None:
            value = np.full(BIG, tag % 251, dtype=np.uint8) if big else tag
            self.hold(memlab.put(value), ("v", tag, big))
            return
        key, ref, expected = picked
        if op == "make":
            self.hold(make.remote(tag, big, self.delay()), ("v", tag, big))
        elif op == "owned":
            depth = rng.randrange(3)
            self.hold(
                make_owned.remote(tag, big, depth, self.delay()),
                _nest_refs(("v", tag, big), depth + 1),
            )
            self.handoffs += depth + 1
        elif op == "echo":
            self.hold(echo.remote([ref], self.delay()), ("ref", expected))
            self.handoffs += 2
        elif op == "wrap":
            self.hold(wrap.remote([ref], self.delay()), ("refs", [expected]))
            self.handoffs += 2
        elif op == "forward":
            self.hold(forward.remote([ref], self.delay()), ("ref", expected))
            self.handoffs += 4
        elif op == "read":  # the task's result is the ref's value (a ref stays a ref)
            self.hold(read.remote([ref], self.delay()), expected)
            self.handoffs += 1
        elif op == "capture":
            captured, delay = ref, self.delay()

            @memlab.remote
            def reads_captured() -> Any:
                _pause(delay)
                return memlab.get(captured)

            self.hold(reads_captured.remote(), expected)
            self.handoffs += 1
            del reads_captured, captured
        elif op == "nest_put":
            self.hold(memlab.put({"refs": [ref]}), ("refs", [expected]))
            self.handoffs += 1
        elif op == "keep":
            if self.keeper is None:
                self.keeper = Keeper.remote()
            memlab.get(self.keeper.keep.remote(key, [ref], self.delay()), timeout=DEADLINE)
            self.in_keeper[key] = expected
            self.handoffs += 1
        elif op == "give" and self.in_keeper:
            k = rng.choice(sorted(self.in_keeper))
            self.hold(memlab.get(self.keeper.give.remote(k), timeout=DEADLINE), self.in_keeper[k])
            self.handoffs += 1
        elif op == "drop_keeper" and self.in_keeper:
            k = rng.choice(sorted(self.in_keeper))
            memlab.get(self.keeper.drop.remote(k), timeout=DEADLINE)
            del self.in_keeper[k]
        elif op == "drop":
            del self.held[key]
        del ref, picked

    def check_sample(self, n: int) -> None:
        keys = sorted(self.held)
        for key in self.rng.sample(keys, min(n, len(keys))):
            ref, expected = self.held[key]
            _check(ref, expected)
        for key in sorted(self.in_keeper)[:2]:
            _check(memlab.get(self.keeper.give.remote(key), timeout=DEADLINE), self.in_keeper[key])


def _nest_refs(expected: tuple[Any, ...], depth: int) -> tuple[Any, ...]:
    for _ in range(depth):
        expected = ("ref", expected)
    return expected


@pytest.mark.slow
@pytest.mark.parametrize("seed", _seeds())
def test_random_ref_programs(fresh_runtime: Callable[..., Any], seed: int) -> None:
    steps = int(os.environ.get("MEMLAB_PROTOCOL_STEPS", "60"))
    print(f"protocol seed {seed}; replay with MEMLAB_PROTOCOL_SEED={seed}")
    fresh_runtime(num_workers=3, num_nodes=2, object_store_memory=128 << 20)
    program = Program(random.Random(seed))
    try:
        for i in range(steps):
            program.step()
            program.check_sample(3)
            if i % 10 == 9:
                validate_session()
        for key in sorted(program.held):
            _check(*program.held[key])
        validate_session()
        program.held.clear()
        program.in_keeper.clear()
        program.keeper = None
        gc.collect()
        wait_session_empty(timeout=1.0)
    except BaseException as exc:
        raise AssertionError(
            f"seed {seed} failed after ops {program.log[-8:]} (replay: "
            f"MEMLAB_PROTOCOL_SEED={seed}): {type(exc).__name__}: {exc}"
        ) from exc
    print(
        f"seed {seed}: {steps} steps, {program.handoffs} handoffs, all values right, "
        "session empty after the last drop"
    )
