"""The worker's side of ``%%remote``: run a cell's code with the notebook's values it reads.

Imported on workers, so it imports nothing of IPython. The cell runs in a fresh namespace named
``__main__`` holding the shipped values (refs arrive resolved: the task's dependencies) and the
modules it reads, imported by name. Its source is registered with ``linecache`` under the
cell's label, so a traceback shows ``Cell In[7]`` lines with their code. Its stdout and stderr
stream to the kernel as it runs, like any task's (``memlab.runtime.coreworker.output_channel``),
and land in the cell's own output area however late they arrive (``memlab.jupyter.output_routing``).
"""

from __future__ import annotations

import ast
import builtins
import importlib
import linecache
from typing import Any

from memlab.runtime.coreworker import task_spec


def _cell_label(filename: str) -> str | None:
    return filename if filename.startswith("Cell In[") else None


def run_cell(
    code: str,
    label: str,
    names: tuple[str, ...],
    modules: dict[str, str],
    outputs: tuple[str, ...],
    *values: Any,
) -> tuple[Any, ...]:
    """Run ``code``; return the values of ``outputs``, the last expression's value and None
    (a small last result the kernel waits on to learn that the cell finished)."""
    ns: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    ns.update(zip(names, values))
    for name, module in modules.items():
        ns[name] = importlib.import_module(module)
    linecache.cache[label] = (len(code), None, code.splitlines(True), label)
    if task_spec.filename_translator() is None:  # refs made here say "Cell In[7], line 3"
        task_spec.set_filename_translator(_cell_label)
    tree = ast.parse(code, label)
    last = None
    tail = tree.body[-1] if tree.body else None
    if isinstance(tail, ast.Expr):
        tree.body.pop()
        last = ast.Expression(tail.value)
    exec(compile(tree, label, "exec"), ns)
    value = None if last is None else eval(compile(last, label, "eval"), ns)
    return (*[ns.get(name) for name in outputs], value, None)
