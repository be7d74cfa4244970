"""The systems under comparison, behind one small interface.

Each backend starts its runtime once, then runs workloads by name; a workload it cannot run
(Dask has no actors, a process pool has no object store) is simply absent from ``supports``.
Workloads follow the names of Ray's own microbenchmark suite where one exists.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import psutil

MiB = 1 << 20


def _noop() -> None:
    return None


def _inc(x: int) -> int:
    return x + 1


def _total(a: np.ndarray) -> float:
    return float(a.sum())


class Echo:
    """The actor of the 1:1 actor-call workloads."""

    def ping(self) -> None:
        return None


def _rss_of_children() -> int:
    me = psutil.Process(os.getpid())
    total = 0
    for child in me.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def cpu_of_tree() -> float:
    """CPU seconds used so far by this process and every process under it."""
    me = psutil.Process(os.getpid())
    total = 0.0
    for proc in [me, *me.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


class Backend:
    name = "?"
    supports: frozenset[str] = frozenset()

    def start(self) -> float:
        """Start the runtime and run one trivial task; returns seconds to the first result."""
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def run(self, workload: str, size: int) -> float:
        return float(getattr(self, "w_" + workload.replace(" ", "_"))(size))

    def idle_memory(self) -> float:
        """RSS of the runtime's own processes (the driver, shared by all backends, excluded)."""
        time.sleep(1.0)  # let start-up settle: the figure is the steady idle footprint
        return _rss_of_children() / MiB

    def idle_cpu(self, seconds: float = 2.0) -> float:
        """CPU milliseconds per second an idle runtime spends: its processes and its threads in
        this one (which the sleeping benchmark leaves idle)."""
        before = cpu_of_tree()
        time.sleep(seconds)
        return (cpu_of_tree() - before) / seconds * 1e3


class Memlab(Backend):
    name = "memlab"
    supports = frozenset(
        {
            "startup",
            "idle memory",
            "idle CPU",
            "tasks sync",
            "tasks async",
            "put calls",
            "get calls",
            "put gigabytes",
            "get large",
            "pass large arg",
            "chain 100",
            "actor calls sync",
            "actor calls async",
        }
    )

    def __init__(self, events: bool = True) -> None:
        import memlab

        self.m = memlab
        self.events = events
        self.noop = memlab.remote(_noop)
        self.inc = memlab.remote(_inc)
        self.total = memlab.remote(_total)
        self.echo_class = memlab.remote(Echo)
        self.echo: Any = None

    def w_actor_calls_sync(self, n: int) -> float:
        if self.echo is None:
            self.echo = self.echo_class.remote()
            self.m.get(self.echo.ping.remote())
        t = time.perf_counter()
        for _ in range(n):
            self.m.get(self.echo.ping.remote())
        return n / (time.perf_counter() - t)

    def w_actor_calls_async(self, n: int) -> float:
        if self.echo is None:
            self.echo = self.echo_class.remote()
            self.m.get(self.echo.ping.remote())
        t = time.perf_counter()
        self.m.get([self.echo.ping.remote() for _ in range(n)])
        return n / (time.perf_counter() - t)

    def start(self) -> float:
        self.echo = None
        t = time.perf_counter()
        self.m.init(num_workers=2, object_store_memory=1536 * MiB, events=self.events)
        self.m.get(self.noop.remote())
        return time.perf_counter() - t

    def stop(self) -> None:
        self.m.shutdown()

    def w_tasks_sync(self, n: int) -> float:
        t = time.perf_counter()
        for _ in range(n):
            self.m.get(self.noop.remote())
        return n / (time.perf_counter() - t)

    def w_tasks_async(self, n: int) -> float:
        t = time.perf_counter()
        self.m.get([self.noop.remote() for _ in range(n)])
        return n / (time.perf_counter() - t)

    def w_put_calls(self, n: int) -> float:
        t = time.perf_counter()
        for i in range(n):
            self.m.put(i)
        return n / (time.perf_counter() - t)

    def w_get_calls(self, n: int) -> float:
        ref = self.m.put(1)
        t = time.perf_counter()
        for _ in range(n):
            self.m.get(ref)
        return n / (time.perf_counter() - t)

    def w_put_gigabytes(self, nbytes: int) -> float:
        arr = np.ones(nbytes // 8)
        self.m.put(arr)  # warm the store's pages, as a long-running session has them
        t = time.perf_counter()
        ref = self.m.put(arr)
        took = time.perf_counter() - t
        del ref
        return nbytes / took / 1e9

    def w_get_large(self, nbytes: int) -> float:
        ref = self.m.put(np.ones(nbytes // 8))
        t = time.perf_counter()
        arr = self.m.get(ref)
        took = time.perf_counter() - t
        del arr, ref
        return took * 1e3

    def w_pass_large_arg(self, nbytes: int) -> float:
        ref = self.m.put(np.ones(nbytes // 8))
        self.m.get(self.total.remote(ref))
        t = time.perf_counter()
        self.m.get(self.total.remote(ref))
        return (time.perf_counter() - t) * 1e3

    def w_chain_100(self, n: int) -> float:
        t = time.perf_counter()
        ref = self.inc.remote(0)
        for _ in range(n - 1):
            ref = self.inc.remote(ref)
        assert self.m.get(ref) == n
        return (time.perf_counter() - t) * 1e3


class Ray(Backend):
    name = "ray"
    supports = Memlab.supports

    def __init__(self) -> None:
        import ray

        self.r = ray
        self.noop = ray.remote(_noop)
        self.inc = ray.remote(_inc)
        self.total = ray.remote(_total)
        self.echo_class = ray.remote(Echo)
        self.echo: Any = None

    def start(self) -> float:
        self.echo = None
        t = time.perf_counter()
        self.r.init(
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=1536 * MiB,
            log_to_driver=False,
            configure_logging=False,
        )
        self.r.get(self.noop.remote())
        return time.perf_counter() - t

    def stop(self) -> None:
        self.r.shutdown()

    w_tasks_sync = Memlab.w_tasks_sync
    w_tasks_async = Memlab.w_tasks_async
    w_put_calls = Memlab.w_put_calls
    w_get_calls = Memlab.w_get_calls
    w_put_gigabytes = Memlab.w_put_gigabytes
    w_get_large = Memlab.w_get_large
    w_pass_large_arg = Memlab.w_pass_large_arg
    w_chain_100 = Memlab.w_chain_100
    w_actor_calls_sync = Memlab.w_actor_calls_sync
    w_actor_calls_async = Memlab.w_actor_calls_async

    @property
    def m(self) -> Any:
        return self.r


class Dask(Backend):
    name = "dask"
    supports = frozenset(
        {"startup", "idle memory", "idle CPU", "tasks sync", "tasks async", "chain 100"}
    )

    def start(self) -> float:
        from dask.distributed import Client, LocalCluster

        t = time.perf_counter()
        self.cluster = LocalCluster(
            n_workers=2, threads_per_worker=1, dashboard_address=None, processes=True
        )
        self.client = Client(self.cluster)
        self.client.submit(_noop, pure=False).result()
        return time.perf_counter() - t

    def stop(self) -> None:
        self.client.close()
        self.cluster.close()

    def w_tasks_sync(self, n: int) -> float:
        t = time.perf_counter()
        for _ in range(n):
            self.client.submit(_noop, pure=False).result()
        return n / (time.perf_counter() - t)

    def w_tasks_async(self, n: int) -> float:
        t = time.perf_counter()
        self.client.gather([self.client.submit(_noop, pure=False) for _ in range(n)])
        return n / (time.perf_counter() - t)

    def w_chain_100(self, n: int) -> float:
        t = time.perf_counter()
        f = self.client.submit(_inc, 0, pure=False)
        for _ in range(n - 1):
            f = self.client.submit(_inc, f, pure=False)
        assert f.result() == n
        return (time.perf_counter() - t) * 1e3


class ProcessPool(Backend):
    name = "pool"
    supports = frozenset({"startup", "idle memory", "idle CPU", "tasks sync", "tasks async"})

    def start(self) -> float:
        from concurrent.futures import ProcessPoolExecutor

        t = time.perf_counter()
        self.pool = ProcessPoolExecutor(2)
        self.pool.submit(_noop).result()
        return time.perf_counter() - t

    def stop(self) -> None:
        self.pool.shutdown()

    def w_tasks_sync(self, n: int) -> float:
        t = time.perf_counter()
        for _ in range(n):
            self.pool.submit(_noop).result()
        return n / (time.perf_counter() - t)

    def w_tasks_async(self, n: int) -> float:
        t = time.perf_counter()
        for f in [self.pool.submit(_noop) for _ in range(n)]:
            f.result()
        return n / (time.perf_counter() - t)


def available(names: list[str]) -> list[Callable[[], Backend]]:
    """Constructors of the named backends that are installed here."""
    makers: dict[str, Callable[[], Backend]] = {
        "memlab": Memlab,
        "ray": Ray,
        "dask": Dask,
        "pool": ProcessPool,
    }
    out = []
    for name in names:
        if name == "ray":
            try:
                import ray  # noqa: F401
            except ImportError:
                continue
        if name == "dask":
            try:
                import dask.distributed  # noqa: F401
            except ImportError:
                continue
        out.append(makers[name])
    return out
