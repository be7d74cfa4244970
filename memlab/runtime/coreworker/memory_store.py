"""The in-process memory store: the state and small values of objects this process waits on.

Owns one ``Slot`` per object that this process owns, or borrows and has asked its owner for.
A slot is ``pending`` until its value arrives, then ``ready`` (inline bytes, or the id of the
node whose shared-memory store holds it) or ``failed`` (an exception to raise at ``get``).
Waiters and callbacks are created only when somebody waits, so the put/submit paths stay cheap.
All methods are called with the core's lock held; callbacks and waiter wake-ups are returned to
the caller to run after it releases the lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

PENDING, READY, FAILED = 0, 1, 2


class Slot:
    __slots__ = ("callbacks", "data", "error", "node", "size", "state", "waiters", "writer")

    def __init__(self) -> None:
        self.state = PENDING
        self.data: bytes | None = None
        self.node: str | None = None
        self.writer: str | None = None  # the worker that wrote the stored copy, if a task did
        self.size = 0
        self.error: BaseException | None = None
        self.waiters: list[Any] | None = None
        self.callbacks: list[Callable[[Slot], None]] | None = None


class MemoryStore:
    def __init__(self) -> None:
        self.slots: dict[bytes, Slot] = {}

    def add_pending(self, oid: bytes) -> Slot:
        slot = self.slots.get(oid)
        if slot is None:
            slot = self.slots[oid] = Slot()
        return slot

    def put_inline(self, oid: bytes, data: bytes) -> list[Any]:
        slot = self.add_pending(oid)
        slot.data, slot.size, slot.node = data, len(data), None
        return self._finish(slot, READY)

    def put_stored(self, oid: bytes, node: str, size: int, writer: str | None = None) -> list[Any]:
        slot = self.add_pending(oid)
        slot.data, slot.size, slot.node, slot.writer = None, size, node, writer
        return self._finish(slot, READY)

    def put_error(self, oid: bytes, error: BaseException) -> list[Any]:
        slot = self.add_pending(oid)
        slot.error = error
        return self._finish(slot, FAILED)

    def reset(self, oid: bytes) -> None:
        """The value was lost (to be rebuilt): make the slot pending again."""
        slot = self.slots.get(oid)
        if slot is not None:
            slot.state, slot.data, slot.node, slot.error = PENDING, None, None, None
            slot.writer = None

    def when_done(self, oid: bytes, callback: Callable[[Slot], None]) -> bool:
        """Register ``callback`` for when ``oid`` is ready or failed; False if it already is."""
        slot = self.add_pending(oid)
        if slot.state != PENDING:
            return False
        if slot.callbacks is None:
            slot.callbacks = []
        slot.callbacks.append(callback)
        return True

    def add_waiter(self, oid: bytes, event: Any) -> bool:
        """Wake ``event`` when ``oid`` is done; False (and no registration) if it already is."""
        slot = self.add_pending(oid)
        if slot.state != PENDING:
            return False
        if slot.waiters is None:
            slot.waiters = []
        slot.waiters.append(event)
        return True

    def remove(self, oid: bytes) -> Slot | None:
        return self.slots.pop(oid, None)

    def _finish(self, slot: Slot, state: int) -> list[Any]:
        slot.state = state
        wake: list[Any] = []
        if slot.waiters:
            if state == FAILED:
                wake.extend((w.failed, slot) for w in slot.waiters)
            else:
                wake.extend(slot.waiters)
            slot.waiters = None
        if slot.callbacks:
            wake.extend((cb, slot) for cb in slot.callbacks)
            slot.callbacks = None
        return wake


def run_wakeups(wake: list[Any]) -> None:
    """Run what ``MemoryStore`` returned, after the caller released its lock."""
    for item in wake:
        if type(item) is tuple:
            callback, slot = item
            callback(slot)
        else:
            item.set()


class CountdownWaiter:
    """Wakes a waiting thread once ``need`` of the slots it is registered on are done.

    One waiter per ``get``/``wait`` call, decremented by each slot that finishes, so waiting
    for n objects costs O(n), not a recount of all n on every arrival.
    """

    __slots__ = ("_event", "_lock", "fail_fast", "remaining")

    def __init__(self, need: int, fail_fast: bool = False) -> None:
        self.remaining = need
        self.fail_fast = fail_fast  # a ``get``: the first failure decides, wake at once
        self._lock = threading.Lock()
        self._event = threading.Event()
        if need <= 0:
            self._event.set()

    def set(self) -> None:
        with self._lock:
            self.remaining -= 1
            if self.remaining <= 0:
                self._event.set()

    def failed(self, slot: Slot) -> None:
        """A slot it waits on failed (a wake-up callback, see ``MemoryStore._finish``)."""
        if self.fail_fast:
            self._event.set()
        else:
            self.set()

    def wait(self, timeout: float | None) -> bool:
        return self._event.wait(timeout)
