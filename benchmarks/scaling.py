"""How memlab's cost grows with work: tasks at 1k/10k/100k, put and get from 1 MiB to 1 GiB,
owner memory per live object, and the price of the event stream (events on vs off)."""

from __future__ import annotations

import gc
import os
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np
import psutil
from backends import cpu_of_tree

import memlab

MiB = 1 << 20


def _noop() -> None:
    return None


def _async_rate(n: int) -> float:
    noop = memlab.remote(_noop)
    memlab.get([noop.remote() for _ in range(100)])
    t = time.perf_counter()
    memlab.get([noop.remote() for _ in range(n)])
    return n / (time.perf_counter() - t)


def owner_memory(live: int, events: bool) -> tuple[float, float]:
    """RSS growth per live ``put`` ref, in bytes, of the owner and of the collector process
    (run it in a fresh process).

    The owner's figure includes everything the driver keeps for them: the ref, the ownership
    entry and the in-process value. With events on, the state model's record and the (bounded)
    event log live in the collector process; its growth is the second figure (0 with events off).
    """
    memlab.init(num_workers=1, object_store_memory=64 * MiB, events=events)
    try:
        me = psutil.Process(os.getpid())
        collector = next(
            (p for p in me.children(recursive=True) if "collector_main" in " ".join(p.cmdline())),
            None,
        )

        def settle() -> None:
            if events:
                memlab.state.objects()  # ships and folds pending events: both sides settle
            gc.collect()

        memlab.get([memlab.put(i) for i in range(1000)])  # warm every code path and cache
        settle()
        before = me.memory_info().rss
        before_collector = collector.memory_info().rss if collector else 0
        refs = [memlab.put(i) for i in range(live)]
        settle()
        grown = me.memory_info().rss - before
        grown_collector = (collector.memory_info().rss - before_collector) if collector else 0
        del refs
        return grown / live, grown_collector / live
    finally:
        memlab.shutdown()


def _owner_memory_in_fresh_process(live: int, events: bool) -> tuple[float, float]:
    # A fresh interpreter: after the large puts above, freed heap would hide new allocations.
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import scaling; "
        "print(*scaling.owner_memory(int(sys.argv[2]), sys.argv[3] == 'on'))"
    )
    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run(
        [sys.executable, "-c", code, here, str(live), "on" if events else "off"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    owner, collector = out.stdout.strip().splitlines()[-1].split()
    return float(owner), float(collector)


def measure(quick: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    counts = (1000, 5000) if quick else (1000, 10_000, 100_000)
    sizes = (MiB, 8 * MiB) if quick else (MiB, 16 * MiB, 256 * MiB, 1024 * MiB)
    live = 10_000 if quick else 100_000
    memlab.init(num_workers=2, object_store_memory=(64 if quick else 2600) * MiB)
    try:
        out["tasks async (tasks/s)"] = {n: _async_rate(n) for n in counts}
        put_gbs, get_ms = {}, {}
        # Two rounds: the first faults the store's pages in (frees are asynchronous, so a put
        # right after a freed one lands in fresh pages); the second, reported, reuses them, as a
        # long-running session does. First-touch puts run at ~1-2 GB/s here (page faults).
        for _ in range(2):
            for size in sizes:
                arr = np.ones(size // 8)
                memlab.put(arr)
                t = time.perf_counter()
                ref = memlab.put(arr)
                put_gbs[size // MiB] = size / (time.perf_counter() - t) / 1e9
                t = time.perf_counter()
                view = memlab.get(ref)
                get_ms[size // MiB] = (time.perf_counter() - t) * 1e3
                del view, ref, arr
                gc.collect()
        out["put by MiB (GB/s)"] = put_gbs
        out["get by MiB (ms)"] = get_ms
    finally:
        memlab.shutdown()
    owner_on, collector_on = _owner_memory_in_fresh_process(live, events=True)
    owner_off, _ = _owner_memory_in_fresh_process(live, events=False)
    out["owner memory per live object (bytes)"] = {
        f"{live} events on": owner_on,
        f"{live} events off": owner_off,
        "collector process (events on)": collector_on,
    }
    out.update(event_cost(quick))
    return out


def event_cost(quick: bool) -> dict[str, Any]:
    """Throughput and CPU per task of async bursts with events off, on (nobody reading), and
    on while watched (a subscriber to the live stream, and an objects table read every second,
    as a dashboard does).

    Throughput swings by +-20% between runs on this VM, more than the effect measured, so the
    runs alternate, each setting keeps its best, and the CPU time every runtime process spent
    per task (steadier than wall time) is reported beside it. Only bursts after the first two of
    each runtime count, and enough of them that an unwatched collector's backlog reaches its
    bound and folds inside the window, as it does in a long session.
    """
    rates: dict[str, list[float]] = {}
    cpus: dict[str, list[float]] = {}
    n, bursts = (1000, 4) if quick else (5000, 8)
    for arm in ("on", "off", "watched") * (2 if quick else 3):
        memlab.init(num_workers=2, object_store_memory=64 * MiB, events=arm != "off")
        watcher = _Watcher() if arm == "watched" else None
        try:
            for burst in range(bursts):
                before = cpu_of_tree()
                rate = _async_rate(n)
                if burst >= 2:
                    rates.setdefault(arm, []).append(rate)
                    cpus.setdefault(arm, []).append((cpu_of_tree() - before) / (n + 100) * 1e6)
        finally:
            if watcher is not None:
                watcher.stop()
            memlab.shutdown()
    best = {arm: max(r) for arm, r in rates.items()}
    cpu = {arm: statistics.median(c) for arm, c in cpus.items()}
    return {
        "events on vs off (tasks/s)": {
            "on": best["on"],
            "off": best["off"],
            "cost %": (1 - best["on"] / best["off"]) * 100,
            "watched": best["watched"],
            "watched cost %": (1 - best["watched"] / best["off"]) * 100,
        },
        "events on vs off (CPU us/task)": {
            "on": cpu["on"],
            "off": cpu["off"],
            "cost %": (cpu["on"] / cpu["off"] - 1) * 100,
            "watched": cpu["watched"],
            "watched cost %": (cpu["watched"] / cpu["off"] - 1) * 100,
        },
    }


class _Watcher:
    """What a live dashboard asks of the runtime: the event stream (10 Hz) and a table read
    every second."""

    def __init__(self) -> None:
        self.events = 0
        self._unsubscribe = memlab.state.subscribe(self._count)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _count(self, events: list[dict[str, Any]]) -> None:
        self.events += len(events)

    def _poll(self) -> None:
        while not self._stop.wait(1.0):
            memlab.state.objects()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._unsubscribe()


def table(result: dict[str, Any]) -> str:
    lines = []
    for name, row in result.items():
        cells = ", ".join(
            f"{k}: {v:,.3g}" if isinstance(v, float) and abs(v) < 100 else f"{k}: {v:,.0f}"
            for k, v in row.items()
        )
        lines.append(f"{name:40s} {cells}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(measure(quick=False)))
