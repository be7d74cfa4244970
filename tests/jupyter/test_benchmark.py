"""``benchmarks/notebook.py --quick`` runs and prints its rows (speed is never asserted here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_notebook_benchmark_runs() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "notebook.py"), "--quick", "--repeat", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for row in (
        "%memlab start to ready",
        "holder scan, 500 names + 500 refs",
        "%memlab refs, 500 refs",
        "%%remote --block round trip",
        "kernel CPU, + a %%remote status line live",
    ):
        assert row in proc.stdout, row
