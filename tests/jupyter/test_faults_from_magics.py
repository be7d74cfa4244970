"""``%memlab kill node`` on a two-node runtime, and bad input that loses no work in flight."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from IPython.core.error import UsageError

import memlab
import memlab.state as st
from memlab.testing import wait_for
from tests.jupyter.conftest import run


@pytest.fixture
def ip2(ipython: Any, fresh_runtime: Callable[..., Any]) -> Iterator[Any]:
    fresh_runtime(num_workers=2, num_nodes=2)
    yield ipython
    ipython.reset(new_session=False)
    sys.last_traceback = sys.last_value = sys.last_type = None  # type: ignore[assignment]


def test_kill_node_kills_it_and_work_goes_on(ip2: Any, capsys: Any) -> None:
    ip2.run_line_magic("memlab", "kill node node-1")
    assert "killed node node-1" in capsys.readouterr().out
    wait_for(
        lambda: any(n["node_id"] == "node-1" and not n["alive"] for n in st.nodes()),
        15,
        message="node-1 seen dead",
    )
    assert (
        run(
            ip2, "import memlab\n@memlab.remote\ndef one():\n    return 1\nmemlab.get(one.remote())"
        )
        == 1
    )
    with pytest.raises(UsageError, match="no alive node 'node-1'"):
        ip2.run_line_magic("memlab", "kill node node-1")


def test_bad_input_loses_no_work_in_flight(ip2: Any, tmp_path: Any) -> None:
    gate = tmp_path / "gate"
    run(
        ip2,
        f"""
import memlab
from memlab.testing import gated
@memlab.remote
def slow():
    return gated(41, {str(gate)!r}) + 1
r = slow.remote()
""",
    )
    for line in (
        "bogus",
        "start --workers 7",
        "kill node node-0",
        "why nothing_here",
        "events --kinds nope",
    ):
        with pytest.raises(UsageError):
            ip2.run_line_magic("memlab", line)
    with pytest.raises(UsageError):
        ip2.run_cell_magic("remote", "--node node-1", "1")
    gate.write_text("go")
    assert memlab.get(ip2.user_ns["r"], timeout=30) == 42


def test_views_without_a_runtime_or_events_say_what_to_do(
    ipython: Any, fresh_runtime: Callable[..., Any], capsys: Any
) -> None:
    if memlab.is_initialized():
        memlab.shutdown()
    for line in ("refs", "events", "why x"):
        with pytest.raises(UsageError, match="needs a running memlab runtime"):
            ipython.run_line_magic("memlab", line)
    ipython.run_line_magic("memlab", "status")
    assert "memlab is not running; start it with %memlab start" in capsys.readouterr().out
    fresh_runtime(events=False)
    with pytest.raises(UsageError, match="started with events=False"):
        ipython.run_line_magic("memlab", "refs")
    ipython.run_line_magic("memlab", "status")
    assert "events=False" in capsys.readouterr().out


def test_stopping_with_a_remote_cell_in_flight_fails_its_status(
    ipython: Any, fresh_runtime: Callable[..., Any], tmp_path: Any
) -> None:
    from memlab.jupyter import remote_cell

    fresh_runtime()
    run(ipython, f"from memlab.testing import wait_for_file\ngate = {str(tmp_path / 'g')!r}")
    ipython.run_cell("%%remote\nwait_for_file(gate)", store_history=True)
    remote = remote_cell.recent[-1]
    ipython.run_line_magic("memlab", "stop")
    assert remote.done.wait(10)
    assert remote.state == "failed"
    assert remote.status.endswith("(the runtime stopped)"), remote.status
