"""The notebook layer's costs: holder scans, ``%memlab refs``, ``%memlab start``, ``%%remote``.

Runs an in-process IPython shell with ``%load_ext memlab`` (no kernel needed) and prints one
row per figure; each is the median of ``--repeat`` runs after a warm-up.

    python benchmarks/notebook.py              # 10,000 names and 10,000 refs
    python benchmarks/notebook.py --quick      # small sizes (a smoke run)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import memlab


def _median(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _quiet(fn: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        with contextlib.redirect_stdout(io.StringIO()):
            return fn()

    return run


def _cpu_share(window: float) -> tuple[float, float]:
    """CPU seconds per second of this process, and of it with all its children, over
    ``window`` seconds."""
    import psutil

    me = psutil.Process()

    def totals() -> tuple[float, float]:
        own = sum(me.cpu_times()[:2])
        children = 0.0
        for child in me.children(recursive=True):
            try:
                children += sum(child.cpu_times()[:2])
            except psutil.NoSuchProcess:
                pass
        return own, own + children

    start, t0 = totals(), time.perf_counter()
    time.sleep(window)  # a measurement window, not a wait for a state
    end, t1 = totals(), time.perf_counter()
    return (end[0] - start[0]) / (t1 - t0), (end[1] - start[1]) / (t1 - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n = 500 if args.quick else 10_000

    from IPython.testing.globalipapp import start_ipython

    from memlab.jupyter.holders import scan_shell

    ip = start_ipython()
    ip.run_line_magic("load_ext", "memlab")
    rows: list[tuple[str, float, str]] = []

    start = time.perf_counter()
    memlab.init(num_workers=2, object_store_memory=256 << 20)
    rows.append(("memlab.init to ready", time.perf_counter() - start, "s"))
    memlab.shutdown()
    start = time.perf_counter()
    _quiet(lambda: ip.run_line_magic("memlab", "start --workers 2 --memory 256MB"))()
    rows.append(("%memlab start to ready", time.perf_counter() - start, "s"))

    # n plain names, then n refs: half by name, half inside one list
    ns = ip.user_ns
    for i in range(n):
        ns[f"value_{i}"] = i
    scan = scan_shell(ip)
    rows.append(
        (
            f"holder scan, {n} names, 0 refs",
            _median(lambda: scan_shell(ip), args.repeat) * 1e3,
            "ms",
        )
    )
    refs = [memlab.put(i) for i in range(n)]
    for i in range(n // 2):
        ns[f"ref_{i}"] = refs[i]
    ns["ref_list"] = refs[n // 2 :]
    scan = scan_shell(ip)
    assert len(scan.objects) == n and not scan.truncated, (len(scan.objects), scan.truncated)
    rows.append(
        (
            f"holder scan, {n} names + {n} refs",
            _median(lambda: scan_shell(ip), args.repeat) * 1e3,
            "ms",
        )
    )
    magics = ip.magics_manager.registry["MemlabMagics"]

    def refs_magic() -> None:
        magics.holders.invalidate()
        ip.run_line_magic("memlab", "refs")

    rows.append(
        (
            f"%memlab refs, {n} refs (state + scan + table)",
            _median(_quiet(refs_magic), args.repeat) * 1e3,
            "ms",
        )
    )
    del refs
    ns.pop("ref_list")
    for i in range(n // 2):
        ns.pop(f"ref_{i}")

    ip.run_cell("import memlab\n@memlab.remote\ndef trivial():\n    return 1", store_history=True)
    rows.append(
        (
            "f.remote() round trip (get)",
            _median(lambda: memlab.get(ns["trivial"].remote()), args.repeat * 4) * 1e3,
            "ms",
        )
    )
    rows.append(
        (
            "%%remote --block round trip",
            _median(_quiet(lambda: ip.run_cell_magic("remote", "--block", "1")), args.repeat * 4)
            * 1e3,
            "ms",
        )
    )

    # what a %%remote cell's live status line costs while it is in flight: CPU of the kernel
    # process (its watcher thread polls events and readiness) and of the whole session
    window = 1.0 if args.quick else 3.0
    idle_kernel, idle_session = _cpu_share(window)
    gate = tempfile.mktemp(prefix="memlab-bench-gate-")
    ns["gate"] = gate
    ip.run_cell(
        "from memlab.testing import wait_for_file\nwait_remote = memlab.remote(wait_for_file)",
        store_history=True,
    )
    plain = ns["wait_remote"].remote(gate, 600)
    task_kernel, task_session = _cpu_share(window)
    _quiet(lambda: ip.run_cell_magic("remote", "", "wait_for_file(gate, 600)"))()
    live_kernel, live_session = _cpu_share(window)
    with open(gate, "w") as f:
        f.write("go")
    rows.append(("kernel CPU, idle (% of one core)", 100 * idle_kernel, "%"))
    rows.append(("kernel CPU, a plain task in flight", 100 * task_kernel, "%"))
    rows.append(("kernel CPU, + a %%remote status line live", 100 * live_kernel, "%"))
    rows.append(("session CPU (all processes), idle", 100 * idle_session, "%"))
    rows.append(("session CPU, a plain task in flight", 100 * task_session, "%"))
    rows.append(("session CPU, + a %%remote status line live", 100 * live_session, "%"))
    memlab.get([ns["_remote"], plain])
    os.unlink(gate)

    _quiet(lambda: ip.run_line_magic("memlab", "stop"))()
    width = max(len(r[0]) for r in rows)
    for name, value, unit in rows:
        print(f"{name.ljust(width)}  {value:10.2f} {unit}")


if __name__ == "__main__":
    main()
