"""A real IPython shell with ``%load_ext memlab`` loaded, over the module's shared runtime."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="package")
def ipython() -> Iterator[Any]:
    """The shell; the extension's hooks (call sites, progress) go after this package's tests,
    so later tests run without them."""
    from IPython.testing.globalipapp import start_ipython

    shell = start_ipython()
    shell.run_line_magic("load_ext", "memlab")
    yield shell
    if "memlab" in shell.extension_manager.loaded:
        shell.run_line_magic("unload_ext", "memlab")


@pytest.fixture
def ip(ipython: Any, rt: Any) -> Iterator[Any]:
    """The shell, with a clean namespace and history after each test (refs in it go)."""
    yield ipython
    ipython.reset(new_session=False)
    for attr in ("last_traceback", "last_value", "last_type"):
        if hasattr(sys, attr):
            setattr(sys, attr, None)


def cell(shell: Any, code: str) -> Any:
    """Run a cell as a notebook does: numbered, its value in ``Out``."""
    return shell.run_cell(code, store_history=True)


def run(shell: Any, code: str) -> Any:
    """Run a cell; fail the test with the cell's error if it raised."""
    result = cell(shell, code)
    if result.error_before_exec is not None:
        raise result.error_before_exec
    if result.error_in_exec is not None:
        raise result.error_in_exec
    return result.result
