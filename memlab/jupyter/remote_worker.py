"""The worker's side of ``%%remote``: run a cell's code with the notebook's values it reads.

Imported on workers, so it imports nothing of IPython. The cell runs in a fresh namespace named
``__main__`` holding the shipped values (refs arrive resolved: the task's dependencies) and the
modules it reads, imported by name. Its source is registered with ``linecache`` under the
cell's label, so a traceback shows ``Cell In[7]`` lines with their code. Its stdout and stderr
are captured and returned (or attached to the exception as ``_memlab_output``), so the kernel
prints them in the cell's own output area, however late they arrive.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import io
import linecache
import sys
from typing import Any

from memlab.runtime import task_spec

# Chunks of output: (stream name, text), in the order they were written.
Output = list[tuple[str, str]]


class _Capture(io.TextIOBase):
    def __init__(self, name: str, chunks: Output) -> None:
        self.name = name
        self.chunks = chunks

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if text:
            if self.chunks and self.chunks[-1][0] == self.name:
                self.chunks[-1] = (self.name, self.chunks[-1][1] + text)
            else:
                self.chunks.append((self.name, text))
        return len(text)


def _cell_label(filename: str) -> str | None:
    return filename if filename.startswith("Cell In[") else None


def run_cell(code: str, label: str, names: tuple[str, ...], modules: dict[str, str],
             outputs: tuple[str, ...], *values: Any) -> tuple[Any, ...]:
    """Run ``code``; return the values of ``outputs``, the last expression's value and the
    captured output chunks."""
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
    chunks: Output = []
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Capture("stdout", chunks), _Capture("stderr", chunks)
    try:
        exec(compile(tree, label, "exec"), ns)
        value = None if last is None else eval(compile(last, label, "eval"), ns)
    except BaseException as exc:
        exc._memlab_output = chunks  # type: ignore[attr-defined]  # travels with the cause
        raise
    finally:
        sys.stdout, sys.stderr = saved
    return (*[ns.get(name) for name in outputs], value, chunks)
