"""Progress for long ``memlab.get``/``memlab.wait``, and Ctrl-C that cancels what they await.

Installed as ``memlab.api``'s blocking hook by the extension. A call first runs as usual for
up to ``GRACE`` (2 s): short gets show nothing and cost nothing more. Past it a bar appears
(an ipywidgets bar in a kernel, a text bar on stderr in a terminal) and the call goes on in
steps of ``STEP`` seconds, the bar counting the refs that are ready. A ``KeyboardInterrupt``
(the kernel's stop button) while blocked cancels the tasks of the refs not yet ready and
re-raises at once. Only the main thread's calls are wrapped: widgets belong to it, and
background threads' gets are not the user's to watch.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import memlab
from memlab.exceptions import GetTimeoutError
from memlab.runtime.coreworker.object_ref import ObjectRef

GRACE = 2.0
STEP = 0.25


class _Bar:
    """A progress bar: an ipywidgets one in a kernel, a text one in a terminal."""

    def __init__(self, verb: str, total: int, in_kernel: bool) -> None:
        self.total = total
        self.start = time.monotonic() - GRACE
        self.widget: Any = None
        self.label: Any = None
        self.verb = verb
        self._last_done = -1
        self._last_write = 0.0
        if in_kernel:
            try:
                import ipywidgets
                from IPython.display import display

                self.widget = ipywidgets.IntProgress(
                    min=0, max=max(total, 1), value=0, description=f"memlab.{verb}"
                )
                self.label = ipywidgets.Label(value=f"0 / {total}")
                display(ipywidgets.HBox([self.widget, self.label]))
            except ImportError:
                self.widget = None
        self.update(0)

    def update(self, done: int, final: str | None = None) -> None:
        elapsed = time.monotonic() - self.start
        text = final or f"{done} / {self.total} ready, {elapsed:.0f} s"
        if self.widget is not None:
            self.widget.value = done
            self.label.value = text
            if final:
                self.widget.bar_style = "danger" if "interrupted" in final else "success"
        else:
            now = time.monotonic()
            if not final and done == self._last_done and now - self._last_write < 1.0:
                return  # a terminal bar redraws on progress, or once a second
            self._last_done, self._last_write = done, now
            width = 30
            filled = int(width * done / max(self.total, 1))
            sys.stderr.write(
                f"\rmemlab.{self.verb} [{'#' * filled}{'.' * (width - filled)}] "
                f"{text}" + ("\n" if final else "")
            )
            sys.stderr.flush()


class BlockingProgress:
    """``memlab.api``'s blocking hook: a bar past ``GRACE`` seconds, cancel on interrupt."""

    def __init__(self, in_kernel: bool, grace: float = GRACE) -> None:
        self.in_kernel = in_kernel
        self.grace = grace
        self.bars_shown = 0  # for tests and benchmarks

    def __call__(
        self,
        verb: str,
        refs: list[ObjectRef[Any]],
        need: int,
        timeout: float | None,
        call: Callable[[float | None], Any],
    ) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return call(timeout)
        try:
            return self._run(verb, refs, need, timeout, call)
        except KeyboardInterrupt:
            cancelled = cancel_pending(refs)
            if cancelled:
                print(
                    f"memlab: interrupted; cancelled {cancelled} task(s) that "
                    f"memlab.{verb} was waiting for.",
                    file=sys.stderr,
                )
            raise

    def _run(
        self,
        verb: str,
        refs: list[ObjectRef[Any]],
        need: int,
        timeout: float | None,
        call: Callable[[float | None], Any],
    ) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        first = self.grace if timeout is None else min(self.grace, timeout)
        try:
            result = call(first)
        except GetTimeoutError:
            if timeout is not None and timeout <= self.grace:
                raise
            done = len(refs) - _pending_count(refs)
        else:
            if (
                verb == "get"
                or len(result[0]) >= need
                or (timeout is not None and timeout <= self.grace)
            ):
                return result
            done = len(result[0])
        bar = _Bar(verb, need, self.in_kernel)
        self.bars_shown += 1
        try:
            while True:
                bar.update(min(done, need))
                remaining = None if deadline is None else deadline - time.monotonic()
                step = STEP if remaining is None else max(0.0, min(STEP, remaining))
                try:
                    result = call(step)
                except GetTimeoutError as exc:
                    if remaining is not None and remaining <= STEP:
                        bar.update(len(refs) - exc.pending, "timed out")
                        raise GetTimeoutError(timeout or 0.0, exc.pending) from None
                    done = len(refs) - exc.pending
                    continue
                if (
                    verb == "get"
                    or len(result[0]) >= need
                    or (remaining is not None and remaining <= STEP)
                ):
                    elapsed = time.monotonic() - bar.start
                    bar.update(
                        need if verb == "get" else len(result[0]), f"done in {elapsed:.1f} s"
                    )
                    return result
                done = len(result[0])
        except KeyboardInterrupt:
            bar.update(done, "interrupted: cancelled the pending tasks")
            raise


def _pending_count(refs: list[ObjectRef[Any]]) -> int:
    count = 0
    for ref in refs:
        info = ref.local_info()
        if info is None or info["state"] == "pending":
            count += 1
    return count


def cancel_pending(refs: list[ObjectRef[Any]]) -> int:
    """Cancel the tasks of the refs in ``refs`` that are not ready; how many were asked."""
    count = 0
    for ref in refs:
        info = ref.local_info()
        if info is not None and info["owned"] and info["state"] == "pending":
            try:
                memlab.cancel(ref)
                count += 1
            except Exception:  # the task finished or its owner went meanwhile: nothing to stop
                pass
    return count
