"""The core worker is wired by composition, checked over the source of ``memlab/runtime/`` by AST.

Three rules of issue 12: no class in ``coreworker/`` inherits from another service class (no
mixins); no module reaches into a private member (``x._name``) of an object whose class lives in
another module; nothing outside ``coreworker/`` assigns attributes onto the core (it installs
behaviour through ``set_worker_hooks``, ``attach_store``, ``set_nodes``, ``register``). Each
checker is also run on a small bad source, so a checker that finds nothing is not mistaken for
clean code.
"""

from __future__ import annotations

import ast
from pathlib import Path

RUNTIME = Path(__file__).resolve().parents[2] / "memlab" / "runtime"
COREWORKER = RUNTIME / "coreworker"

# Bases that declare a shape, not behaviour: inheriting from them is not a mixin.
ALLOWED_BASES = {"Protocol", "NamedTuple", "Exception", "Enum", "IntEnum", "TypedDict"}

# Private members of the standard library that are its documented interface.
STDLIB_PRIVATE = {("os", "_exit"), ("sys", "_getframe")}

# (module relative to runtime/, expression) -> why the access is necessary.
PRIVATE_ACCESS_ALLOWED = {
    ("coreworker/actors.py", "handle._actor_id"): (
        "ActorHandle (memlab/actor.py) maps every public attribute to an actor method through "
        "__getattr__: a public actor_id would shadow a user's method of that name"
    ),
}


def runtime_modules() -> list[Path]:
    return sorted(RUNTIME.rglob("*.py"))


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def mixin_bases(tree: ast.Module, service_classes: set[str]) -> list[str]:
    """Classes in ``tree`` that inherit from one of ``service_classes``, as ``Class(Base)``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                name = ast.unparse(base).split("[")[0].rsplit(".", 1)[-1]
                if name in service_classes and name not in ALLOWED_BASES:
                    found.append(f"{node.name}({name})")
    return found


def own_private_names(tree: ast.Module) -> set[str]:
    """Private attributes that classes defined in this module set on ``self``: the module's own."""
    names = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in ("self", "cls")
            and node.attr.startswith("_")
        ):
            names.add(node.attr)
    return names


def foreign_private_accesses(tree: ast.Module) -> list[str]:
    """``x._name`` where ``x`` is not ``self``/``cls`` and ``_name`` is not this module's own."""
    own = own_private_names(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        attr = node.attr
        if not attr.startswith("_") or (attr.startswith("__") and attr.endswith("__")):
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and (
            owner.id in ("self", "cls") or (owner.id, attr) in STDLIB_PRIVATE
        ):
            continue
        if attr in own:
            continue
        found.append(ast.unparse(node))
    return found


def is_core(expr: ast.expr) -> bool:
    """``core``, ``self.core``, ``x._core``, ``context.core``: an expression naming the core."""
    if isinstance(expr, ast.Name):
        return expr.id in ("core", "_core")
    if isinstance(expr, ast.Attribute):
        return expr.attr in ("core", "_core")
    return False


def core_assignments(tree: ast.Module) -> list[str]:
    """Attribute assignments onto the core (``core.x = ...``) and ``setattr(core, ...)``."""
    found = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for target in targets:
            for part in ast.walk(target):
                if (
                    isinstance(part, ast.Attribute)
                    and isinstance(part.ctx, ast.Store)
                    and is_core(part.value)
                ):
                    found.append(ast.unparse(part))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "setattr"
            and node.args
            and is_core(node.args[0])
        ):
            found.append(ast.unparse(node))
    return found


def coreworker_classes() -> set[str]:
    names = set()
    for path in sorted(COREWORKER.glob("*.py")):
        for node in ast.walk(parse(path)):
            if isinstance(node, ast.ClassDef):
                names.add(node.name)
    return names


def test_no_class_in_coreworker_inherits_from_a_coreworker_service() -> None:
    services = coreworker_classes()
    found = {
        str(path.relative_to(RUNTIME)): bases
        for path in runtime_modules()
        if (bases := mixin_bases(parse(path), services))
    }
    assert found == {}, f"mixins (compose the service instead): {found}"


def test_no_module_reaches_into_another_modules_private_members() -> None:
    found = {}
    for path in runtime_modules():
        module = str(path.relative_to(RUNTIME))
        accesses = [
            access
            for access in foreign_private_accesses(parse(path))
            if (module, access) not in PRIVATE_ACCESS_ALLOWED
        ]
        if accesses:
            found[module] = accesses
    assert found == {}, f"private members reached from another module: {found}"


def test_the_allow_list_has_no_stale_entries() -> None:
    for module, access in PRIVATE_ACCESS_ALLOWED:
        assert access in foreign_private_accesses(parse(RUNTIME / module)), (module, access)


def test_nothing_outside_coreworker_assigns_attributes_onto_the_core() -> None:
    found = {
        str(path.relative_to(RUNTIME)): assignments
        for path in runtime_modules()
        if COREWORKER not in path.parents and (assignments := core_assignments(parse(path)))
    }
    assert found == {}, f"attributes patched onto the core from outside: {found}"


BAD = """
class Housekeeping:
    pass

class CoreWorker(OwnerService, Housekeeping):
    def __init__(self, submitter):
        self._table = {}
        submitter._push_all()
        self._table.clear()

def install(core, store):
    core.store = store
    core.busy += 1
    setattr(core, "on_flush", None)
    runtime.core.nodes = []
"""


def test_the_checkers_find_each_kind_of_violation() -> None:
    tree = ast.parse(BAD)
    assert mixin_bases(tree, {"OwnerService", "Housekeeping"}) == [
        "CoreWorker(OwnerService)",
        "CoreWorker(Housekeeping)",
    ]
    assert foreign_private_accesses(tree) == ["submitter._push_all"]
    assert sorted(core_assignments(tree)) == sorted(
        ["core.store", "core.busy", "setattr(core, 'on_flush', None)", "runtime.core.nodes"]
    )
