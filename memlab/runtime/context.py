"""This process's core worker and (in the driver) its runtime: the two process-wide slots.

Every process runs one core worker (the driver and each worker); the driver also runs the
``Runtime`` that started the session. The core sets its slot at start and clears it at close;
the runtime likewise. Readers look the slots up on every call and never keep what they read, so
a shutdown between two calls is seen at once.

``core`` is a plain module attribute, not behind a function, because ``ObjectRef.__del__``
reads it on every dropped ref.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from memlab.exceptions import RuntimeNotStartedError

if TYPE_CHECKING:
    from memlab.runtime.coreworker.core_worker import CoreWorker
    from memlab.runtime.events.collector_client import CollectorClient


class Runtime(Protocol):
    """What the public API and ``memlab.state`` use of the driver's runtime (which is
    :class:`memlab.runtime.driver.runtime.Runtime`; this layer does not import the driver)."""

    @property
    def options(self) -> Any: ...

    @property
    def collector(self) -> CollectorClient | None: ...

    def shutdown(self) -> None: ...


core: CoreWorker | None = None
runtime: Runtime | None = None


def set_core(value: CoreWorker | None) -> None:
    global core
    core = value


def current_core() -> CoreWorker | None:
    """This process's core worker, or ``None`` before ``init`` (or outside a worker)."""
    return core


def require_core(operation: str) -> CoreWorker:
    """This process's core worker for ``operation`` (e.g. ``"get()"``), or the error that says
    to call ``memlab.init()`` first."""
    running = core
    if running is None:
        raise RuntimeNotStartedError(f"memlab.{operation}" if "(" not in operation else operation)
    return running


def set_runtime(value: Runtime | None) -> None:
    global runtime
    runtime = value


def current_runtime() -> Runtime | None:
    """The running runtime, or ``None`` when ``memlab.init()`` has not been called."""
    return runtime


def current_collector() -> CollectorClient | None:
    """The driver's event collector, or ``None`` when no runtime runs in this process."""
    rt = runtime
    return None if rt is None else rt.collector
