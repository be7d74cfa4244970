"""The collector process: without it (events off) or after its death, the work goes on."""

from __future__ import annotations

import signal
from typing import Any

import numpy as np
import pytest

import memlab
from memlab.exceptions import EventsUnavailableError
from memlab.testing.leaks import session_processes


def _collector_processes(runtime: Any) -> list[Any]:
    return [p for p in session_processes() if "memlab.runtime.events.collector_main" in p.cmdline()]


@memlab.remote
def plus_one(x: int) -> int:
    return x + 1


def test_events_off_starts_no_collector_and_state_says_why(fresh_runtime: Any) -> None:
    runtime = fresh_runtime(events=False)
    assert _collector_processes(runtime) == []
    assert memlab.get([plus_one.remote(i) for i in range(20)]) == list(range(1, 21))
    with pytest.raises(EventsUnavailableError, match="events=False"):
        memlab.state.objects()


def test_a_sigkilled_collector_loses_the_view_not_the_work(fresh_runtime: Any) -> None:
    runtime = fresh_runtime()
    (collector,) = _collector_processes(runtime)
    assert memlab.get(plus_one.remote(1)) == 2
    collector.send_signal(signal.SIGKILL)
    collector.wait(10)
    # Tasks, puts and frees go on; only the view is gone, with an error that says so.
    refs = [plus_one.remote(i) for i in range(200)]
    big = memlab.put(np.ones(1 << 18))
    assert memlab.get(refs) == list(range(1, 201))
    assert float(memlab.get(big).sum()) == float(1 << 18)
    del big
    with pytest.raises(EventsUnavailableError, match="collector process is gone"):
        memlab.state.tasks()
