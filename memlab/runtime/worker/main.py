"""Entry point of a worker process: ``python -m memlab.runtime.worker.main``.

The node manager passes the session's coordinates in the environment and the secret on the
first line of stdin; stdin then stays open as the lifeline: when the node manager dies, the read
returns and the worker exits at once, so no worker outlives its node. The worker leads its own
process group, and takes that group with it when it leaves that way: what its tasks started
(children, fork copies) does not outlive the node either.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memlab.protocol.transport import Connection
    from memlab.runtime.coreworker.core_worker import CoreWorker
    from memlab.runtime.events.shipper import EventShipper


def _lifeline() -> None:
    try:
        sys.stdin.buffer.read()
    finally:
        _exit_with_group()


def _exit_with_group() -> None:
    if os.getpgrp() == os.getpid():  # never the node manager's group, should setpgid have failed
        os.killpg(0, signal.SIGKILL)  # this worker included
    os._exit(0)


def main() -> None:
    # Before any task runs: the node manager kills this group when the worker exits.
    os.setpgid(0, 0)
    secret = bytes.fromhex(sys.stdin.buffer.readline().decode().strip())
    env = os.environ
    proc, node = env["MEMLAB_PROC"], env["MEMLAB_NODE"]
    threading.Thread(target=_lifeline, name="memlab-lifeline", daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))

    from memlab.core.events import EventBuffer
    from memlab.runtime.coreworker.core_worker import CoreWorker
    from memlab.runtime.coreworker.output_channel import install_stream_routers
    from memlab.runtime.coreworker.recovery import DEFAULT_LINEAGE_BUDGET
    from memlab.runtime.coreworker.store_client import StoreClient
    from memlab.runtime.events.shipper import EventShipper
    from memlab.runtime.worker.executor import Executor

    events = EventBuffer(proc)
    events.enabled = env.get("MEMLAB_EVENTS", "1") == "1"
    core = CoreWorker(
        proc,
        "worker",
        env["MEMLAB_SESSION_DIR"],
        secret,
        node,
        events,
        inline_threshold=int(env["MEMLAB_INLINE"]),
        driver=env["MEMLAB_DRIVER"],
        lineage_budget=int(env.get("MEMLAB_LINEAGE_BUDGET", DEFAULT_LINEAGE_BUDGET)),
        max_leases=int(env["MEMLAB_NUM_WORKERS"]),
    )
    shipper = EventShipper(events, env["MEMLAB_SESSION_DIR"], secret)
    shipper.start()
    core.attach_store(StoreClient(node, env["MEMLAB_ARENA"], functools.partial(core.conn_to, node)))
    executor = Executor(core)
    install_stream_routers()  # a task's prints go to its owner (output_channel)
    # Workers inherit the node manager's SIG_IGN for SIGINT, but cancel() interrupts a running
    # task with SIGINT: take it back, for cancelled tasks only (a terminal's Ctrl-C reaches the
    # whole process group and must not kill workers).
    signal.signal(signal.SIGINT, executor.on_sigint)
    core.on_peer_lost(Lifeline(node, core.driver).peer_lost)
    core.register("retire", Retirement(core, shipper).on_retire)
    core.conn_to(core.driver)
    core.conn_to(node)  # the hello to the node manager makes this worker leasable
    executor.run()


class Retirement:
    """Answers the node manager's ``retire``: it has more idle workers than it needs."""

    def __init__(self, core: CoreWorker, shipper: EventShipper) -> None:
        self.core = core
        self.shipper = shipper

    def on_retire(self, conn: Connection, h: dict[str, Any], payload: bytes) -> None:
        """Exit, unless this process still owns objects or actors, or has work in flight (an
        owner's exit would lose its objects)."""
        core = self.core
        with core.lock:
            needed = bool(
                core.hooks.busy()
                or core.submitter.tasks
                or core.actors.records
                or any(e.owned for e in core.table.entries.values())
            )
        conn.reply(h, {"t": "retired", "ok": not needed})
        if needed:
            return
        with contextlib.suppress(Exception):
            core.flush()  # releases of borrowed refs, pending events
        with contextlib.suppress(Exception):
            self.shipper.close(timeout=0.5)
        _exit_with_group()


class Lifeline:
    """A worker lives no longer than its connections to its node manager and the driver."""

    def __init__(self, node: str, driver: str) -> None:
        self.node = node
        self.driver = driver

    def peer_lost(self, peer: str, conn: Connection) -> None:
        if peer in (self.node, self.driver):
            _exit_with_group()


if __name__ == "__main__":
    main()
