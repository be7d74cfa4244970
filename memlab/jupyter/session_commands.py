"""``%memlab start | stop | status | kill | dashboard``: the runtime's lifecycle from a cell."""

from __future__ import annotations

import argparse
import time
from typing import Any

from IPython.core.error import UsageError

import memlab
from memlab.jupyter import reprs
from memlab.jupyter.display import show
from memlab.jupyter.parsing import MagicParser, parse_size, positive_int

HEAD_NODE = "node-0"


def start_parser() -> MagicParser:
    p = MagicParser("%memlab start", "Start the runtime, or show the running one.")
    p.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="worker processes in all (default: the number of CPUs)",
    )
    p.add_argument(
        "--nodes",
        type=positive_int,
        default=None,
        help="simulated nodes, each with its own store (default 1)",
    )
    p.add_argument(
        "--memory",
        type=parse_size,
        default=None,
        help="shared memory for all stores together, e.g. 2GB",
    )
    return p


_FLAGS = {"num_workers": "--workers", "num_nodes": "--nodes", "object_store_memory": "--memory"}


def start(args: argparse.Namespace) -> None:
    was_running = memlab.is_initialized()
    try:
        runtime = memlab.init(
            num_workers=args.workers, num_nodes=args.nodes, object_store_memory=args.memory
        )
    except memlab.RuntimeConflictError as exc:
        listed = "; ".join(
            f"{_FLAGS.get(k, k)}: running {old}, asked for {new}"
            for k, (old, new) in sorted(exc.differences.items())
        )
        raise UsageError(
            f"memlab is already running with other settings ({listed}). Run "
            "%memlab stop first to restart it with the new ones, or drop the "
            "options to use the running runtime."
        ) from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if was_running:
        print("memlab is already running with these settings; using it.")
    else:
        described = runtime.describe()
        _wait_for_nodes(described["num_nodes"], described["num_workers"])
    status(runtime)


def _wait_for_nodes(nodes: int, workers: int, timeout: float = 2.0) -> None:
    """Until every node's and worker's first report reached the collector (so the summary
    lists them all), or ``timeout``: the summary is shown either way."""
    import memlab.state as st

    def reported() -> bool:
        alive = [w for w in st.workers() if w["state"] == "alive"]
        return len(st.nodes()) >= nodes and len(alive) >= workers

    deadline = time.monotonic() + timeout
    try:
        while not reported() and time.monotonic() < deadline:
            time.sleep(0.02)  # polled with a deadline; reports arrive within milliseconds
    except memlab.MemlabError:  # events=False: no node records to wait for
        pass


def stop() -> None:
    if not memlab.is_initialized():
        print("memlab is not running; nothing to stop.")
        return
    memlab.shutdown()
    print("memlab stopped: its workers, nodes and shared memory are gone.")


def status(runtime: Any = None) -> None:
    if not memlab.is_initialized():
        print("memlab is not running; start it with %memlab start [--workers N].")
        return
    runtime = runtime if runtime is not None else memlab.init()
    summary = reprs.runtime_summary(runtime)
    show(reprs.runtime_text(summary), reprs.runtime_html(summary))
    _dashboard_button()


def _dashboard_button() -> None:
    """In a kernel with the dashboard installed: a button under the summary that opens it."""
    from IPython import get_ipython

    shell = get_ipython()
    if getattr(shell, "kernel", None) is None:
        return
    try:
        import ipywidgets

        from memlab.jupyter.dashboard import dashboard as make_dashboard
    except ImportError:
        return
    from IPython.display import display

    out = ipywidgets.Output()
    button = ipywidgets.Button(description="Open dashboard", icon="tachometer")

    def open_dashboard(_: Any) -> None:
        button.disabled = True
        with out:
            display(make_dashboard())

    button.on_click(open_dashboard)
    display(ipywidgets.VBox([button, out]))


def kill_parser() -> MagicParser:
    p = MagicParser("%memlab kill", "Kill a worker or a node on purpose (fault injection).")
    p.add_argument("what", choices=["worker", "node"])
    p.add_argument("id", help="a worker id (w-…) or node id (node-1…), as %memlab status shows")
    return p


def kill(args: argparse.Namespace) -> None:
    from memlab import testing

    if not memlab.is_initialized():
        raise UsageError("memlab is not running; start it with %memlab start.")
    if args.what == "node" and args.id == HEAD_NODE:
        raise UsageError(
            f"{HEAD_NODE} is the head node: it hosts this kernel's driver, so losing it would "
            "end the session rather than show a recovery. Kill another node instead (start "
            "with %memlab start --nodes 2 or more to have one)."
        )
    try:
        if args.what == "worker":
            testing.kill_worker(args.id)
        else:
            testing.kill_node(args.id)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(
        f"killed {args.what} {args.id}; watch the recovery with %memlab events "
        "--kinds task.retried,object.lost,object.reconstructed or %memlab dashboard"
    )


def dashboard() -> None:
    try:
        from memlab.jupyter.dashboard import dashboard as make_dashboard
    except ImportError as exc:
        print(
            "The memlab dashboard widget is not available in this installation "
            f"(memlab.jupyter.dashboard could not be imported: {exc}). Meanwhile "
            "%memlab status, %memlab refs and %memlab events show the same state as text."
        )
        return
    from IPython.display import display

    display(make_dashboard())
