"""``python -m memlab.demo``: a two-minute tour on the default settings.

Runs tasks, passes refs between them, reads a large array zero-copy from shared memory, and
prints the object table that the dashboards show.
"""

from __future__ import annotations

import time

import numpy as np

import memlab


@memlab.remote
def make_array(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64)


@memlab.remote
def total(a: np.ndarray) -> float:
    return float(a.sum())


@memlab.remote
def square(x: int) -> int:
    return x * x


def _table(rows: list[dict[str, object]], columns: list[str]) -> str:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def main() -> None:
    start = time.perf_counter()
    runtime = memlab.init(num_workers=2)
    print(f"started {runtime} in {time.perf_counter() - start:.2f} s")

    squares = memlab.get([square.remote(i) for i in range(10)])
    print("tasks:", squares)

    big = make_array.remote(20_000_000)  # 160 MB, written once into shared memory
    s = total.remote(big)  # a ref as an argument: the worker reads it zero-copy
    print("sum computed by a task:", memlab.get(s))

    t = time.perf_counter()
    arr = memlab.get(big)
    took = (time.perf_counter() - t) * 1e3
    print(
        f"get of a {arr.nbytes / 1e6:.0f} MB array took {took:.2f} ms "
        f"(zero-copy, read-only: writeable={arr.flags.writeable})"
    )

    small = memlab.put({"config": [1, 2, 3]})
    holder = memlab.put([small])  # a ref inside a value keeps its target alive
    memlab.get(holder)
    objects = memlab.state.objects()
    for o in objects:
        o["holders"] = ",".join(f"{k}={v}" for k, v in o["holders"].items() if v)
        o["object_id"] = o["object_id"][:12]
    print("\nobject table (memlab.state.objects()):")
    print(_table(objects, ["object_id", "owner", "size", "state", "locations", "holders"]))
    del arr, big, s, small, holder
    memlab.shutdown()
    print(f"\nshut down; total {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
