"""The notebooks in notebooks/: each runs top to bottom in a fresh kernel, and none is
committed with outputs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from tests.notebooks.runner import NOTEBOOKS, execute

EXPECTED = [
    "01-quickstart",
    "02-ownership-and-memory",
    "03-fault-tolerance",
    "04-actors",
    "05-zero-copy-numpy-and-arrow",
]
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))


def test_the_notebook_series_is_complete() -> None:
    assert [p.stem for p in PATHS] == EXPECTED


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {i} has outputs; strip them"
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"
    assert "widgets" not in nb.metadata, f"{path.name} keeps widget state; strip it"


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebook_runs_top_to_bottom(path: Path) -> None:
    run = execute(path)
    executed = [c for c in run.nb.cells if c.cell_type == "code"]
    assert executed and all(c.execution_count for c in executed), "every code cell ran"
    assert run.session_pids, "the notebook started a memlab session in its kernel"
    print(f"{path.name}: {run.seconds:.1f} s")
