"""Ownership checks across a whole session: every process's invariants, and "nothing is left".

``validate_session`` runs ``validate()`` in the driver's core and asks every live worker to run
its own, and every node manager to check its worker pool (the ``validate`` message), so a
broken count in a worker or a pool fails the test that caused it, not a later one.
``session_tables`` says how many entries each process's reference table still has and how many
objects each node's store holds; ``wait_session_empty`` waits until all of them are zero,
which is what "every ref was dropped" must lead to (DESIGN §3, no leak).

Run in the driver, like the rest of ``memlab.testing``.
"""

from __future__ import annotations

import time
from typing import Any

from memlab.exceptions import ConnectionClosedError
from memlab.runtime.context import current_runtime

__all__ = ["session_tables", "validate_session", "wait_session_empty"]


def _runtime() -> Any:
    runtime = current_runtime()
    if runtime is None:
        raise ValueError("no runtime runs in this process; call memlab.init() first")
    return runtime


def _ask(core: Any, peer: str, header: dict[str, Any]) -> dict[str, Any] | None:
    """A request to a process that may have died or exited meanwhile (None then)."""
    try:
        reply: dict[str, Any] = core.conn_to(peer).request(header, timeout=10)[0]
    except (ConnectionClosedError, TimeoutError, OSError):
        return None
    return reply


def validate_session() -> dict[str, int]:
    """Run ``validate()`` in the driver, every live worker and every node's worker pool;
    table entries per process (driver and workers).

    Raises:
        AssertionError: an invariant does not hold in some process (the message names it).
    """
    runtime = _runtime()
    core = runtime.core
    core.validate()
    assert core.validation_failure is None, core.validation_failure
    with core.lock:
        sizes = {core.proc: len(core.table.entries)}
    errors: list[str] = []
    for worker in list(runtime.nodes.workers):
        reply = _ask(core, worker, {"t": "validate"})
        if reply is None:
            continue
        if reply["error"]:
            errors.append(reply["error"])
        sizes[worker] = int(reply["entries"])
    for node in list(runtime.nodes.alive):  # each node manager checks its worker pool
        reply = _ask(core, node, {"t": "validate"})
        if reply is not None and reply["error"]:
            errors.append(reply["error"])
    assert not errors, "; ".join(errors)
    return sizes


def session_tables() -> dict[str, int]:
    """Entries left in each process's reference table and objects left in each node's store
    (keys: process ids, and ``"store:<node>"``)."""
    runtime = _runtime()
    sizes = validate_session()
    for node in list(runtime.nodes.alive):
        reply = _ask(runtime.core, node, {"t": "stats"})
        if reply is not None:
            sizes[f"store:{node}"] = int(reply["num_objects"])
    return sizes


def wait_session_empty(timeout: float = 1.0) -> None:
    """Return once every reference table and every store is empty.

    Raises:
        AssertionError: something is still held after ``timeout`` seconds (the message says
            where).
    """
    deadline = time.monotonic() + timeout
    while True:
        left = {k: v for k, v in session_tables().items() if v}
        if not left:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"still held {timeout} s after every ref was dropped: {left}")
        time.sleep(0.02)
