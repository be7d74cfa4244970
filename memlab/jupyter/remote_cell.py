"""``%%remote [-o NAMES] [--block] [--timeout S] [--retries N] [--node ID]``: a cell as a task.

The cell's code runs on a worker (``remote_worker.run_cell``). The notebook names it reads
(``cell_analysis``) travel with it: ObjectRefs as the task's dependencies (the cell sees their
values), modules by name, large arrays and tables through the store (one ``memlab.put`` per
value, reused while the value lives), anything else pickled into the task. ``-o a,b`` binds
what the cell assigns to ``a`` and ``b`` as ObjectRefs; the last expression's value is bound
to ``_remote``. By default the cell returns at once with a live status line
(``remote_status``); ``--block`` (or ``--timeout``) waits and shows the value.
"""

from __future__ import annotations

import types
import weakref
from collections import deque
from typing import Any

import cloudpickle
from IPython.core.error import UsageError

import memlab
from memlab.exceptions import SerializationError
from memlab.jupyter import callsite, holders
from memlab.jupyter.cell_analysis import analyze
from memlab.jupyter.parsing import MagicParser, non_negative_float
from memlab.jupyter.remote_status import RemoteCell, render_error
from memlab.jupyter.remote_worker import run_cell

SHIP_INLINE_LIMIT = 100 * 1024  # larger values go through the store once (the inline threshold)
_NOT_SHIPPED = frozenset({"In", "Out", "get_ipython", "exit", "quit", "_remote"})
_run_cell = memlab.remote(run_cell)
# id(value) -> (weak reference to it, its ref in the store): a value read by many cells is put
# once; the entry goes with the value.
_stored: dict[int, tuple[Any, memlab.ObjectRef[Any], str]] = {}
recent: deque[RemoteCell] = deque(maxlen=16)  # the last cells submitted (tests, dashboards)


def parser() -> MagicParser:
    p = MagicParser("%%remote", "Run the cell as a task on a worker.")
    p.add_argument(
        "-o",
        "--outputs",
        default="",
        help="comma-separated names the cell assigns, bound as ObjectRefs",
    )
    p.add_argument("--block", action="store_true", help="wait and show the cell's value")
    p.add_argument(
        "--timeout",
        type=non_negative_float,
        default=None,
        help="seconds to wait (implies --block); then GetTimeoutError",
    )
    p.add_argument("--retries", type=int, default=3, help="retries if the worker dies")
    p.add_argument("--node", default=None, help="run on this node (not available yet)")
    return p


def run(shell: Any, line: str, cell: str) -> Any:
    args = parser().parse_line(line)
    if args.node is not None:
        raise UsageError(
            f"%%remote --node {args.node} needs node placement (Ray's node-affinity "
            "scheduling), which memlab's runtime does not have yet; drop --node to run the "
            "cell on any worker."
        )
    if args.retries < -1:
        raise UsageError(f"--retries must be >= 0 (or -1 for unlimited), got {args.retries}")
    if not memlab.is_initialized():
        raise UsageError("%%remote needs a running runtime; run %memlab start first.")
    number = callsite.current_cell(shell)
    label = callsite.cell_label(number)
    names = _analyze(shell, cell, label)
    wanted = [n.strip() for n in args.outputs.split(",") if n.strip()]
    missing = [n for n in wanted if n not in names.assigns]
    if missing:
        print(
            f"%%remote: the cell does not assign {', '.join(missing)}, so "
            f"{'it is' if len(missing) == 1 else 'they are'} not bound; binding "
            f"{', '.join(n for n in wanted if n not in missing) or 'nothing else'}."
        )
    outputs = tuple(n for n in wanted if n not in missing)
    shipped, values, modules = _collect(shell.user_ns, names.reads)
    fn = _run_cell.options(num_returns=len(outputs) + 2, max_retries=args.retries, name=label)
    refs = _submit_from_cell(number, fn, (cell, label, tuple(shipped), modules, outputs, *values))
    for name, ref in zip(outputs, refs):
        shell.user_ns[name] = ref
    shell.user_ns["_remote"] = refs[len(outputs)]
    remote = RemoteCell(label, refs[len(outputs)], refs[-1], outputs)
    recent.append(remote)
    if not (args.block or args.timeout is not None):
        remote.watch()
        return None
    return _block(remote, refs, args.timeout)


def _analyze(shell: Any, cell: str, label: str) -> Any:
    try:
        return analyze(cell, label)
    except SyntaxError as exc:
        where = f"{label}, line {exc.lineno}"
        if shell.transform_cell(cell).strip() != cell.strip():
            raise UsageError(
                f"%%remote runs plain Python on a worker; IPython syntax such as "
                f"%magics and !commands is not available there ({where}: "
                f"{exc.msg})"
            ) from None
        raise UsageError(f"the %%remote cell does not parse: {exc.msg} ({where})") from None


def _block(remote: RemoteCell, refs: list[memlab.ObjectRef[Any]], timeout: float | None) -> Any:
    try:  # its prints have streamed into the cell meanwhile (output_routing)
        *_, value, _ = memlab.get(refs, timeout=timeout)
    except memlab.GetTimeoutError as exc:  # raised afresh: the hook's frames are noise here
        raise memlab.GetTimeoutError(exc.timeout, exc.pending) from None
    except memlab.TaskError as exc:
        raise render_error(exc) from None
    return value


def _submit_from_cell(number: int, fn: Any, args: tuple[Any, ...]) -> list[memlab.ObjectRef[Any]]:
    # Submitted from a function compiled under the cell's own file name, so the task's call
    # site (in memlab.state and its events) is "Cell In[N], line 1", not this module.
    ns: dict[str, Any] = {"__name__": "__main__"}
    exec(
        compile(
            "submit = lambda fn, args: fn.remote(*args)", callsite.remote_filename(number), "exec"
        ),
        ns,
    )
    return list(ns["submit"](fn, args))


def _collect(
    user_ns: dict[str, Any], reads: tuple[str, ...]
) -> tuple[list[str], list[Any], dict[str, str]]:
    shipped: list[str] = []
    values: list[Any] = []
    modules: dict[str, str] = {}
    for name in reads:
        if name in _NOT_SHIPPED or name not in user_ns:
            continue
        value = user_ns[name]
        if isinstance(value, types.ModuleType):
            modules[name] = value.__name__
            continue
        shipped.append(name)
        values.append(value if isinstance(value, memlab.ObjectRef) else _ship(name, value))
    return shipped, values, modules


def _ship(name: str, value: Any) -> Any:
    """The value itself (pickled into the task), or a ref to it in the store when large."""
    size = _known_size(value)
    if size is None:
        try:
            size = len(cloudpickle.dumps(value, protocol=5))
        except Exception as exc:
            raise SerializationError(
                f"the %%remote cell reads the notebook variable {name!r}, which cannot be "
                f"pickled to send to the worker ({type(exc).__name__}: {exc}); create it "
                "inside the cell, or pass what it holds instead",
                type(value).__name__,
                f"notebook variable {name!r}",
            ) from None
    if size <= SHIP_INLINE_LIMIT:
        return value
    entry = _stored.get(id(value))
    if entry is not None and entry[0]() is value and entry[1].local_info() is not None:
        return entry[1]  # (a ref of a runtime since stopped is no longer in the table)
    ref = memlab.put(value)
    try:
        key = id(value)
        _stored[key] = (weakref.ref(value, lambda _: _stored.pop(key, None)), ref, name)
    except TypeError:  # not weakly referenceable: put again next time
        pass
    return ref


def _stored_roots() -> list[tuple[str, Any]]:
    """The store copies of notebook values, as holders: ``%%remote copy of big``."""
    return [(f"%%remote copy of {name}", ref) for _, ref, name in list(_stored.values())]


holders.register_roots(_stored_roots)


def _known_size(value: Any) -> int | None:
    """Bytes of numpy arrays, Arrow data and pandas frames without pickling them."""
    module = type(value).__module__
    if module.startswith(("numpy", "pyarrow")):
        nbytes = getattr(value, "nbytes", None)
        return nbytes if isinstance(nbytes, int) else None
    if module.startswith("pandas"):
        try:
            return int(value.memory_usage(deep=False).sum())
        except Exception:
            return None
    return None
