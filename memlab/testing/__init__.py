"""Tools for testing code that runs on memlab: fault injection and leak checks.

``faults`` kills workers on purpose (from inside a task, at a chosen stage, or from the driver);
``leaks`` checks that a finished session left no process, socket or shared-memory file;
``placement`` puts tasks on a chosen node (``placed_on``).

    from memlab.testing import crash_once

    @memlab.remote(max_retries=1)
    def flaky(marker):
        crash_once(marker, "segfault")  # the first attempt dies; the retry returns 42
        return 42
"""

from memlab.testing.cluster import (
    ChaosReport,
    add_node,
    chaos,
    drop_copies,
    kill_node,
    kill_owner,
    nodes_alive,
)
from memlab.testing.faults import (
    CRASH_MODES,
    EXIT_CODE,
    CrashOnPickle,
    CrashOnUnpickle,
    crash,
    crash_once,
    expected_exit,
    first_attempt,
    gated,
    kill_worker,
    wait_for_file,
    worker_pids,
)
from memlab.testing.leaks import wait_for
from memlab.testing.placement import placed_on

__all__ = [
    "CRASH_MODES",
    "EXIT_CODE",
    "ChaosReport",
    "CrashOnPickle",
    "CrashOnUnpickle",
    "add_node",
    "chaos",
    "crash",
    "crash_once",
    "drop_copies",
    "expected_exit",
    "first_attempt",
    "gated",
    "kill_node",
    "kill_owner",
    "kill_worker",
    "nodes_alive",
    "placed_on",
    "wait_for",
    "wait_for_file",
    "worker_pids",
]
