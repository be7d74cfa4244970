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
import statistics
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
    rows.append((f"holder scan, {n} names, 0 refs", _median(lambda: scan_shell(ip), args.repeat)
                 * 1e3, "ms"))
    refs = [memlab.put(i) for i in range(n)]
    for i in range(n // 2):
        ns[f"ref_{i}"] = refs[i]
    ns["ref_list"] = refs[n // 2:]
    scan = scan_shell(ip)
    assert len(scan.objects) == n and not scan.truncated, (len(scan.objects), scan.truncated)
    rows.append((f"holder scan, {n} names + {n} refs",
                 _median(lambda: scan_shell(ip), args.repeat) * 1e3, "ms"))
    magics = ip.magics_manager.registry["MemlabMagics"]

    def refs_magic() -> None:
        magics.holders.invalidate()
        ip.run_line_magic("memlab", "refs")

    rows.append((f"%memlab refs, {n} refs (state + scan + table)",
                 _median(_quiet(refs_magic), args.repeat) * 1e3, "ms"))
    del refs
    ns.pop("ref_list")
    for i in range(n // 2):
        ns.pop(f"ref_{i}")

    ip.run_cell("import memlab\n@memlab.remote\ndef trivial():\n    return 1", store_history=True)
    rows.append(("f.remote() round trip (get)", _median(
        lambda: memlab.get(ns["trivial"].remote()), args.repeat * 4) * 1e3, "ms"))
    rows.append(("%%remote --block round trip", _median(_quiet(
        lambda: ip.run_cell_magic("remote", "--block", "1")), args.repeat * 4) * 1e3, "ms"))

    _quiet(lambda: ip.run_line_magic("memlab", "stop"))()
    width = max(len(r[0]) for r in rows)
    for name, value, unit in rows:
        print(f"{name.ljust(width)}  {value:10.2f} {unit}")


if __name__ == "__main__":
    main()
