"""``make bench``: every workload on every installed backend, side by side, in one run.

Backends alternate within each repetition (A B A B …) so drift on this shared machine hits
all of them alike; each figure is the median of the repetitions after a warm-up. Prints a table
(workload x backend) with memlab's ratio to each peer ("better" is normalised so > 1 means
memlab wins), writes ``benchmarks/results/latest.json`` and, with matplotlib, a PNG chart.

    python benchmarks/run.py              # full run, all installed backends
    python benchmarks/run.py --quick      # small sizes, memlab only (the test suite runs this)
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import statistics
import sys
import time
from multiprocessing import Pipe, Process
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backends import MiB, available
from dashboard import line as dashboard_line
from dashboard import measure as measure_dashboard
from recovery import measure as measure_recovery
from scaling import measure as measure_scaling
from scaling import table as scaling_table

# name -> (unit, higher_is_better, full size, quick size)
WORKLOADS: dict[str, tuple[str, bool, int, int]] = {
    "tasks sync": ("tasks/s", True, 1000, 50),
    "tasks async": ("tasks/s", True, 2000, 100),
    "put calls": ("calls/s", True, 5000, 200),
    "get calls": ("calls/s", True, 20000, 500),
    "put gigabytes": ("GB/s", True, 512 * MiB, 8 * MiB),
    "get large": ("ms", False, 512 * MiB, 8 * MiB),
    "pass large arg": ("ms", False, 256 * MiB, 8 * MiB),
    "chain 100": ("ms", False, 100, 100),
    "actor calls sync": ("calls/s", True, 1000, 50),
    "actor calls async": ("calls/s", True, 2000, 100),
}


def memcpy_floor(nbytes: int) -> float:
    src = np.ones(nbytes // 8)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best = min(_timed(lambda: np.copyto(dst, src)) for _ in range(3))
    return nbytes / best / 1e9


def sum_floor(nbytes: int) -> float:
    arr = np.ones(nbytes // 8)
    arr.sum()
    return min(_timed(arr.sum) for _ in range(3)) * 1e3


def shm_sum_floor(nbytes: int) -> float:
    """The sum over shared memory, as a task reads a store value: shmem pages, which this
    kernel may not back with huge pages as it does a private numpy array (see the note in
    ``table``)."""
    buf = mmap.mmap(-1, nbytes)  # anonymous and shared: shmem, like the store's arena
    arr = np.frombuffer(buf, dtype=np.float64)
    arr[:] = 1.0
    arr.sum()
    took = min(_timed(arr.sum) for _ in range(3)) * 1e3
    del arr
    buf.close()
    return took


def _echo(conn: Any) -> None:
    while (msg := conn.recv()) is not None:
        conn.send(msg)


def pipe_round_trip(n: int = 2000) -> float:
    a, b = Pipe()
    p = Process(target=_echo, args=(b,))
    p.start()
    a.send(0)
    a.recv()
    t = time.perf_counter()
    for i in range(n):
        a.send(i)
        a.recv()
    took = (time.perf_counter() - t) / n * 1e6
    a.send(None)
    p.join()
    return took


def _timed(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def run(
    backend_names: list[str], reps: int, quick: bool, baseline: str | None = None
) -> dict[str, Any]:
    backends = [make() for make in available(backend_names)]
    if baseline is not None:
        from baseline import Baseline

        backends.insert(1 if "memlab" in backend_names else 0, Baseline(baseline))
    results: dict[str, dict[str, list[float]]] = {}

    def record(workload: str, name: str, value: float) -> None:
        results.setdefault(workload, {}).setdefault(name, []).append(value)

    # One backend runs at a time (no idle runtime steals the other's cores); backends alternate
    # within each repetition so slow drift of the machine hits them alike.
    floor_runs: dict[str, list[float]] = {}
    big = 8 * MiB if quick else 512 * MiB
    summed = 8 * MiB if quick else 256 * MiB
    for _ in range(reps):
        # Floors are measured in every repetition, beside the workloads they bound, so that a
        # drifting machine moves both alike; their medians are reported.
        floor_runs.setdefault("memcpy", []).append(memcpy_floor(big))
        floor_runs.setdefault("sum", []).append(sum_floor(summed))
        floor_runs.setdefault("sum shm", []).append(shm_sum_floor(summed))
        for b in backends:
            record("startup", b.name, b.start())
            try:
                record("idle memory", b.name, b.idle_memory())
                record("idle CPU", b.name, b.idle_cpu(0.5 if quick else 2.0))
                for workload, (_, _, full, small) in WORKLOADS.items():
                    if workload in b.supports:
                        size = small if quick else full
                        b.run(workload, size)  # warm-up, not recorded
                        record(workload, b.name, b.run(workload, size))
            finally:
                b.stop()
    scaling = measure_scaling(quick) if "memlab" in backend_names else {}
    dashboard_summary = ""
    if "memlab" in backend_names:
        rec = measure_recovery(length=20 if quick else 100, reps=1 if quick else reps)
        results["chain fresh"] = {"memlab": rec["fresh ms"]}
        results["recovery"] = {"memlab": rec["rebuilt ms"]}
        if rec["promoted ms"]:
            results["recovery from a copy"] = {"memlab": rec["promoted ms"]}
        dash = measure_dashboard(quick, reps=1 if quick else reps)
        runs = dash["runs"]
        results["tasks async, dashboard off"] = {"memlab": runs["off tasks/s"]}
        results["tasks async, dashboard open"] = {"memlab": runs["open tasks/s"]}
        results["kernel CPU/task, dashboard off"] = {"memlab": runs["off kernel us/task"]}
        results["kernel CPU/task, dashboard open"] = {"memlab": runs["open kernel us/task"]}
        results["idle kernel CPU, dashboard open"] = {"memlab": runs["idle on"]}
        dashboard_summary = dashboard_line(dash)
    floors = {
        "memcpy": statistics.median(floor_runs["memcpy"]),
        f"sum {summed // MiB} MiB": statistics.median(floor_runs["sum"]),
        f"sum {summed // MiB} MiB in shm": statistics.median(floor_runs["sum shm"]),
        "pipe round trip": pipe_round_trip(200 if quick else 2000),
    }
    return {
        "results": results,
        "floors": floors,
        "reps": reps,
        "quick": quick,
        "dashboard": dashboard_summary,
        "scaling": {k: {str(n): v for n, v in row.items()} for k, row in scaling.items()},
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
    }


UNITS = {
    **{k: (v[0], v[1]) for k, v in WORKLOADS.items()},
    "startup": ("s", False),
    "idle memory": ("MiB", False),
    "idle CPU": ("ms/s", False),
    "chain fresh": ("ms", False),
    "recovery": ("ms", False),
    "recovery from a copy": ("ms", False),
    **{f"tasks async, dashboard {m}": ("tasks/s", True) for m in ("off", "open")},
    **{f"kernel CPU/task, dashboard {m}": ("us", False) for m in ("off", "open")},
    "idle kernel CPU, dashboard open": ("ms/s", False),
}


def table(report: dict[str, Any]) -> str:
    results = report["results"]
    names = sorted({n for r in results.values() for n in r}, key=lambda n: n != "memlab")
    peers = [n for n in names if n != "memlab"]
    head = ["workload", "unit", *names, *(f"vs {p}" for p in peers), "memlab min-max"]
    rows = [head]
    for workload, by in results.items():
        unit, higher = UNITS[workload]
        med = {n: statistics.median(v) for n, v in by.items()}
        row = [workload, unit, *(_fmt(med[n]) if n in med else "-" for n in names)]
        for p in peers:
            if "memlab" in med and p in med and med[p] and med["memlab"]:
                ratio = med["memlab"] / med[p] if higher else med[p] / med["memlab"]
                row.append(f"{ratio:.2f}x")
            else:
                row.append("-")
        spread = by.get("memlab", [])
        row.append(f"{_fmt(min(spread))}-{_fmt(max(spread))}" if spread else "-")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    units = {"memcpy": "GB/s", "pipe round trip": "µs"}
    floors = ", ".join(f"{k}: {_fmt(v)} {units.get(k, 'ms')}" for k, v in report["floors"].items())
    sums = [v for k, v in report["floors"].items() if k.startswith("sum ")]
    passed = results.get("pass large arg", {}).get("memlab")
    if passed and len(sums) == 2:
        took = statistics.median(passed)
        lines.append(
            f"pass large arg: {took:.3g} ms = {(took / sums[0] - 1) * 100:+.0f}% over "
            f"the sum alone, {(took / sums[1] - 1) * 100:+.0f}% over the same sum in "
            "shared memory (target: within 20%; private arrays may get huge pages, "
            "shared memory may not)"
        )
    if "recovery" in results:
        fresh = statistics.median(results["chain fresh"]["memlab"])
        rebuilt = statistics.median(results["recovery"]["memlab"])
        lines.append(
            f"recovery: node kill to first correct result of the rebuilt chain "
            f"{rebuilt:.0f} ms = {rebuilt / fresh:.2f} x its fresh time {fresh:.0f} ms "
            f"(target <= 1.5 x fresh + 100 ms = {1.5 * fresh + 100:.0f} ms)"
        )
    if report.get("dashboard"):
        lines.append(report["dashboard"])
    return (
        "\n".join(lines)
        + f"\nfloors ({floors})\n"
        + "ratios: > 1 means memlab is better (faster, more throughput, less memory)"
    )


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def chart(report: dict[str, Any], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    results = report["results"]
    peers = sorted({n for r in results.values() for n in r} - {"memlab"})
    if not peers:
        return
    fig, ax = plt.subplots(figsize=(10, 5))
    workloads = list(results)
    width = 0.8 / len(peers)
    for i, peer in enumerate(peers):
        ratios = []
        for w in workloads:
            by = results[w]
            _, higher = UNITS[w]
            if "memlab" in by and peer in by:
                m, p = statistics.median(by["memlab"]), statistics.median(by[peer])
                ratios.append(m / p if higher else p / m)
            else:
                ratios.append(0.0)
        ax.bar([x + i * width for x in range(len(workloads))], ratios, width, label=f"vs {peer}")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(
        [x + 0.4 - width / 2 for x in range(len(workloads))], workloads, rotation=30, ha="right"
    )
    ax.set_ylabel("memlab advantage (x, > 1 is better)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, memlab only")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--backends", default=None, help="comma list: memlab,ray,dask,pool")
    parser.add_argument(
        "--baseline",
        default=None,
        metavar="REV",
        help="also run memlab at git commit REV, alternating with today's code (before/after)",
    )
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args(argv)
    names = (args.backends or ("memlab" if args.quick else "memlab,ray,dask,pool")).split(",")
    reps = args.reps or (1 if args.quick else 5)
    report = run(names, reps, args.quick, args.baseline)
    print(table(report))
    if report["scaling"]:
        print("\nscaling (memlab):")
        print(scaling_table(report["scaling"]))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "latest.json"), "w") as f:
        json.dump(report, f, indent=1)
    chart(report, os.path.join(args.out, "latest.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
