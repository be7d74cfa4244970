"""Invariants 1-3 with real processes: no premature free, no leak, no reuse under a live view;
zero-copy reads; bounded capacity with spilling."""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pyarrow as pa
import pytest

import memlab
from memlab.testing import (
    arena_bounds,
    flush_releases,
    memory_store_size,
    store_stats,
    table_size,
    wait_for,
)

MiB = 1 << 20


def inside_arena(address: int) -> bool:
    lo, hi = arena_bounds()
    return lo <= address < hi


def test_del_frees_shared_memory_within_a_second(fresh_runtime: Callable[..., Any]) -> None:
    fresh_runtime()
    base = store_stats()["used"]
    ref = memlab.put(np.ones(8 * MiB // 8))
    assert store_stats()["used"] >= base + 8 * MiB
    del ref
    wait_for(lambda: store_stats()["used"] == base, 1.0, message="store bytes freed")
    assert table_size() == 0


def test_put_get_del_loop_keeps_store_flat(fresh_runtime: Callable[..., Any]) -> None:
    fresh_runtime()
    base = store_stats()["used"]
    for i in range(200):
        ref = memlab.put(np.full(MiB // 8, i, dtype=np.int64))
        assert int(memlab.get(ref)[0]) == i
        del ref
    gc.collect()
    wait_for(lambda: store_stats()["used"] == base, 2.0, message="store back to its base")
    assert table_size() == 0
    assert memory_store_size() == 0


def test_task_results_are_freed_too(fresh_runtime: Callable[..., Any]) -> None:
    fresh_runtime()

    @memlab.remote
    def make(i: int) -> np.ndarray:
        return np.full(MiB // 8, i, dtype=np.int64)

    base = store_stats()["used"]
    for i in range(30):
        assert int(memlab.get(make.remote(i))[-1]) == i
    wait_for(lambda: store_stats()["used"] == base, 2.0, message="task results freed")


def test_live_view_keeps_its_region(fresh_runtime: Callable[..., Any]) -> None:
    fresh_runtime(object_store_memory=64 * MiB)
    ref = memlab.put(np.full(20 * MiB // 8, 1.0))
    view = memlab.get(ref)
    del ref  # the object is freed, but the view still points into the arena
    wait_for(lambda: table_size() == 0, 1.0, message="ref released")
    others = [memlab.put(np.full(20 * MiB // 8, 2.0)) for _ in range(2)]
    assert float(view.min()) == float(view.max()) == 1.0, "region reused under a live view"
    address = view.__array_interface__["data"][0]
    del view
    gc.collect()
    wait_for(lambda: store_stats()["used"] <= 2 * 21 * MiB, 2.0, message="view's region freed")
    third = memlab.put(np.full(20 * MiB // 8, 3.0))
    assert inside_arena(address)
    assert float(memlab.get(third)[0]) == 3.0
    del others, third


def test_zero_copy_reads(fresh_runtime: Callable[..., Any]) -> None:
    fresh_runtime()
    structured = np.zeros(200_000, dtype=[("a", "i4"), ("b", "f8"), ("c", "S3")])
    structured["a"] = np.arange(200_000)
    table = pa.table({"x": np.arange(500_000), "y": np.random.rand(500_000)})
    import pandas as pd

    frame = pd.DataFrame({"x": np.arange(500_000, dtype=np.float64)})
    refs = [memlab.put(v) for v in (structured, table, frame)]
    got_struct, got_table, got_frame = memlab.get(refs)

    assert got_struct.dtype == structured.dtype and int(got_struct["a"][-1]) == 199_999
    assert not got_struct.flags.writeable
    assert inside_arena(got_struct.__array_interface__["data"][0])
    with pytest.raises(ValueError, match="read-only"):
        got_struct["a"][0] = 5

    assert got_table.equals(table)
    assert inside_arena(got_table.column("y").chunk(0).buffers()[1].address)

    column = got_frame["x"].to_numpy()
    assert inside_arena(column.__array_interface__["data"][0])
    assert float(column.sum()) == float(frame["x"].sum())


def test_large_get_does_not_grow_reader_rss(fresh_runtime: Callable[..., Any]) -> None:
    fresh_runtime(object_store_memory=1100 * MiB)

    @memlab.remote
    def make() -> np.ndarray:
        return np.ones(512 * MiB // 8)

    ref = make.remote()
    memlab.wait([ref], timeout=60)
    me = psutil.Process(os.getpid())
    before = me.memory_info().rss
    arr = memlab.get(ref)
    grown = me.memory_info().rss - before
    assert arr.nbytes == 512 * MiB
    assert grown < 16 * MiB, f"get grew RSS by {grown / MiB:.0f} MiB"
    assert inside_arena(arr.__array_interface__["data"][0])
    del arr, ref


def test_full_store_spills_and_restores(fresh_runtime: Callable[..., Any]) -> None:
    fresh_runtime(object_store_memory=64 * MiB)
    refs = [memlab.put(np.full(25 * MiB // 8, float(i))) for i in range(4)]  # 100 MiB > 64 MiB
    stats = store_stats()
    assert stats["spilled_bytes"] > 0
    for i, ref in enumerate(refs):
        value = memlab.get(ref)
        assert float(value[0]) == float(value[-1]) == float(i)
        del value  # let it be spilled again to make room for the next restore
        gc.collect()
        flush_releases()
    del refs, ref
    wait_for(
        lambda: store_stats()["used"] == 0 and store_stats()["spilled_bytes"] == 0,
        2.0,
        message="store and spill empty",
    )


def test_spilled_put_with_no_room_to_restore_waits_and_is_not_lost(
    fresh_runtime: Callable[..., Any],
) -> None:
    # A put has no lineage: had the runtime taken "no room to restore it" for "no copy", the
    # value would be gone for good (ObjectLostError on every later read).
    fresh_runtime(object_store_memory=64 * MiB)
    first = memlab.put(np.full(25 * MiB // 8, 7.0))
    others = [memlab.put(np.full(25 * MiB // 8, float(i))) for i in range(2)]  # spills `first`
    assert store_stats()["spilled_bytes"] > 0
    views = memlab.get(others)  # pinned: nothing else can be spilled to restore `first`

    with pytest.raises(memlab.ObjectStoreFullError, match="pinned"):
        memlab.get(first, timeout=1.0)  # waited for room until its timeout, then said why

    del views
    gc.collect()
    flush_releases()
    wait_for(lambda: store_stats()["num_pinned"] == 0, 2.0, message="pins released")
    value = memlab.get(first, timeout=30)
    assert float(value[0]) == float(value[-1]) == 7.0
    del value, first, others


def test_task_result_waits_for_room_held_by_pinned_views(
    fresh_runtime: Callable[..., Any], tmp_path: Path
) -> None:
    fresh_runtime(object_store_memory=64 * MiB)
    held = [memlab.put(np.full(25 * MiB // 8, float(i))) for i in range(2)]
    views = memlab.get(held)  # 50 of 64 MiB pinned: a 25 MiB result has no room yet
    started = tmp_path / "returning"

    @memlab.remote
    def big_result(marker: str) -> np.ndarray:
        value = np.full(25 * MiB // 8, 3.0)
        open(marker, "w").close()
        return value

    ref = big_result.remote(str(started))
    wait_for(started.exists, 30.0, message="the task is returning its result")
    del views  # the pins go while the result waits for room
    gc.collect()
    flush_releases()
    value = memlab.get(ref, timeout=30)
    assert float(value[0]) == float(value[-1]) == 3.0
    del value, ref, held


def test_store_full_error_names_sizes_and_fix(fresh_runtime: Callable[..., Any]) -> None:
    fresh_runtime(object_store_memory=64 * MiB)
    with pytest.raises(memlab.ObjectStoreFullError, match="object_store_memory") as info:
        memlab.put(np.ones(100 * MiB // 8))
    assert "MiB" in str(info.value)
    held = [memlab.put(np.ones(25 * MiB // 8)) for _ in range(2)]
    views = memlab.get(held)  # pinned: these cannot be spilled
    with pytest.raises(memlab.ObjectStoreFullError, match="pinned"):
        memlab.put(np.ones(25 * MiB // 8))
    assert float(views[0][0]) == 1.0
    del views
    gc.collect()
    flush_releases()
    wait_for(lambda: store_stats()["num_pinned"] == 0, 2.0, message="pins released")
    extra = memlab.put(np.ones(25 * MiB // 8))  # now the store can spill one of them
    assert float(memlab.get(extra)[0]) == 1.0
    del held, extra
