"""The driver's simulated nodes: their processes, their workers, and their deaths.

Owns the node managers the driver started (``node-0`` hosts the driver, like a head node), the
registry of workers per node (from their hello), and the one place a node's death is decided:
the node manager's process exiting while the session runs. A dead node's shared memory is gone
(its arena file is removed), its workers are killed, and every process hears it twice: which
nodes are alive (``nodes``) and which workers died with it (``worker_died``), so owners rebuild
what they lost and drop borrowers that are gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from memlab.exceptions import ConnectionClosedError, MemlabError
from memlab.runtime.process_tree import labelled_processes
from memlab.runtime.session import arena_path

if TYPE_CHECKING:
    from memlab.protocol.transport import Connection
    from memlab.runtime.driver.runtime import Runtime

HEAD_NODE = "node-0"


class Nodes:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.info: dict[str, dict[str, Any]] = {}
        self.sizes: dict[str, int] = {}
        self.alive: list[str] = []
        self.workers: dict[str, dict[str, Any]] = {}
        self.arenas: dict[str, str] = {}
        self.cond = threading.Condition()
        self._count = 0

    # -- starting ------------------------------------------------------------------------------

    def start(self, num_workers: int, capacity: int) -> str:
        """Launch a node manager with its workers; returns its id (not yet ready)."""
        rt = self.rt
        node_id = f"node-{self._count}"
        self._count += 1
        path = arena_path(rt.session_dir, node_id, rt.options.plasma_directory)
        self.arenas[node_id] = path
        self.sizes[node_id] = num_workers
        config = {
            "node_id": node_id,
            "session_dir": rt.session_dir,
            "num_workers": num_workers,
            "total_workers": self.total_workers(extra=num_workers),
            "capacity": capacity,
            "driver": "driver",
            "driver_pid": os.getpid(),
            "inline_threshold": rt.options.inline_threshold,
            "arena_path": path,
            "plasma_directory": rt.options.plasma_directory,
            "spill_dir": os.path.join(rt.session_dir, f"spill-{node_id}"),
            "lineage_budget": rt.options.lineage_budget,
            "events": rt.options.events,
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "memlab.runtime.node.main", json.dumps(config)],
            stdin=subprocess.PIPE,
            close_fds=True,
            env=worker_env(),
            # Own session: a kernel restart SIGKILLs the kernel's process group and ipykernel's
            # shutdown SIGTERMs it; the node manager must outlive both to clean up after them.
            start_new_session=True,
        )
        assert proc.stdin is not None
        proc.stdin.write(rt.secret.hex().encode() + b"\n")
        proc.stdin.flush()  # stays open: the node manager's lifeline to the driver
        self.procs[node_id] = proc
        threading.Thread(
            target=self._reap, args=(node_id, proc), name=f"memlab-reap-{node_id}", daemon=True
        ).start()
        return node_id

    def wait_ready(self, node_ids: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not all(n in self.info for n in node_ids):
                for node_id in node_ids:
                    proc = self.procs[node_id]
                    if proc.poll() is not None:
                        raise MemlabError(
                            f"the node manager {node_id} exited with code {proc.returncode} "
                            "during start-up; its error is printed above"
                        )
                if time.monotonic() > deadline:
                    raise MemlabError(f"node managers did not start within {timeout} s")
                self.cond.wait(0.05)
            for node_id in node_ids:
                if node_id not in self.alive:
                    self.alive.append(node_id)
        self._announce()

    def on_hello(self, conn: Connection, h: dict[str, Any]) -> None:
        kind = h.get("kind")
        if kind == "node":
            with self.cond:
                self.info[h["proc"]] = {
                    "arena": h["arena"],
                    "capacity": h["capacity"],
                    "pid": h["pid"],
                }
                self.cond.notify_all()
        elif kind == "worker":
            with self.cond:
                self.workers[h["proc"]] = {"node": h.get("node"), "pid": h.get("pid")}
            with contextlib.suppress(ConnectionClosedError):
                conn.send(self._nodes_message())

    def total_workers(self, extra: int = 0) -> int:
        return sum(self.sizes[n] for n in self.alive) + extra

    # -- failures ------------------------------------------------------------------------------

    def _reap(self, node_id: str, proc: subprocess.Popen[bytes]) -> None:
        proc.wait()
        from memlab.runtime.driver.runtime import RuntimeState

        if self.rt.state is RuntimeState.RUNNING:
            self.node_died(node_id)

    def node_died(self, node_id: str) -> None:
        rt = self.rt
        core = rt.core
        with self.cond:
            if node_id not in self.alive:
                return
            self.alive.remove(node_id)
            dead = {w: i for w, i in self.workers.items() if i["node"] == node_id}
            for w in dead:
                del self.workers[w]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.arenas[node_id])  # the node's shared memory dies with it
        shutil.rmtree(os.path.join(rt.session_dir, f"spill-{node_id}"), ignore_errors=True)
        for info in dead.values():
            with contextlib.suppress(ProcessLookupError, TypeError):
                os.kill(info["pid"], signal.SIGKILL)
        ev = core.events
        ev.emit("node.died", node_id=node_id)
        self._announce()
        core.node_died(node_id)
        for worker, info in dead.items():
            cause = f"its node {node_id} died"
            ev.emit(
                "worker.died",
                worker_id=worker,
                node=node_id,
                pid=info["pid"],
                exitcode=None,
                signal=signal.SIGKILL,
                cause=cause,
            )
            msg = {
                "t": "worker_died",
                "worker": worker,
                "pid": info["pid"],
                "exitcode": None,
                "signal": int(signal.SIGKILL),
                "node": node_id,
                "cause": cause,
            }
            core.process_died(worker, msg)
            ev.emit("owner.died", owner=worker)
            self.broadcast(msg)

    def kill_node(self, node_id: str) -> None:
        if node_id == HEAD_NODE:
            raise ValueError(
                f"{HEAD_NODE} hosts the driver (it is the head node) and cannot be "
                f"killed on its own; kill another node, e.g. one of {self.alive[1:]}"
            )
        if node_id not in self.alive:
            raise ValueError(f"no alive node {node_id!r}; alive nodes are {self.alive}")
        pids = [self.procs[node_id].pid]
        pids += [i["pid"] for i in self.workers.values() if i["node"] == node_id]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # A node's death ends everything on it, what its tasks started included (their
        # subreaper died with it): they carry the node's name in their environment.
        for stray in labelled_processes(self.rt.session_dir, node_id):
            with contextlib.suppress(Exception):
                stray.kill()
        self.node_died(node_id)

    def kill_worker(self, worker_id: str | None = None) -> str:
        with self.cond:
            candidates = list(self.workers) if worker_id is None else [worker_id]
        if not candidates or candidates[0] not in self.workers:
            raise ValueError(
                f"no live worker {worker_id!r}; live workers are {sorted(self.workers)}"
            )
        victim = random.choice(candidates)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.workers[victim]["pid"], signal.SIGKILL)
        return victim

    # -- messages ------------------------------------------------------------------------------

    def _nodes_message(self) -> dict[str, Any]:
        return {"t": "nodes", "alive": list(self.alive), "workers": self.total_workers()}

    def _announce(self) -> None:
        self.rt.core.set_nodes(list(self.alive), self.total_workers())
        self.broadcast(self._nodes_message())

    def broadcast(self, header: dict[str, Any], skip: Any = None) -> None:
        for conn in list(self.rt.core.peers.connections.values()):
            if conn is not skip:
                with contextlib.suppress(ConnectionClosedError):
                    conn.send(header)


def worker_env() -> dict[str, str]:
    # Workers import what the driver can import: functions shipped by name resolve there.
    env = dict(os.environ)
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    if os.getcwd() not in paths:
        paths.insert(0, os.getcwd())
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env
