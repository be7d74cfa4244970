"""``%load_ext memlab`` and the ``%memlab`` subcommands, through a real IPython shell."""

from __future__ import annotations

import re
import sys
import types
from typing import Any

import pytest
from IPython.core.error import UsageError

import memlab
import memlab.state as st
from memlab.testing import wait_for
from tests.jupyter.conftest import cell, run


def test_load_ext_registers_the_magics(ipython: Any) -> None:
    import memlab.jupyter

    assert memlab.load_ipython_extension is memlab.jupyter.load_ipython_extension
    assert memlab.unload_ipython_extension is memlab.jupyter.unload_ipython_extension
    assert "memlab" in ipython.magics_manager.magics["line"]
    assert "remote" in ipython.magics_manager.magics["cell"]


def test_unload_and_reload(ipython: Any) -> None:
    ipython.run_line_magic("unload_ext", "memlab")
    assert "memlab" not in ipython.magics_manager.magics["line"]
    assert "remote" not in ipython.magics_manager.magics["cell"]
    ipython.run_line_magic("load_ext", "memlab")
    assert "memlab" in ipython.magics_manager.magics["line"]


def test_start_with_agreeing_arguments_reuses_the_runtime(ip: Any, rt: Any, capsys: Any) -> None:
    ip.run_line_magic("memlab", f"start --workers 2 --memory {256 << 20}")
    ip.run_line_magic("memlab", "start")  # re-running a notebook never fails
    out = capsys.readouterr().out
    assert "already running with these settings" in out
    assert "2 workers on 1 node(s)" in out
    assert memlab.init() is rt


def test_start_with_other_arguments_says_so(ip: Any, rt: Any) -> None:
    with pytest.raises(UsageError, match=r"--workers: running 2, asked for 3.*%memlab stop"):
        ip.run_line_magic("memlab", "start --workers 3")
    assert memlab.init() is rt  # untouched


@pytest.mark.parametrize(
    "line, expected",
    [
        ("bogus", "unknown subcommand 'bogus'"),
        ("start --wrokers 2", "unrecognized arguments: --wrokers 2"),
        ("start --workers two", "'two' is not a positive whole number"),
        ("start --memory lots", "'lots' is not a size"),
        ("refs --bogus", "usage: %memlab refs"),
        ("kill process 3", "invalid choice: 'process'"),
        ("events --last", "expected one argument"),
        ("stop now", "unrecognized arguments: now"),
    ],
)
def test_bad_input_prints_the_usage(ip: Any, line: str, expected: str) -> None:
    with pytest.raises(UsageError) as info:
        ip.run_line_magic("memlab", line)
    assert expected in str(info.value)
    assert "usage:" in str(info.value)


def test_bad_input_in_a_cell_shows_no_traceback(ip: Any, capsys: Any) -> None:
    result = cell(ip, "%memlab bogus")
    captured = capsys.readouterr()
    assert not result.success
    assert "UsageError: unknown subcommand" in captured.err + captured.out
    assert "Traceback" not in captured.err + captured.out


def test_status_summarizes_workers_nodes_and_store(ip: Any, capsys: Any) -> None:
    run(ip, "import memlab, numpy as np\nx = memlab.put(np.zeros(200_000))")
    wait_for(lambda: any(n["store_used"] for n in st.nodes()), 10)
    ip.run_line_magic("memlab", "status")
    out = capsys.readouterr().out
    assert "2 workers on 1 node(s)" in out
    # x's 1.5 MiB at least (objects of earlier tests may still be on their way out)
    assert re.search(
        r"node-0: alive, store (1\.[5-9]|[2-9]\.\d|\d\d+\.\d) MiB of "
        r"256\.0 MiB used",
        out,
    ), out
    assert re.search(r"objects: \d+ live", out) and "workers: 2 on node-0" in out


def test_runtime_html_repr(ip: Any, rt: Any) -> None:
    formatter = ip.display_formatter.formatters["text/html"]
    enabled, formatter.enabled = formatter.enabled, True  # a terminal shell shows no HTML
    try:
        html = formatter(rt)
    finally:
        formatter.enabled = enabled
    assert "memlab runtime" in html and "node-0" in html and "store used" in html


def test_refs_lists_objects_with_notebook_holders(ip: Any, capsys: Any) -> None:
    run(ip, "import memlab\nx = memlab.put(b'a' * 1000)\nparts = [1, 2, x]\nd = {'k': (x,)}")
    ip.run_line_magic("memlab", "refs")
    out = capsys.readouterr().out
    line = next(row for row in out.splitlines() if row.startswith(run(ip, "x.hex()")[:12]))
    assert "ready" in line and "driver" in line
    assert "Cell In[" in line and "line 2" in line
    assert "x, parts[2], d['k'][0]" in line


def test_refs_all_includes_objects_owned_elsewhere(ip: Any, capsys: Any) -> None:
    run(
        ip,
        """
import memlab
@memlab.remote
def make_inner():
    return memlab.put(b'z' * 10)
outer = make_inner.remote()
inner = memlab.get(outer)
""",
    )
    inner_id = run(ip, "inner.hex()")
    wait_for(lambda: any(o["object_id"] == inner_id for o in st.objects()), 10)
    capsys.readouterr()
    ip.run_line_magic("memlab", "refs")
    default = capsys.readouterr().out
    ip.run_line_magic("memlab", "refs --all")
    everything = capsys.readouterr().out
    assert inner_id[:12] in default  # the notebook holds it by name
    assert inner_id[:12] in everything
    assert "w-" in everything


def test_events_filtered_by_kind(ip: Any, capsys: Any) -> None:
    run(ip, "import memlab\nx = memlab.put(1)")
    ip.run_line_magic("memlab", "events --last 5 --kinds object.created")
    out = capsys.readouterr().out
    rows = out.splitlines()[2:]
    assert rows and all("object.created" in r for r in rows)
    assert "Cell In[" in out
    with pytest.raises(UsageError, match=r"no\.such"):
        ip.run_line_magic("memlab", "events --kinds no.such")


def test_kill_node_0_explains_the_head_node(ip: Any) -> None:
    with pytest.raises(UsageError, match="head node: it hosts this kernel's driver"):
        ip.run_line_magic("memlab", "kill node node-0")


def test_kill_unknown_worker_says_which_exist(ip: Any) -> None:
    with pytest.raises(UsageError, match="no live worker 'w-nope'"):
        ip.run_line_magic("memlab", "kill worker w-nope")


def test_kill_worker_really_kills_it(ip: Any, capsys: Any) -> None:
    victim = next(w["worker_id"] for w in st.workers() if w["state"] == "alive")
    ip.run_line_magic("memlab", f"kill worker {victim}")
    assert f"killed worker {victim}" in capsys.readouterr().out
    wait_for(
        lambda: any(w["worker_id"] == victim and w["state"] == "dead" for w in st.workers()),
        15,
        message="the killed worker is seen dead",
    )
    # the node replaces it; the runtime keeps working
    run(
        ip,
        "import memlab\n@memlab.remote\ndef one():\n    return 1\n"
        "assert memlab.get(one.remote()) == 1",
    )


def test_dashboard_not_installed_says_so(ip: Any, capsys: Any, monkeypatch: Any) -> None:
    monkeypatch.setitem(sys.modules, "memlab.jupyter.dashboard", None)  # import fails
    ip.run_line_magic("memlab", "dashboard")
    assert "dashboard widget is not available" in capsys.readouterr().out


def test_dashboard_shows_the_widget(ip: Any, capsys: Any, monkeypatch: Any) -> None:
    fake = types.ModuleType("memlab.jupyter.dashboard")
    fake.dashboard = lambda: "the dashboard widget"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "memlab.jupyter.dashboard", fake)
    ip.run_line_magic("memlab", "dashboard")
    assert "the dashboard widget" in capsys.readouterr().out
