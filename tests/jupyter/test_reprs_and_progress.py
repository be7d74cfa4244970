"""Rich reprs of refs, and progress bars / interrupt handling of long gets."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import memlab
import memlab.state as st
from memlab import api
from memlab.jupyter.progress import BlockingProgress
from memlab.testing import wait_for
from tests.jupyter.conftest import run


def _html(ip: Any, value: Any) -> str:
    formatter = ip.display_formatter.formatters["text/html"]
    enabled, formatter.enabled = formatter.enabled, True
    try:
        return formatter(value)
    finally:
        formatter.enabled = enabled


def test_ref_html_shows_state_size_owner_and_holders(ip: Any) -> None:
    run(ip, "import memlab\nx = memlab.put(b'a' * 200_000)\nparts = [x]")
    html = _html(ip, ip.user_ns["x"])
    assert "ready" in html and "195.3 KiB" in html and "owner <code>driver</code>" in html
    assert "held by x, parts[0]" in html
    assert "made at Cell In[" in html


def test_ref_html_of_a_pending_ref(ip: Any, tmp_path: Any) -> None:
    gate = tmp_path / "gate"
    run(
        ip,
        f"""
import memlab
from memlab.testing import gated
@memlab.remote
def later():
    return gated(1, {str(gate)!r})
r = later.remote()
""",
    )
    html = _html(ip, ip.user_ns["r"])
    assert "pending" in html and "size -" in html
    gate.write_text("go")
    assert run(ip, "memlab.get(r)") == 1


def test_ref_local_info_is_a_local_lookup(rt: Any) -> None:
    ref = memlab.put(b"v")
    info = ref.local_info()
    assert info is not None and info["owned"] and info["state"] == "ready"
    assert info["holders"]["local"] == 1


@pytest.fixture
def quick_bar(ip: Any) -> Iterator[BlockingProgress]:
    """The installed hook, with a grace of 0.2 s instead of 2 s to keep the test short."""
    hook = api._blocking_hook
    assert isinstance(hook, BlockingProgress)
    grace, hook.grace = hook.grace, 0.2
    yield hook
    hook.grace = grace


def _slow_tasks(ip: Any, gate: Any, n: int) -> None:
    run(
        ip,
        f"""
import memlab
from memlab.testing import gated
@memlab.remote
def slow(i):
    return gated(i, {str(gate)!r})
refs = [slow.remote(i) for i in range({n})]
""",
    )


def test_short_get_shows_no_bar(ip: Any, quick_bar: BlockingProgress, capsys: Any) -> None:
    shown = quick_bar.bars_shown
    assert memlab.get(memlab.put(1)) == 1
    assert quick_bar.bars_shown == shown
    assert "memlab.get [" not in capsys.readouterr().err


def test_long_get_shows_a_text_bar_in_a_terminal(
    ip: Any, quick_bar: BlockingProgress, capsys: Any, tmp_path: Any
) -> None:
    gate = tmp_path / "gate"
    _slow_tasks(ip, gate, 3)
    shown = quick_bar.bars_shown
    timer = threading.Timer(0.6, gate.write_text, ("go",))
    timer.start()
    assert memlab.get(ip.user_ns["refs"]) == [0, 1, 2]
    timer.join()
    assert quick_bar.bars_shown == shown + 1
    err = capsys.readouterr().err
    assert "memlab.get [" in err and "0 / 3 ready" in err and "done in" in err


def test_long_wait_shows_a_bar_too(
    ip: Any, quick_bar: BlockingProgress, capsys: Any, tmp_path: Any
) -> None:
    gate = tmp_path / "gate"
    _slow_tasks(ip, gate, 2)
    timer = threading.Timer(0.6, gate.write_text, ("go",))
    timer.start()
    ready, rest = memlab.wait(ip.user_ns["refs"], num_returns=2)
    timer.join()
    assert len(ready) == 2 and not rest
    assert "memlab.wait [" in capsys.readouterr().err


def test_get_timeout_still_raises_past_the_grace(
    ip: Any, quick_bar: BlockingProgress, tmp_path: Any
) -> None:
    gate = tmp_path / "gate"
    _slow_tasks(ip, gate, 1)
    with pytest.raises(memlab.GetTimeoutError, match=r"timed out after 0\.6 s"):
        memlab.get(ip.user_ns["refs"], timeout=0.6)
    gate.write_text("go")
    assert memlab.get(ip.user_ns["refs"]) == [0]


def test_interrupt_cancels_the_awaited_tasks(ip: Any, tmp_path: Any, capsys: Any) -> None:
    gate = tmp_path / "gate"
    _slow_tasks(ip, gate, 2)
    refs = ip.user_ns["refs"]
    wait_for(lambda: any(t["name"] == "slow" and t["state"] == "running" for t in st.tasks()), 10)
    # Python's own SIGINT handler, as a terminal has it: the test is about what memlab does
    # with the KeyboardInterrupt, whatever handler an earlier test in this process left.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.3, signal.raise_signal, (signal.SIGINT,))
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            memlab.get(refs)
        timer.join()
    finally:
        signal.signal(signal.SIGINT, previous)
    print(f"SIGINT handler left by earlier tests: {previous!r}")
    assert "cancelled 2 task(s)" in capsys.readouterr().err
    with pytest.raises(memlab.TaskCancelledError):
        memlab.get(refs[0], timeout=10)
    with pytest.raises(memlab.TaskCancelledError):
        memlab.get(refs[1], timeout=10)
