"""A promoted copy's life after its promotion: it is deleted whatever becomes of its object.

When a node dies, the owner makes a surviving secondary copy primary (``promotion``). That copy
was made by copying, so the node records no writer for it, and the owner learns of it only from
the promotion's answer. The chaos test once left such a copy behind, spilled on its node, after
the last ref was dropped. The interleaving::

    object O made on node-1 ── a reader on N pulls a copy to N ── node-1 dies
    owner: promotes N's copy (slot: node N, writer None; its table still says node-1)
    a read of O finds no copy where the slot says (in chaos: the reader's pulled copy was
        evicted between the pull and the read; here: the spill file is gone) ── O is "lost"
    owner: rebuilds O (the rebuild drops the old copy only if it has a writer: not this one)
        or fails it (no retries left: the slot is reset and the free goes to the table's
        location, the dead node-1)
    last ref dropped ── N's copy, spilled meanwhile, is nobody's: it stays for good

These tests force the "lost" verdict the way a node reaches it by itself: the promoted copy is
spilled (the driver's puts fill the head node's small store) and its spill file is removed, so
the node cannot restore it ("its spill file cannot be read back: this copy is gone").
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import memlab
import memlab.state
from memlab.exceptions import ObjectReconstructionFailedError
from memlab.testing import first_attempt, kill_node, store_object, wait_for
from memlab.testing.invariants import wait_session_empty

NODE_STORE = 16 << 20
BIG = (1 << 20) // 8  # float64 elements: 1 MiB, above the inline threshold
DEADLINE = 20.0


@memlab.remote
def big_once(marker: str, i: int) -> np.ndarray:
    """A 1 MiB value on the first run; a small one when re-run (so a rebuild writes nothing to
    any store, and only the old copy can be left there)."""
    time.sleep(0.05)  # a batch outlasts the lease grants, so it spans both nodes
    if first_attempt(marker):
        return np.full(BIG, i, dtype=np.float64)
    return np.full(4, i, dtype=np.float64)


@memlab.remote
def read(a: np.ndarray) -> str:
    time.sleep(0.05)
    return os.environ["MEMLAB_NODE"]


def primary(ref: memlab.ObjectRef) -> str | None:
    for rec in memlab.state.objects():
        if rec["object_id"] == ref.hex():
            return rec["locations"][0] if rec["locations"] else None
    return None


def promoted_on_node_0(rt: Any, tmp_path: Path, max_retries: int) -> memlab.ObjectRef:
    """A driver-owned 1 MiB object made on node-1 whose copy on node-0 was promoted when
    node-1 died."""
    fn = big_once.options(max_retries=max_retries)
    ref = None
    for attempt in range(10):
        refs = [fn.remote(str(tmp_path / f"m{attempt}-{i}"), i) for i in range(8)]
        memlab.wait(refs, num_returns=len(refs), timeout=DEADLINE)
        ref = next((r for r in refs if primary(r) == "node-1"), None)
        if ref is not None:
            break
    assert ref is not None, "no result landed on node-1 in 10 batches"
    del refs
    for _ in range(10):  # readers on node-0 pull a copy there
        if "node-0" in memlab.get([read.remote(ref) for _ in range(8)], timeout=DEADLINE):
            break
    else:
        raise AssertionError("no reader ran on node-0 in 10 batches")
    assert store_object("node-0", ref).get("primary") is False  # a secondary copy
    kill_node("node-1")
    wait_for(lambda r=ref: primary(r) == "node-0", DEADLINE, message="node-0's copy promoted")
    assert store_object("node-0", ref)["primary"] is True
    assert store_object("node-0", ref)["writer"] is None  # made by copying, as in the chaos leak
    return ref


def spill_and_lose_file(rt: Any, ref: memlab.ObjectRef) -> list[memlab.ObjectRef]:
    """Fill node-0's store with puts until the promoted copy spills; remove its spill file."""
    puts = []
    for k in range(3 * NODE_STORE // (BIG * 8)):
        puts.append(memlab.put(np.full(BIG, -k, dtype=np.float64)))
        if store_object("node-0", ref)["spilled"]:
            break
    else:
        raise AssertionError("the promoted copy never spilled")
    path = os.path.join(rt.session_dir, "spill-node-0", ref.hex())
    assert os.path.exists(path)
    os.unlink(path)  # the node's disk lost it: the copy cannot be restored
    return puts


def start(fresh_runtime: Any) -> Any:
    return fresh_runtime(num_nodes=2, num_workers=4, object_store_memory=2 * NODE_STORE)


def test_rebuilt_object_drops_its_promoted_copy(fresh_runtime: Any, tmp_path: Path) -> None:
    rt = start(fresh_runtime)
    ref = promoted_on_node_0(rt, tmp_path, max_retries=1)
    puts = spill_and_lose_file(rt, ref)

    value = memlab.get(ref, timeout=DEADLINE)  # lost, so re-run: the small value
    assert value.shape == (4,)
    wait_for(
        lambda r=ref: "size" not in store_object("node-0", r),
        DEADLINE,
        message="the promoted copy is deleted once the object is rebuilt",
    )
    del ref, value, puts
    wait_session_empty(timeout=DEADLINE)


def test_object_failed_after_promotion_frees_its_promoted_copy(
    fresh_runtime: Any, tmp_path: Path
) -> None:
    rt = start(fresh_runtime)
    ref = promoted_on_node_0(rt, tmp_path, max_retries=0)
    puts = spill_and_lose_file(rt, ref)

    with pytest.raises(ObjectReconstructionFailedError):
        memlab.get(ref, timeout=DEADLINE)  # lost, and no retry left to rebuild it
    del ref, puts
    wait_session_empty(timeout=DEADLINE)
