"""The notebook layer: ``%load_ext memlab`` magics, rich reprs, progress and holder attribution.

Front ends read ``memlab.state`` and the public API only. Importing this package is cheap and
imports no IPython: the extension's modules load when IPython calls
``load_ipython_extension``::

    %load_ext memlab
    %memlab start --workers 2
    %memlab refs
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_ipython_extension", "unload_ipython_extension"]


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%memlab`` and ``%%remote`` and the notebook's reprs (``%load_ext memlab``)."""
    from memlab.jupyter.extension import load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """Undo ``load_ipython_extension``: the magics, call-site names and hooks go."""
    from memlab.jupyter.extension import unload

    unload(ipython)
