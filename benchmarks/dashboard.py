"""What a live dashboard costs: ``tasks async`` throughput with the dashboard open against
without it (target: at most 10% lower), and the kernel's CPU while idle with it open (target:
at most 2% of one core, i.e. 20 ms/s).

The kernel here is this process (the driver). The widget runs as in a notebook: its publisher
thread polls ``memlab.state.view`` at up to 10 Hz and hands each delta to the comm; there is no
browser, so the delta is serialized to JSON as ipykernel would (the bulk of what sending costs
the kernel) and dropped. Each repetition runs a burst without the dashboard and one with it, in
alternating order so drift on a shared machine hits both alike; medians are reported. (Which
tab is shown does not matter to the kernel: the widget keeps every view live.) Beside
throughput, which other load on the machine moves a lot, it reports CPU per task: the kernel's
(what the dashboard adds to the submitting process) and the collector's (where the aggregation
runs).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from typing import Any

import psutil

import memlab

MiB = 1 << 20
MODES = ("off", "open")


def _noop() -> None:
    return None


def _kernel_cpu() -> float:
    times = psutil.Process(os.getpid()).cpu_times()
    return times.user + times.system


def _collector_cpu() -> float:
    total = 0.0
    for child in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if "collector" in " ".join(child.cmdline()):
                times = child.cpu_times()
                total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def _open() -> Any:
    from memlab.jupyter.dashboard import dashboard

    widget = dashboard()
    widget.publisher.on_delta = lambda msg: json.dumps(msg)  # what ipykernel's session does
    widget.publisher.on_keyframe = lambda frame: json.dumps(frame)
    return widget


def measure(quick: bool = False, reps: int = 3) -> dict[str, Any]:
    """Per mode: throughput, kernel and collector CPU per task; idle kernel CPU off and on."""
    n = 200 if quick else 5000
    idle_for = 0.5 if quick else 3.0
    noop = memlab.remote(_noop)
    memlab.init(num_workers=2, object_store_memory=512 * MiB)
    out: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        out.setdefault(key, []).append(value)

    def burst(mode: str) -> None:
        widget = None if mode == "off" else _open()
        try:
            if widget is not None:
                time.sleep(0.3)  # let it settle into its polling
            sent = widget.publisher.sent if widget is not None else 0
            kernel, collector, t = _kernel_cpu(), _collector_cpu(), time.perf_counter()
            memlab.get([noop.remote() for _ in range(n)])
            took = time.perf_counter() - t
            add(f"{mode} tasks/s", n / took)
            add(f"{mode} kernel us/task", (_kernel_cpu() - kernel) / n * 1e6)
            add(f"{mode} collector us/task", (_collector_cpu() - collector) / n * 1e6)
            if widget is not None:
                add(f"{mode} updates/s", (widget.publisher.sent - sent) / took)
        finally:
            if widget is not None:
                widget.close()

    def idle(widget: Any) -> float:
        before, t = _kernel_cpu(), time.perf_counter()
        time.sleep(idle_for)
        return (_kernel_cpu() - before) / (time.perf_counter() - t) * 1e3

    try:
        memlab.get([noop.remote() for _ in range(n)])  # warm-up: workers, leases, functions
        for rep in range(1 if quick else reps):
            for mode in MODES[rep % 2 :] + MODES[: rep % 2]:
                burst(mode)
            add("idle off", idle(None))
            widget = _open()
            try:
                time.sleep(2.5)  # the publisher backs off once idle for 2 s
                add("idle on", idle(widget))
            finally:
                widget.close()
    finally:
        memlab.shutdown()
    med = {k: statistics.median(v) for k, v in out.items()}
    med["cost %"] = (1 - med["open tasks/s"] / med["off tasks/s"]) * 100
    return {"runs": out, "median": med}


def line(result: dict[str, Any]) -> str:
    m = result["median"]
    return (
        f"dashboard open: tasks async {m['open tasks/s']:,.0f} vs {m['off tasks/s']:,.0f} "
        f"tasks/s without = {m['cost %']:+.1f}% (target <= 10%); kernel CPU per task "
        f"{m['off kernel us/task']:.0f} us without, {m['open kernel us/task']:.0f} with; "
        f"collector {m['off collector us/task']:.0f} / {m['open collector us/task']:.0f} us "
        f"per task; {m['open updates/s']:.1f} updates/s during the burst; idle kernel CPU "
        f"{m['idle on']:.1f} ms/s with it, {m['idle off']:.1f} without = "
        f"{m['idle on'] / 10:.2f}% of a core (target <= 2%)"
    )


if __name__ == "__main__":
    print(line(measure(reps=6)))
