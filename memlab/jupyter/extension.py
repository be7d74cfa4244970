"""What ``%load_ext memlab`` installs, and what unloading it removes.

* the ``%memlab`` and ``%%remote`` magics (``magics``);
* call sites named ``Cell In[N], line L`` (``callsite``);
* the HTML repr of refs and of the runtime (``reprs``);
* progress bars and interrupt handling for long ``memlab.get``/``wait`` (``progress``);
* task output in the cell that submitted the task (``output_routing``).
"""

from __future__ import annotations

from typing import Any

from memlab import api
from memlab.jupyter import callsite, holders, output_routing, progress, reprs
from memlab.jupyter.magics import MemlabMagics
from memlab.runtime.coreworker import object_ref

_RUNTIME_TYPE = ("memlab.runtime.driver.runtime", "Runtime")
_loaded: dict[int, MemlabMagics] = {}


def load(shell: Any) -> None:
    if id(shell) in _loaded:  # loaded twice by hand: once is enough
        return
    magics = MemlabMagics(shell)
    shell.register_magics(magics)
    # Names change with every cell: a scan never outlives the cell it was made in.
    shell.events.register("post_execute", magics.holders.invalidate)
    _loaded[id(shell)] = magics
    callsite.install(shell)
    reprs.holder_index = magics.holders
    holders.set_active(magics.holders)
    object_ref.set_html_renderer(reprs.ref_html)
    html = shell.display_formatter.formatters["text/html"]
    html.for_type_by_name(*_RUNTIME_TYPE, reprs.runtime_repr_html)
    api.set_blocking_hook(progress.BlockingProgress(in_kernel=_in_kernel(shell)))
    output_routing.install(shell)


def unload(shell: Any) -> None:
    magics = _loaded.pop(id(shell), None)
    if magics is not None:
        shell.events.unregister("post_execute", magics.holders.invalidate)
    api.set_blocking_hook(None)
    output_routing.uninstall()
    object_ref.set_html_renderer(None)
    reprs.holder_index = None
    holders.set_active(None)
    callsite.uninstall()
    html = shell.display_formatter.formatters["text/html"]
    html.deferred_printers.pop(_RUNTIME_TYPE, None)
    try:
        from memlab.runtime.driver.runtime import Runtime

        html.pop(Runtime, None)
    except ImportError:
        pass
    for kind in ("line", "cell"):
        shell.magics_manager.magics[kind].pop({"line": "memlab", "cell": "remote"}[kind], None)


def _in_kernel(shell: Any) -> bool:
    """A Jupyter kernel (widgets can render) rather than a terminal IPython."""
    return getattr(shell, "kernel", None) is not None
