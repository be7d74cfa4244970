"""What a ``%%remote`` cell reads from the notebook and what it assigns, found statically.

A name is *read from the notebook* when some top-level statement uses it (directly, or inside a
function, class or comprehension it defines, as a global) before any earlier statement bound
it; ``x = x + 1`` reads ``x``. Names the cell binds at top level (assignments, imports, ``def``,
``class``, ``for`` targets, ``with … as``) are what ``-o`` may bind. The last statement, when it
is an expression, is the cell's value. Cheap: one ``ast`` parse and one ``symtable``.
"""

from __future__ import annotations

import ast
import builtins
import symtable
from dataclasses import dataclass


@dataclass(frozen=True)
class CellNames:
    reads: tuple[str, ...]  # in first-use order
    assigns: frozenset[str]
    has_value: bool  # the last statement is an expression


def analyze(code: str, filename: str = "<cell>") -> CellNames:
    """Names ``code`` reads before binding them, names it binds, and whether it has a value.

    Raises:
        SyntaxError: The cell does not parse (as it would when run).
    """
    tree = ast.parse(code, filename)
    nested = _nested_globals(code, filename)
    bound: set[str] = set()
    reads: dict[str, None] = {}
    for stmt in tree.body:
        events: list[tuple[bool, str]] = []
        _visit(stmt, events)
        end = getattr(stmt, "end_lineno", stmt.lineno) or stmt.lineno
        events += [(True, name) for line, name in nested if stmt.lineno <= line <= end]
        for is_load, name in events:
            if not is_load:
                bound.add(name)
            elif name not in bound and name not in reads:
                reads[name] = None
    has_value = bool(tree.body) and isinstance(tree.body[-1], ast.Expr)
    return CellNames(tuple(n for n in reads if not _is_builtin(n)), frozenset(bound), has_value)


def _is_builtin(name: str) -> bool:
    return hasattr(builtins, name)


_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _visit(node: ast.AST, events: list[tuple[bool, str]]) -> None:
    """Append ``(is_load, name)`` for module-scope names, in evaluation order: an assignment's
    value before its targets, a loop's iterable before its target before its body."""
    child: ast.AST
    if isinstance(node, ast.Name):
        events.append((isinstance(node.ctx, ast.Load), node.id))
    elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.NamedExpr)):
        if node.value is not None:
            _visit(node.value, events)
        for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
            _visit(target, events)
    elif isinstance(node, ast.AugAssign):
        if isinstance(node.target, ast.Name):
            events.append((True, node.target.id))  # x += 1 reads x first
        _visit(node.value, events)
        _visit(node.target, events)
    elif isinstance(node, (ast.For, ast.AsyncFor)):
        _visit(node.iter, events)
        _visit(node.target, events)
        for child in node.body + node.orelse:
            _visit(child, events)
    elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        # decorators, defaults and bases run at module scope; the body is a nested scope
        for child in node.decorator_list:
            _visit(child, events)
        if isinstance(node, ast.ClassDef):
            for child in node.bases + [k.value for k in node.keywords]:
                _visit(child, events)
        else:
            for child in node.args.defaults + [d for d in node.args.kw_defaults if d]:
                _visit(child, events)
        events.append((False, node.name))
    elif isinstance(node, ast.Lambda):
        for child in node.args.defaults:
            _visit(child, events)
    elif isinstance(node, _COMPREHENSIONS):
        _visit(node.generators[0].iter, events)  # the rest is the comprehension's own scope
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
        events += [(False, (a.asname or a.name).split(".")[0]) for a in node.names if a.name != "*"]
    elif isinstance(node, ast.Global):
        events += [(True, name) for name in node.names]
    else:
        for child in ast.iter_child_nodes(node):
            _visit(child, events)


def _nested_globals(code: str, filename: str) -> list[tuple[int, str]]:
    """``(line, name)`` of each global name a nested scope (function, class, comprehension)
    reads: those come from the notebook when the scope runs."""
    found: list[tuple[int, str]] = []
    todo = list(symtable.symtable(code, filename, "exec").get_children())
    while todo:
        table = todo.pop()
        for sym in table.get_symbols():
            if sym.is_referenced() and sym.is_global() and not sym.is_assigned():
                found.append((table.get_lineno(), sym.get_name()))
        todo += table.get_children()
    return found
