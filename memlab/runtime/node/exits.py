"""How a worker's process ended, in the words the node manager broadcasts with ``worker_died``.

The node manager is the only process that sees a worker's exit status (it is the parent). It
turns ``Popen.returncode`` into the exit code or signal, and a cause owners show to users: the
likely cause of a crash (the same clause ``WorkerCrashedError`` puts in its message, so the
two never disagree), or "retired" for a worker the pool let go (no crash, nothing to retry).

The clause itself stays in :mod:`memlab.exceptions` (``WorkerCrashedError.describe_exit``):
the public error rebuilds its message from its fields when it is unpickled in another
process, and ``exceptions`` is the bottom layer, so it cannot import from the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass

from memlab.exceptions import WorkerCrashedError

__all__ = ["RETIRED_CAUSE", "WorkerExit"]

RETIRED_CAUSE = "retired: it idled while the pool was above num_workers"


@dataclass(frozen=True, slots=True)
class WorkerExit:
    """One worker's end: exit code or signal (one of them is None) and its cause."""

    exitcode: int | None
    signal: int | None
    cause: str

    @classmethod
    def from_returncode(cls, returncode: int, retired: bool) -> WorkerExit:
        """``returncode`` as ``Popen`` reports it: negative means killed by that signal."""
        exitcode, sig = (None, -returncode) if returncode < 0 else (returncode, None)
        cause = RETIRED_CAUSE if retired else WorkerCrashedError.describe_exit(exitcode, sig)
        return cls(exitcode, sig, cause)
