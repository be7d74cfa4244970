"""Spill files: where primary copies go when the arena is full.

Owns one directory (mode 0700) holding one file per spilled object, named by the object id
in hex, mode 0600. The object store decides what to spill and when; this module only moves
bytes between an arena region and a file.

Invariants:
    * a file exists only while its object is spilled: ``read_into`` is followed by ``remove``
      and ``remove_all`` cleans up at shutdown;
    * a file is written completely or not at all (a failed write removes the partial file);
    * the directory is created lazily, so a store that never spills leaves no trace.
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["SpillDir"]

_CHUNK = 8 * 1024 * 1024  # bounded syscalls: one huge write can be interrupted part-way


class SpillDir:
    """A private directory of spill files.

    Args:
        path: Directory for spill files; created (0700) on the first spill.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"SpillDir({self.path!r})"

    def file_for(self, object_id: bytes) -> str:
        """The spill file path of ``object_id``."""
        return os.path.join(self.path, object_id.hex())

    def write(self, object_id: bytes, data: memoryview) -> None:
        """Write ``data`` to the object's spill file (replacing any stale file).

        Raises:
            OSError: the disk is full or the directory is not writable; no partial file is
                left behind.
        """
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        path = self.file_for(object_id)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            pos = 0
            while pos < len(data):
                pos += os.write(fd, data[pos : pos + _CHUNK])
        except BaseException:
            os.close(fd)
            _remove_quietly(path)
            raise
        os.close(fd)

    def read_into(self, object_id: bytes, target: memoryview) -> None:
        """Fill ``target`` from the object's spill file.

        Raises:
            OSError: the file is missing or shorter/longer than ``target`` (it was tampered
                with or the disk lost it); ``target`` is then partly written.
        """
        path = self.file_for(object_id)
        with open(path, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            if size != len(target):
                raise OSError(
                    f"spill file {path} holds {size} bytes but the object has {len(target)}; "
                    "the file was changed outside memlab, so the object cannot be restored"
                )
            pos = 0
            while pos < len(target):
                n = f.readinto(target[pos : pos + _CHUNK])
                if not n:
                    raise OSError(f"spill file {path} ended early at byte {pos}")
                pos += n

    def remove(self, object_id: bytes) -> None:
        """Delete the object's spill file if it exists."""
        _remove_quietly(self.file_for(object_id))

    def remove_all(self, object_ids: list[bytes]) -> None:
        """Delete the given spill files, then the directory if it is empty."""
        for object_id in object_ids:
            self.remove(object_id)
        # Missing (never spilled) or holding files that are not ours: leave it.
        with contextlib.suppress(OSError):
            os.rmdir(self.path)


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
