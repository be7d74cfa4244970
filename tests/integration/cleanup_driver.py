"""A memlab driver run as a subprocess by ``test_cleanup.py``: ``python cleanup_driver.py MODE``.

It starts a runtime, runs a task, puts a large array (so the arena is really used), then prints
one line ``MEMLAB-SESSION {json}`` with the session directory, the pids of its processes and its
arena files, and then, by MODE:

* ``block``: waits on stdin forever, so the test can kill it however it likes;
* ``strays``: as ``block``, after a task started processes of its own (a child, a detached
  child, a fork copy of its worker); their pids are in the line under ``strays``;
* ``exit``: returns without calling ``memlab.shutdown()``, so only the ``atexit`` hook cleans
  up. A hook registered *before* ``init`` runs *after* memlab's (atexit is LIFO) and prints
  ``MEMLAB-AFTER-EXIT {json}`` with what is still left at that moment.
"""

from __future__ import annotations

import atexit
import json
import os
import sys

import numpy as np
import psutil

import memlab
from memlab.testing.leaks import session_files, session_processes, start_stray_processes

MARKER = "MEMLAB-SESSION"
AFTER_EXIT_MARKER = "MEMLAB-AFTER-EXIT"


def _report_after_exit(session_dir: str, pids: list[int]) -> None:
    alive = [
        p
        for p in pids
        if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ]
    print(
        AFTER_EXIT_MARKER,
        json.dumps({"alive": alive, "files": session_files(session_dir)}),
        flush=True,
    )


@memlab.remote
def square(x: int) -> int:
    return x * x


def main() -> None:
    mode = sys.argv[1]
    state: dict[str, object] = {}
    if mode == "exit":
        atexit.register(lambda: _report_after_exit(state["dir"], state["pids"]))  # type: ignore[arg-type]
    runtime = memlab.init(num_workers=2, object_store_memory=128 << 20)
    assert memlab.get(square.remote(7)) == 49
    big = memlab.put(np.ones(4 << 20))  # 32 MiB: lives in the shared-memory arena
    assert memlab.get(big)[-1] == 1.0
    strays = memlab.get(memlab.remote(start_stray_processes).remote()) if mode == "strays" else {}
    pids = [p.pid for p in session_processes()]
    state.update(dir=runtime.session_dir, pids=pids)
    name = os.path.basename(runtime.session_dir)
    arenas = [os.path.join("/dev/shm", f) for f in os.listdir("/dev/shm") if f.startswith(name)]
    print(
        MARKER,
        json.dumps(
            {
                "session_dir": runtime.session_dir,
                "pids": pids,
                "arenas": arenas,
                "driver": os.getpid(),
                "strays": strays,
            }
        ),
        flush=True,
    )
    if mode in ("block", "strays"):
        sys.stdin.read()


if __name__ == "__main__":
    main()
