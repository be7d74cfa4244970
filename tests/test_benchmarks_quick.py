"""The benchmark harness runs (quick mode, memlab only) and prints its table; speed is never
asserted here: targets live in ``benchmarks/``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmark_prints_table(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for workload in (
        "tasks sync",
        "tasks async",
        "put calls",
        "get calls",
        "put gigabytes",
        "get large",
        "pass large arg",
        "chain 100",
        "startup",
        "idle memory",
    ):
        assert workload in proc.stdout, workload
    report = json.loads((tmp_path / "latest.json").read_text())
    assert report["quick"] is True and report["results"]["tasks sync"]["memlab"]
