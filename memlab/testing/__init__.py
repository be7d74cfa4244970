"""Tools for testing code that runs on memlab: fault injection and leak checks.

``faults`` kills workers on purpose (from inside a task, at a chosen stage, or from the driver);
``leaks`` checks that a finished session left no process, socket or shared-memory file;
``placement`` puts tasks on a chosen node (``placed_on``); ``introspect`` reads the runtime's
bookkeeping as snapshots (``owner_entry``, ``store_stats``, …) so tests never reach into it.

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
    delete_copy,
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
from memlab.testing.introspect import (
    LineageStats,
    OwnerEntry,
    actor_id,
    arena_bounds,
    blocked_in_get,
    flush_releases,
    lineage_stats,
    memory_store_size,
    owner_entry,
    shipped_functions,
    store_object,
    store_stats,
    table_size,
    worker_pool,
)
from memlab.testing.leaks import wait_for
from memlab.testing.placement import placed_on

__all__ = [
    "CRASH_MODES",
    "EXIT_CODE",
    "ChaosReport",
    "CrashOnPickle",
    "CrashOnUnpickle",
    "LineageStats",
    "OwnerEntry",
    "actor_id",
    "add_node",
    "arena_bounds",
    "blocked_in_get",
    "chaos",
    "crash",
    "crash_once",
    "delete_copy",
    "drop_copies",
    "expected_exit",
    "first_attempt",
    "flush_releases",
    "gated",
    "kill_node",
    "kill_owner",
    "kill_worker",
    "lineage_stats",
    "memory_store_size",
    "nodes_alive",
    "owner_entry",
    "placed_on",
    "shipped_functions",
    "store_object",
    "store_stats",
    "table_size",
    "wait_for",
    "wait_for_file",
    "worker_pids",
    "worker_pool",
]
