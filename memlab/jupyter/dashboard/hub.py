"""One publisher per kernel for all the dashboards fed alike.

A notebook re-run top to bottom displays a new dashboard each time, and the old ones stay open
until their outputs are closed (the kernel is not told when a view goes away). Each with its own
publisher, N dashboards would poll the collector and serialize every delta N times. Dashboards
of the same source, names provider and rate share one :class:`Hub` instead: one
:class:`~memlab.jupyter.dashboard.view_state.ViewState`, one publisher thread, and every
message fanned out to each member's comm (the browsers' copies follow the same numbering).

::

    Dashboard ─┐                         ┌─► member.send(delta)      (each widget's comm)
    Dashboard ─┼─ Hub: ViewState+Publisher ├─► member.keyframe = frame
    Dashboard ─┘   (keyed by source, names, rate)  └─► member.status = why it stopped

Invariants:
    * A hub's publisher runs while it has members and its source answers; the last member
      to leave stops it, and a stopped hub is forgotten (the next dashboard makes a new one).
    * A member added late starts from the hub's current keyframe.
"""

from __future__ import annotations

import threading
from typing import Any

from memlab.jupyter.dashboard.publisher import Publisher, Source
from memlab.jupyter.dashboard.view_state import NamesProvider, ViewState

__all__ = ["Hub", "hub_for"]

_hubs: dict[tuple[int, int, float], Hub] = {}
_hubs_lock = threading.Lock()


class Hub:
    """Shared view data and publisher of a set of dashboards (see the module docstring)."""

    def __init__(
        self,
        key: tuple[int, int, float],
        source: Source,
        names: NamesProvider | None,
        max_rate_hz: float,
    ) -> None:
        self.key = key
        self.source = source  # kept so the ids in the key stay theirs
        self.names = names
        self.state = ViewState(names=names)
        self.publisher = Publisher(
            self.state,
            source,
            send=self._send,
            keyframe=self._keyframe,
            on_stop=self._stopped,
            max_rate_hz=max_rate_hz,
        )
        self._members: list[Any] = []
        self._lock = threading.Lock()
        self._started = False

    def members(self) -> list[Any]:
        with self._lock:
            return list(self._members)

    def add(self, widget: Any) -> None:
        """Make ``widget`` a member; it starts from the current keyframe, if there is one."""
        with self._lock:
            self._members.append(widget)
            late = self.state.seq > 0
        if late:
            widget.keyframe = self.state.keyframe()
            widget.status = self.publisher.status

    def start(self) -> bool:
        """Take a first snapshot and start the thread (once); False if the source is gone."""
        with self._lock:
            started, self._started = self._started, True
        if started:
            return self.publisher.status == "live"
        if not self.publisher.poll_once():
            return False
        self.publisher.start()
        return True

    def remove(self, widget: Any) -> None:
        """Drop ``widget``; the last one to leave stops the publisher."""
        with self._lock:
            if widget in self._members:
                self._members.remove(widget)
            last = not self._members
        if last:
            self.publisher.stop()
            _forget(self)

    def _send(self, message: dict[str, Any]) -> None:
        for widget in self.members():
            widget.send(message)

    def _keyframe(self, frame: dict[str, Any]) -> None:
        for widget in self.members():
            widget.keyframe = frame

    def _stopped(self, reason: str) -> None:
        for widget in self.members():
            widget.status = reason
        _forget(self)


def hub_for(source: Source, names: NamesProvider | None, max_rate_hz: float) -> Hub:
    """The live hub of this source, names provider and rate, made if there is none."""
    key = (id(source), id(names), float(max_rate_hz))
    with _hubs_lock:
        hub = _hubs.get(key)
        if hub is None or hub.publisher.status != "live":
            hub = _hubs[key] = Hub(key, source, names, max_rate_hz)
        return hub


def _forget(hub: Hub) -> None:
    with _hubs_lock:
        if _hubs.get(hub.key) is hub:
            del _hubs[hub.key]
