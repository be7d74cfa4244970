"""Constants and small lookups shared by the integration tests (fixtures live in conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass

import memlab
import memlab.state

BIG = 50_000  # float64 elements: 400 kB, above the inline threshold, so it lives in a store
DEADLINE = 20.0  # seconds a test waits for what must happen, under a loaded machine too


def primary(ref: memlab.ObjectRef) -> str | None:
    """The node holding the primary copy of a ready object, per ``memlab.state``."""
    for rec in memlab.state.objects():
        if rec["object_id"] == ref.hex():
            return rec["locations"][0] if rec["locations"] else None
    return None


@dataclass(frozen=True)
class Death:
    """How a worker killed by ``how`` must be reported."""

    exitcode: int | None
    signal: int | None
    says: str  # text the crash message (or an actor's death reason) must contain


SIGKILL = Death(None, 9, "killed by SIGKILL")
EXIT_3 = Death(3, None, "exited with code 3")
SIGSEGV = Death(None, 11, "killed by SIGSEGV")
DEATHS = {"sigkill": SIGKILL, "exit": EXIT_3, "segfault": SIGSEGV}  # by crash mode


def wait_primary(ref: memlab.ObjectRef, node: str) -> None:
    """Return once ``memlab.state`` shows the primary copy of ``ref`` on ``node``."""
    from memlab.testing import wait_for

    wait_for(lambda: primary(ref) == node, DEADLINE, message=f"the primary copy on {node}")
