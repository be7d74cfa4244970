"""memlab: distributed futures with ownership over a shared-memory object store, made visible.

The public surface follows Ray's names so code and habits carry over::

    import memlab
    memlab.init(num_workers=2)

    @memlab.remote
    def square(x):
        return x * x

    memlab.get([square.remote(i) for i in range(4)])   # [0, 1, 4, 9]
"""

from typing import Any

from memlab import state
from memlab.actor import ActorHandle
from memlab.api import (
    cancel,
    get,
    get_actor,
    init,
    is_initialized,
    kill,
    put,
    remote,
    shutdown,
    wait,
)
from memlab.exceptions import (
    ActorDiedError,
    GetTimeoutError,
    MemlabError,
    ObjectLostError,
    ObjectReconstructionFailedError,
    ObjectStoreFullError,
    OwnerDiedError,
    RuntimeConflictError,
    RuntimeNotStartedError,
    SerializationError,
    StaleRefError,
    TaskCancelledError,
    TaskError,
    WorkerCrashedError,
)

# IPython looks these up on the module named by ``%load_ext memlab``; not part of __all__.
from memlab.jupyter import load_ipython_extension as load_ipython_extension
from memlab.jupyter import unload_ipython_extension as unload_ipython_extension
from memlab.runtime.coreworker.object_ref import ObjectRef

__version__ = "0.1.0"


def dashboard(names: Any = None, *, max_rate_hz: float = 10.0) -> Any:
    """Show the live dashboard widget (objects, ownership graph, recovery timeline, nodes).

    See :func:`memlab.jupyter.dashboard.dashboard`; imported on first use, so ``import memlab``
    does not import ipywidgets or anywidget.
    """
    from memlab.jupyter.dashboard import dashboard as show

    return show(names, max_rate_hz=max_rate_hz)


__all__ = [
    "ActorDiedError",
    "ActorHandle",
    "GetTimeoutError",
    "MemlabError",
    "ObjectLostError",
    "ObjectReconstructionFailedError",
    "ObjectRef",
    "ObjectStoreFullError",
    "OwnerDiedError",
    "RuntimeConflictError",
    "RuntimeNotStartedError",
    "SerializationError",
    "StaleRefError",
    "TaskCancelledError",
    "TaskError",
    "WorkerCrashedError",
    "__version__",
    "cancel",
    "dashboard",
    "get",
    "get_actor",
    "init",
    "is_initialized",
    "kill",
    "put",
    "remote",
    "shutdown",
    "state",
    "wait",
]
