"""A driver SIGKILLed at any point of ``memlab.init()`` leaves nothing behind: whichever of its
processes already runs (collector, node managers) cleans up what the session made.

The kill is placed, not timed: ``MEMLAB_TEST_KILL_DRIVER_AT`` names a point of start-up, and
the driver (or, for points inside a node manager's start-up, the node manager) SIGKILLs the
driver exactly there. Nothing but the session's own processes may clean up: the session lives
in a private TMPDIR, out of reach of other sessions' reapers.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import sys

import psutil
import pytest

from memlab.runtime.session import KILL_POINTS
from memlab.testing.leaks import SHM_DIR, wait_for

DEADLINE = 10.0
INIT = (
    "import memlab\n"
    "memlab.init(num_workers=2, num_nodes=2, object_store_memory=128 << 20)\n"
    "print('init returned', flush=True)\n"
)


def _left_by(pid: int, tmp: str) -> tuple[list[int], list[str]]:
    """Processes and files of every session of driver ``pid`` (names carry the pid)."""
    mark = f"memlab-{pid}-"
    files = glob.glob(os.path.join(tmp, mark + "*")) + glob.glob(os.path.join(SHM_DIR, mark + "*"))
    procs = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            if mark in " ".join(p.cmdline()) or mark in p.environ().get("MEMLAB_SESSION_DIR", ""):
                procs.append(p.pid)
    return procs, files


def _force_cleanup(pid: int, tmp: str) -> None:
    procs, files = _left_by(pid, tmp)
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    for f in files:
        if os.path.isdir(f):
            shutil.rmtree(f, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f)


@pytest.mark.parametrize("point", KILL_POINTS)
def test_driver_killed_during_init_leaves_nothing(private_tmp: str, point: str) -> None:
    env = {**os.environ, "TMPDIR": private_tmp, "MEMLAB_TEST_KILL_DRIVER_AT": point}
    proc = subprocess.Popen(
        [sys.executable, "-c", INIT], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL, (point, proc.returncode, out)
        assert "init returned" not in out  # killed inside init, where the point says
        try:
            wait_for(lambda: _left_by(proc.pid, private_tmp) == ([], []), DEADLINE)
        except AssertionError:
            raise AssertionError(
                f"a driver killed at {point!r} left (processes, files) "
                f"{_left_by(proc.pid, private_tmp)}"
            ) from None
    finally:
        proc.kill()
        _force_cleanup(proc.pid, private_tmp)
