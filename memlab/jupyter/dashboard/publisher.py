"""The dashboard's publisher: a background thread that keeps a widget live at a bounded rate.

It asks the collector for what changed (``memlab.state.view(since=version)``: one small
request; the aggregation runs in the collector process), merges the answer into the widget's
:class:`~memlab.jupyter.dashboard.view_state.ViewState`, and sends the browser one batched
delta. It runs off the kernel's main thread, so a kernel busy running a cell still updates the
dashboard (ipykernel's output socket takes messages from any thread).

::

    tick (≤ max_rate_hz) ──► source(since) ──► ViewState.apply ──► send(delta message)
      │ idle for idle_after s: tick every idle_interval s    └──► keyframe when asked / due
      └ the runtime stops (RuntimeNotStartedError, EventsUnavailableError): last state kept,
        on_stop(reason), thread ends

Invariants:
    * At most one delta message per ``1 / max_rate_hz`` seconds, whatever the event rate, and
      polls spaced so this thread takes at most ``max_share`` of a core in the kernel.
    * A source or sink that raises never kills the kernel: the error is shown as the status.
    * ``stop`` is idempotent and bounded in time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from memlab.exceptions import EventsUnavailableError, RuntimeNotStartedError
from memlab.jupyter.dashboard.view_state import ViewState

__all__ = ["Publisher", "Source"]

logger = logging.getLogger(__name__)

#: ``source(since, sections)`` returns ``memlab.state.view(since, sections)``'s answer.
Source = Callable[[int | None, list[str] | None], dict[str, Any]]

_JOIN_TIMEOUT = 2.0


class Publisher:
    """Polls a view source and pushes deltas to a sink (see the module docstring).

    Attributes:
        on_delta: Where delta messages go (the widget's ``send``).
        on_keyframe: Where keyframes go (the widget's ``keyframe`` trait).
        on_stop: Told why, once the source is gone.
        sent: Delta messages sent so far (the rate bound is tested on it).
        polls: Requests made to the source.
        status: ``"live"``, or why it stopped.
    """

    def __init__(
        self,
        state: ViewState,
        source: Source,
        send: Callable[[dict[str, Any]], None],
        keyframe: Callable[[dict[str, Any]], None],
        on_stop: Callable[[str], None] | None = None,
        sections: Callable[[], list[str] | None] | None = None,
        max_rate_hz: float = 10.0,
        idle_after: float = 2.0,
        idle_interval: float = 0.5,
        keyframe_interval: float = 5.0,
        max_share: float = 0.04,
    ) -> None:
        """Set up (nothing runs until :meth:`start`).

        Args:
            state: The merged view data.
            source: Where view deltas come from (``memlab.state.view``).
            send: Delivers a delta message to the browser.
            keyframe: Delivers a full keyframe (the widget's synced state).
            on_stop: Called with the reason once the source is gone.
            sections: Which sections to ask for now (None: all). The notebook widget asks
                for all: a tab switched while a cell runs reaches the kernel only after it, so
                the kernel cannot know what is on screen; the collector bounds the graph's
                cost instead (rebuilt at most twice a second, grouped when large).
            max_rate_hz: Upper bound on delta messages per second (at most 10 in the issue).
            idle_after: Seconds without change after which it polls every ``idle_interval``.
            idle_interval: Seconds between polls while idle (bounds an idle kernel's cost).
            keyframe_interval: Seconds between keyframes while changes flow (views opened
                while the kernel is busy start from one; see ``view_state``).
            max_share: The share of one core this thread may take in the kernel: a poll that
                merged and serialized thousands of changed rows spaces the next one out, so
                that a burst of tasks is not slowed by the view of it (the kernel's thread is
                what submits tasks).

        Raises:
            ValueError: If ``max_rate_hz`` is not positive.
        """
        if not max_rate_hz > 0:
            raise ValueError(f"max_rate_hz must be > 0, got {max_rate_hz!r}; pass e.g. 10.0")
        self.state = state
        self.source = source
        self.on_delta = send
        self.on_keyframe = keyframe
        self.on_stop = on_stop
        self.sections = sections
        self.interval = 1.0 / max_rate_hz
        self.idle_after = idle_after
        self.idle_interval = max(idle_interval, self.interval)
        self.keyframe_interval = keyframe_interval
        self.max_share = max_share
        self.last_cost = 0.0  # CPU seconds of the last poll, in this thread
        self.sent = 0
        self.polls = 0
        self.sent_at: list[float] = []  # monotonic times of the last sends (bounded)
        self.status = "live"
        self._stop = threading.Event()
        self._keyframe_wanted = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_change = time.monotonic()
        self._last_keyframe = float("-inf")
        self._keyframe_seq = -1

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="memlab-dashboard-publisher", daemon=True
            )
            self._thread.start()

    def poll_once(self) -> bool:
        """Ask the source once and publish what changed; returns False once it is gone."""
        self.polls += 1
        try:
            wanted = self.sections() if self.sections is not None else None
            delta = self.source(self.state.version or None, wanted)
        except (RuntimeNotStartedError, EventsUnavailableError) as exc:
            self._stopped(f"stopped: {exc}")
            return False
        now = time.monotonic()
        message = self.state.apply(delta, now)
        if message is not None:
            self._last_change = now
            self.on_delta(message)
            self.sent += 1
            self.sent_at.append(now)
            del self.sent_at[:-200]
        # A keyframe of 10,000 rows is megabytes of JSON: the bigger, the rarer.
        spacing = self.keyframe_interval * max(1.0, len(self.state.sections["objects"]) / 1000)
        due = self.state.seq != self._keyframe_seq and now - self._last_keyframe >= spacing
        if self._keyframe_wanted.is_set() or due:
            self._keyframe_wanted.clear()
            self._last_keyframe = now
            frame = self.state.keyframe()
            self._keyframe_seq = frame["seq"]
            self.on_keyframe(frame)
        return True

    def want_keyframe(self) -> None:
        """Ask for a keyframe at the next tick (a browser fell out of step)."""
        self._keyframe_wanted.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            cpu = time.thread_time()
            try:
                if not self.poll_once():
                    return
            except Exception as exc:  # keep the kernel alive; show what broke
                logger.exception("memlab dashboard publisher failed")
                self._stopped(f"stopped: the dashboard's publisher failed ({exc})")
                return
            self.last_cost = time.thread_time() - cpu
            idle = started - self._last_change > self.idle_after
            wait = max(
                self.idle_interval if idle else self.interval, self.last_cost / self.max_share
            )
            if self._keyframe_wanted.is_set():
                wait = self.interval
            self._stop.wait(max(0.0, started + wait - time.monotonic()))

    def _stopped(self, reason: str) -> None:
        self.status = reason
        if self.on_stop is not None:
            self.on_stop(reason)

    def stop(self) -> None:
        """Stop the thread; idempotent, returns within about two seconds."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=_JOIN_TIMEOUT)
