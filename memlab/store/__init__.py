"""The node's plasma-style shared-memory object store.

Layers, bottom up:
    ``Allocator``   pure best-fit bookkeeping of byte ranges (no I/O)
    ``Arena``       one ``/dev/shm`` file mapped ``MAP_SHARED`` by every process of a node
    ``SpillDir``    files that hold primary copies pushed out of a full arena
    ``ObjectStore`` the node manager's directory: create/seal/get/release/delete, pins,
                    LRU eviction of secondary copies, spilling and restoring primaries

Only the node manager holds an ``ObjectStore``; workers and the driver ``Arena.attach`` the
same file and read or write at the offsets the node manager hands out.
"""

from memlab.store.allocator import Allocator
from memlab.store.arena import Arena
from memlab.store.object_store import RELEASE_MEMORY_MIN_BYTES, ObjectStore
from memlab.store.spill import SpillDir

__all__ = ["RELEASE_MEMORY_MIN_BYTES", "Allocator", "Arena", "ObjectStore", "SpillDir"]
