"""The one running runtime of this process, for modules that read it (``memlab.state``, front ends).

Owns a single module-level slot. The runtime sets it on ``init`` and clears it on ``shutdown``;
readers never keep the object beyond one call, so a shutdown between two calls is seen at once.
"""

from __future__ import annotations

from typing import Any

_runtime: Any = None


def set_runtime(runtime: Any) -> None:
    global _runtime
    _runtime = runtime


def current_runtime() -> Any:
    """The running runtime, or ``None`` when ``memlab.init()`` has not been called."""
    return _runtime


def current_collector() -> Any:
    """The driver's event collector, or ``None`` when no runtime runs in this process."""
    rt = _runtime
    return None if rt is None else getattr(rt, "collector", None)
