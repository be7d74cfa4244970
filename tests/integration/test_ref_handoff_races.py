"""Two handoffs at their edges: one ref arriving in two threads at once, and refs lent for a
result that then fails to serialize.

* Two threads of one process (an actor with ``max_concurrency=2``) unpickle the same ref, new
  to the process, at the same moment: the first registers the process as a borrower with the
  owner, the second finds the entry and goes on. The owner must count the process once, keep
  the object while either thread holds it, and free it when both let go.
* A task's executor lends the refs inside each return value to the caller (registers the
  caller with their owners) before replying. If a later return value cannot be serialized,
  the reply is an error and the caller never learns of those loans: the executor must take
  them back, or the owner keeps the object for good.
"""

from __future__ import annotations

import gc
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import memlab
from memlab.exceptions import SerializationError
from memlab.runtime import context
from memlab.testing import owner_entry, wait_for, wait_for_file
from memlab.testing.invariants import session_tables, wait_session_empty

DEADLINE = 30.0
BIG = 200_000  # bytes: above the inline threshold, so the value lives in a node's store
ROUNDS = 10


def _meet(folder: str, parties: int) -> str:
    """Unpickled in each thread: wait there until ``parties`` threads have arrived."""
    Path(folder, uuid.uuid4().hex).touch()
    deadline = time.monotonic() + DEADLINE
    while len(os.listdir(folder)) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(os.listdir(folder))} of {parties} threads met")
        time.sleep(0.0005)  # polling a folder: no cross-process event to block on
    return folder


class Meet:
    """A barrier in a pickled value: the values after it unpickle in every thread at once."""

    def __init__(self, folder: str, parties: int = 2) -> None:
        self.folder, self.parties = folder, parties

    def __reduce__(self) -> tuple[Any, tuple[str, int]]:
        return _meet, (self.folder, self.parties)


@memlab.remote(max_concurrency=2)
class Holder:
    def proc(self) -> str:
        core = context.current_core()
        assert core is not None
        return core.proc

    def hold(self, args: list[Any], gate: str) -> int:
        """``args`` is [barrier, ref]: the ref is unpickled in both threads at once."""
        refs = args[1:]
        wait_for_file(gate, DEADLINE)
        return int(memlab.get(refs[0], timeout=DEADLINE)[0])

    def get_twice(self, outer: list[memlab.ObjectRef], gate: str) -> int:
        """The value of ``outer[0]`` is [barrier, ref]: each thread's get unpickles it."""
        refs = memlab.get(outer[0], timeout=DEADLINE)[1:]
        wait_for_file(gate, DEADLINE)
        return int(memlab.get(refs[0], timeout=DEADLINE)[0])


def borrowers(ref: memlab.ObjectRef) -> dict[str, int] | None:
    """The owner's (the driver's) registrations of ``ref`` per borrower; None once freed."""
    entry = owner_entry(ref)
    return None if entry is None else entry.borrowers


@pytest.mark.parametrize("how", ["arguments", "get"])
def test_one_new_ref_unpickled_by_two_threads_at_once(
    fresh_runtime: Callable[..., Any], tmp_path: Path, how: str
) -> None:
    fresh_runtime(num_workers=2)
    holder = Holder.remote()
    worker = memlab.get(holder.proc.remote(), timeout=DEADLINE)
    for r in range(ROUNDS):
        folder = tmp_path / f"meet{r}"
        folder.mkdir()
        gates = [str(tmp_path / f"gate{r}-{k}") for k in range(2)]
        x = memlab.put(np.full(BIG, r, dtype=np.uint8))
        if how == "arguments":
            calls = [holder.hold.remote([Meet(str(folder)), x], g) for g in gates]
            outer = None
        else:
            outer = memlab.put([Meet(str(folder)), x])
            calls = [holder.get_twice.remote([outer], g) for g in gates]
        wait_for(lambda f=folder: len(os.listdir(f)) == 2, DEADLINE, message="both threads met")
        # Both threads now hold the ref; the process is one borrower, registered once.
        wait_for(
            lambda x=x: borrowers(x) == {worker: 1},
            DEADLINE,
            message=f"round {r}: the actor registered once as a borrower",
        )
        del x, outer
        gc.collect()
        Path(gates[0]).touch()
        assert memlab.get(calls[0], timeout=DEADLINE) == r
        # One thread let go; the other still holds it, so the owner keeps it.
        Path(gates[1]).touch()
        assert memlab.get(calls[1], timeout=DEADLINE) == r
        del calls
    del holder
    gc.collect()
    wait_session_empty(timeout=DEADLINE)


@memlab.remote
class Owner:
    def proc(self) -> str:
        core = context.current_core()
        assert core is not None
        return core.proc

    def make(self) -> list[memlab.ObjectRef]:
        return [memlab.put(np.full(BIG, 7, dtype=np.uint8))]


@memlab.remote(num_returns=2)
def lend_then_fail(refs: list[memlab.ObjectRef]) -> tuple[list[memlab.ObjectRef], Any]:
    """The first return value holds a ref owned by a third process; the second does not pickle."""
    return [refs[0]], threading.Lock()


def test_refs_lent_for_a_result_that_fails_to_serialize_are_taken_back(
    fresh_runtime: Callable[..., Any],
) -> None:
    fresh_runtime(num_workers=2)
    owner = Owner.remote()
    worker = memlab.get(owner.proc.remote(), timeout=DEADLINE)
    inner = memlab.get(owner.make.remote(), timeout=DEADLINE)  # the driver borrows it
    first, second = lend_then_fail.remote(inner)
    for ref in (first, second):
        with pytest.raises(SerializationError, match=r"_thread\.lock"):
            memlab.get(ref, timeout=DEADLINE)
    assert int(memlab.get(inner[0], timeout=DEADLINE)[0]) == 7
    del inner, first, second, ref
    gc.collect()
    wait_for(
        lambda: session_tables().get(worker) == 0,
        DEADLINE,
        message="the owner's table is empty once the driver let go",
    )
    del owner
    gc.collect()
    wait_session_empty(timeout=DEADLINE)
