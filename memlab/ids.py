"""Identifiers of tasks, objects and processes.

A task id is 12 bytes: a 4-byte counter and an 8-byte random suffix drawn once per process, so
ids are unique across the session without coordination and cheap to make on the submit path.
An object id is its creating task's id followed by a 4-byte return index, so the task that
made an object (its lineage) is found from the id alone, as in Ray.
"""

from __future__ import annotations

import itertools
import os
import threading

TASK_ID_BYTES = 12
OBJECT_ID_BYTES = 16


class IdGenerator:
    """Makes task ids for one process; thread-safe because ``next`` on a count is atomic."""

    def __init__(self) -> None:
        self._prefix = os.urandom(8)
        self._counter = itertools.count(1)
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def task_id(self) -> bytes:
        if os.getpid() != self._pid:  # a forked child must not repeat its parent's ids
            with self._lock:
                self._prefix, self._pid = os.urandom(8), os.getpid()
        return (next(self._counter) & 0xFFFFFFFF).to_bytes(4, "little") + self._prefix


def object_id(task_id: bytes, index: int) -> bytes:
    """The id of return value ``index`` of task ``task_id``."""
    return task_id + index.to_bytes(4, "little")


def task_of(object_id: bytes) -> bytes:
    """The id of the task that creates ``object_id``."""
    return object_id[:TASK_ID_BYTES]


def short(ident: bytes) -> str:
    """A short hex prefix for messages and reprs."""
    return ident.hex()[:12]
