"""The node's shared-memory arena: one file in ``/dev/shm`` mapped ``MAP_SHARED`` by every process.

Owns one mapping of the arena file in this process. The node manager ``create``s the file;
workers and the driver ``attach`` to it, and all of them see the same bytes at the same
offsets. What lives at which offset is decided elsewhere (``memlab.store.object_store``);
this module only maps, bounds-checks, and hands out views.

Invariants:
    * the file is created exclusively (``O_EXCL``) with mode 0600, so two sessions never share
      an arena and other users cannot read it;
    * every view lies inside ``[0, capacity)`` (checked, ``ValueError`` otherwise);
    * ``close()`` never fails because views are still alive: the mapping is then left to the
      garbage collector, which unmaps it when the last view dies.

The file is sparse (``ftruncate``), so untouched capacity costs no memory. If ``/dev/shm``
fills up while pages are first written, the kernel sends SIGBUS; ``create`` refuses a capacity
larger than the free space of the file system to make that unlikely.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy

__all__ = ["Arena"]

_PAGE = mmap.PAGESIZE


class Arena:
    """A shared-memory mapping of one arena file.

    Use ``Arena.create`` (owner) or ``Arena.attach`` (every other process), not the
    constructor.
    """

    def __init__(self, path: str, capacity: int, mapping: mmap.mmap) -> None:
        self.path = path
        self.capacity = capacity
        self._mmap: mmap.mmap | None = mapping

    @classmethod
    def create(cls, path: str, capacity: int) -> Arena:
        """Create the arena file (exclusive, mode 0600, sparse) and map it.

        Args:
            path: File to create, normally under ``/dev/shm``.
            capacity: Size in bytes (> 0).

        Raises:
            ValueError: ``capacity`` is not positive.
            FileExistsError: ``path`` exists (another session's arena or a leftover).
            OSError: the file system has less free space than ``capacity`` (ENOSPC), or
                creating/mapping failed.
        """
        if capacity <= 0:
            raise ValueError(f"arena capacity must be > 0 bytes, got {capacity}")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            vfs = os.fstatvfs(fd)
            available = vfs.f_bavail * vfs.f_frsize
            if capacity > available:
                raise OSError(
                    errno.ENOSPC,
                    f"arena of {capacity} bytes does not fit in the {available} free bytes of "
                    f"the file system holding {path}; lower object_store_memory or free space "
                    "in /dev/shm",
                )
            os.ftruncate(fd, capacity)
            mapping = _map(fd, capacity)
        except BaseException:
            os.close(fd)
            _unlink_quietly(path)
            raise
        os.close(fd)
        return cls(path, capacity, mapping)

    @classmethod
    def attach(cls, path: str) -> Arena:
        """Map an existing arena file; its size is the file's size.

        Raises:
            FileNotFoundError: no arena at ``path`` (the node manager is gone or never made it).
            ValueError: the file is empty, so it is not an arena.
        """
        fd = os.open(path, os.O_RDWR)
        try:
            capacity = os.fstat(fd).st_size
            if capacity <= 0:
                raise ValueError(f"{path} is empty, not an arena; check the arena path")
            mapping = _map(fd, capacity)
        finally:
            os.close(fd)
        return cls(path, capacity, mapping)

    def __repr__(self) -> str:
        state = "closed" if self._mmap is None else "open"
        return f"Arena(path={self.path!r}, capacity={self.capacity}, {state})"

    @property
    def closed(self) -> bool:
        """Whether ``close()`` has been called."""
        return self._mmap is None

    def view(self, offset: int, size: int) -> memoryview:
        """A writable, zero-copy view of ``[offset, offset + size)``.

        Raises:
            ValueError: the region is outside the arena, or the arena is closed.
        """
        return memoryview(self._checked(offset, size))[offset : offset + size]

    def readonly_array(self, offset: int, size: int) -> numpy.ndarray:
        """A zero-copy ``uint8`` array over the region that cannot be made writable.

        The array is built on a read-only view, so even ``arr.flags.writeable = True`` fails.

        Raises:
            ValueError: the region is outside the arena, or the arena is closed.
        """
        import numpy as np  # numpy only where arrays are wanted; the node manager rarely is

        mapping = self._checked(offset, size)
        readonly = memoryview(mapping)[offset : offset + size].toreadonly()
        return np.frombuffer(readonly, dtype=np.uint8)

    def release_memory(self, offset: int, size: int) -> None:
        """Give the pages of a freed region back to the OS (best effort).

        Only whole pages inside the region are released (``MADV_REMOVE`` punches a hole in the
        tmpfs file, so every process's mapping reads zeros there afterwards). Errors are
        ignored: the region stays valid, it just keeps using memory.
        """
        mapping = self._checked(offset, size)
        start = -(-offset // _PAGE) * _PAGE
        end = (offset + size) // _PAGE * _PAGE
        advice = getattr(mmap, "MADV_REMOVE", None)
        if end <= start or advice is None:
            return
        # e.g. not tmpfs (EOPNOTSUPP): keeping the pages is harmless
        with contextlib.suppress(OSError):
            mapping.madvise(advice, start, end - start)

    def close(self) -> None:
        """Unmap the arena in this process (idempotent; does not remove the file).

        If views or arrays over the arena are still alive the mapping cannot be unmapped now;
        it is then dropped from this object and unmapped by the garbage collector when the
        last view dies.
        """
        mapping, self._mmap = self._mmap, None
        if mapping is None:
            return
        # BufferError: views are still exported; the GC unmaps once they are gone.
        with contextlib.suppress(BufferError):
            mapping.close()

    def unlink(self) -> None:
        """Remove the arena file (idempotent). Existing mappings stay valid until closed."""
        _unlink_quietly(self.path)

    def _checked(self, offset: int, size: int) -> mmap.mmap:
        mapping = self._mmap
        if mapping is None:
            raise ValueError(f"arena {self.path} is closed; attach it again to read or write")
        if offset < 0 or size < 0 or offset + size > self.capacity:
            raise ValueError(
                f"region [{offset}, {offset + size}) is outside the arena [0, {self.capacity}); "
                "use an offset and size handed out by the object store"
            )
        return mapping


def _map(fd: int, capacity: int) -> mmap.mmap:
    kwargs: dict[str, Any] = {}
    if sys.version_info >= (3, 13):
        # Without this, mmap keeps a dup of the fd open for as long as the mapping lives.
        kwargs["trackfd"] = False
    return mmap.mmap(
        fd,
        capacity,
        flags=mmap.MAP_SHARED,
        prot=mmap.PROT_READ | mmap.PROT_WRITE,
        **kwargs,
    )


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
