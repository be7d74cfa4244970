"""Run a notebook top to bottom in a fresh kernel, as a reader would, and check what it left.

``execute`` starts a kernel with the given interpreter (default: this one, so the kernel sees
the project's venv), runs every cell with nbclient (an error output fails the run), and then
checks that the memlab session the notebook started went with the kernel: its processes exited
and no file named after the kernel's pid remains in /dev/shm or the temporary directory.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import psutil
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

from memlab.testing.leaks import session_processes, wait_for

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
CELL_TIMEOUT = 120  # seconds; a notebook as a whole must finish well within a minute


@dataclass
class Run:
    """What a run produced: the executed notebook, its wall time and the session's pids."""

    nb: Any
    seconds: float
    kernel_pid: int
    session_pids: set[int] = field(default_factory=set)


def _kernel_manager(python: str) -> type[AsyncKernelManager]:
    """A kernel manager class whose kernel is ``python -m ipykernel_launcher`` (nbclient makes
    and owns the instance, so it also shuts the kernel down and closes its sockets)."""

    class InterpreterKernel(AsyncKernelManager):
        @property
        def kernel_spec(self) -> KernelSpec:
            return KernelSpec(
                argv=[python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                display_name="memlab test kernel",
                language="python",
            )

    return InterpreterKernel


def leftover_files(pid: int) -> list[str]:
    """Files of memlab sessions started by process ``pid`` (their names carry it)."""
    prefix = f"memlab-{pid}-"
    found = []
    for base in {"/dev/shm", tempfile.gettempdir(), "/tmp"}:
        if os.path.isdir(base):
            found += [os.path.join(base, f) for f in os.listdir(base) if f.startswith(prefix)]
    return found


def error_outputs(nb: Any) -> list[str]:
    return [
        f"cell {i}: {o.get('ename')}: {o.get('evalue')}"
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for o in cell.get("outputs", [])
        if o.output_type == "error"
    ]


def execute(path: Path, python: str = sys.executable) -> Run:
    """Execute the notebook at ``path``; raise if a cell fails or the session outlives it."""
    nb = nbformat.read(path, as_version=4)
    run = Run(nb=nb, seconds=0.0, kernel_pid=0)
    client = NotebookClient(
        nb,
        kernel_manager_class=_kernel_manager(python),
        timeout=CELL_TIMEOUT,
        allow_errors=False,
        resources={"metadata": {"path": str(path.parent)}},
    )

    def record(**_: Any) -> None:
        # The session's processes are the kernel's children; note them while it lives.
        run.kernel_pid = client.km.provisioner.process.pid  # type: ignore[union-attr]
        run.session_pids |= {p.pid for p in session_processes(run.kernel_pid)}

    client.on_cell_complete = record
    start = time.monotonic()
    client.execute()
    run.seconds = time.monotonic() - start
    errors = error_outputs(nb)
    assert not errors, f"{path.name}: cells failed: {errors}"
    # The kernel is gone; the watchdog takes its session down within seconds.
    wait_for(
        lambda: (
            not [p for p in run.session_pids if _alive(p)] and not leftover_files(run.kernel_pid)
        ),
        timeout=15,
        message=f"{path.name}: the kernel's memlab processes and files were removed",
    )
    return run


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
