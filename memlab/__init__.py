"""memlab: distributed futures with ownership over a shared-memory object store, made visible.

The public surface follows Ray's names so code and habits carry over::

    import memlab
    memlab.init(num_workers=2)

    @memlab.remote
    def square(x):
        return x * x

    memlab.get([square.remote(i) for i in range(4)])   # [0, 1, 4, 9]
"""

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
from memlab.runtime.object_ref import ObjectRef

__version__ = "0.1.0"

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
