"""``%%remote``: cells run as tasks, through a real IPython shell."""

from __future__ import annotations

from typing import Any

import pytest
from IPython.core.error import UsageError

import memlab
import memlab.state as st
from memlab.jupyter import remote_cell
from memlab.jupyter.cell_analysis import analyze
from memlab.testing import wait_for
from tests.jupyter.conftest import cell, run


def test_analysis_finds_reads_before_assignment() -> None:
    names = analyze(
        "import numpy as np\ny = x + 1\ndef f(a):\n    return a + z + np.pi\n"
        "total = 0\nfor i in range(3):\n    total = total + i + w\n"
        "q = [k * v for k in data]\nx += 1\ny * 2"
    )
    assert names.reads == ("x", "z", "w", "data", "v")
    assert names.assigns == {"np", "y", "f", "total", "i", "q", "x"}
    assert names.has_value
    assert not analyze("a = 1").has_value


def test_block_runs_on_a_worker_with_notebook_values(ip: Any, capsys: Any) -> None:
    run(ip, "import memlab, os, numpy as np\nx = memlab.put(np.arange(10))\nk = 5")
    value = run(ip, "%%remote --block\nprint('pid', os.getpid())\nx.sum() + k")
    assert value == 50
    out = capsys.readouterr().out
    pid = int(out.split("pid ")[1].split()[0])
    assert pid != __import__("os").getpid()  # it ran elsewhere
    assert memlab.get(ip.user_ns["_remote"]) == 50


def test_outputs_bind_refs_and_unassigned_names_are_reported(ip: Any, capsys: Any) -> None:
    run(ip, "k = 2")
    run(ip, "%%remote -o a,b,nope --block\na = k * 10\nb = [a, a]")
    assert "does not assign nope, so it is not bound; binding a, b" in capsys.readouterr().out
    a, b = ip.user_ns["a"], ip.user_ns["b"]
    assert isinstance(a, memlab.ObjectRef) and isinstance(b, memlab.ObjectRef)
    assert memlab.get([a, b]) == [20, [20, 20]]
    assert "nope" not in ip.user_ns
    assert memlab.get(ip.user_ns["_remote"]) is None  # no last expression


def test_large_arrays_go_through_the_store_once(ip: Any) -> None:
    run(ip, "import numpy as np\nbig = np.ones(1_000_000)")
    assert run(ip, "%%remote --block\nbig.sum()") == 1_000_000
    assert run(ip, "%%remote --block\nbig.sum() * 2") == 2_000_000
    puts = [o for o in st.objects() if o["size"] and o["size"] >= 8_000_000]
    assert len(puts) == 1, puts  # one put shared by both cells
    # the task itself carried no copy of the array: its only dependency is the stored one
    tasks = [t for t in st.tasks() if t["name"].startswith("Cell In[")]
    assert tasks and all(puts[0]["object_id"] in t["deps"] for t in tasks[-2:])
    index = ip.magics_manager.registry["MemlabMagics"].holders
    index.invalidate()
    assert index.names()[puts[0]["object_id"]] == ["%%remote copy of big"]
    run(ip, "del big")  # the copy goes with the value
    wait_for(
        lambda: puts[0]["object_id"] not in {o["object_id"] for o in st.objects()},
        10,
        message="the store copy freed with its notebook value",
    )


def test_non_blocking_status_line_and_late_output(ip: Any, capsys: Any, tmp_path: Any) -> None:
    gate = tmp_path / "gate"
    run(ip, f"from memlab.testing import wait_for_file\ngate = {str(gate)!r}")
    result = cell(ip, "%%remote\nprint('first line')\nwait_for_file(gate)\nprint('after')\n7")
    assert result.success and result.result is None  # returned at once
    remote = remote_cell.recent[-1]
    number = ip.execution_count - 1
    wait_for(lambda: remote.state == "running", 10, message="the status says running")
    assert f"Cell In[{number}]: running on worker w-" in remote.status
    seen: list[str] = []

    def printed(text: str) -> bool:
        seen.append(capsys.readouterr().out)
        return text in "".join(seen)

    # live: the first print shows while the cell still runs (it waits for the gate)
    wait_for(lambda: printed("first line\n"), 10, message="the first print streams in")
    assert not remote.done.is_set()
    run(ip, "later = 1")  # a later cell runs meanwhile
    gate.write_text("go")
    assert remote.done.wait(10)
    assert remote.state == "done"
    assert f"Cell In[{number}]: done in" in remote.status
    out = "".join(seen) + capsys.readouterr().out
    assert "after\n" in out.split("first line\n", 1)[1]  # the rest, after the later cell
    assert "pid=" not in out  # the cell's own prints read as its output, unprefixed
    assert memlab.get(ip.user_ns["_remote"]) == 7


def test_remote_exception_renders_with_the_cells_numbering(ip: Any, capsys: Any) -> None:
    result = cell(ip, "%%remote --block\na = 1\nb = a / 0")
    number = ip.execution_count - 1
    assert isinstance(result.error_in_exec, ZeroDivisionError)
    rendered = "\n".join(result.error_in_exec._render_traceback_())
    assert f"Cell In[{number}], line 2" in rendered
    assert "b = a / 0" in rendered
    assert "remote_worker" not in rendered


def test_non_blocking_failure_shows_the_traceback_in_the_cell(ip: Any, capsys: Any) -> None:
    cell(ip, "%%remote\nprint('before')\nraise KeyError('missing')")
    number = ip.execution_count - 1
    remote = remote_cell.recent[-1]
    assert remote.done.wait(10)
    assert remote.state == "failed" and "KeyError" in remote.status
    captured = capsys.readouterr()
    assert "before" in captured.out
    assert f"Cell In[{number}], line 2" in captured.err


def test_timeout_raises_get_timeout_error(ip: Any) -> None:
    result = cell(ip, "%%remote --timeout 0.3\nimport time\ntime.sleep(5)")
    assert isinstance(result.error_in_exec, memlab.GetTimeoutError)
    memlab.cancel(ip.user_ns["_remote"])


def test_node_placement_is_refused_clearly(ip: Any) -> None:
    with pytest.raises(UsageError, match="needs node placement"):
        ip.run_cell_magic("remote", "--node node-1", "1")


def test_bad_options_print_the_usage(ip: Any) -> None:
    with pytest.raises(UsageError, match="usage: %%remote"):
        ip.run_cell_magic("remote", "--bogus", "1")


def test_unpicklable_value_names_the_variable(ip: Any) -> None:
    run(ip, "import threading\nlock = threading.Lock()")
    result = cell(ip, "%%remote --block\nlock")
    assert isinstance(result.error_in_exec, memlab.SerializationError)
    assert "notebook variable 'lock'" in str(result.error_in_exec)


def test_task_call_site_is_the_cell(ip: Any) -> None:
    run(ip, "%%remote --block\n1")
    number = ip.execution_count - 1
    task_id = ip.user_ns["_remote"].hex()[:24]
    wait_for(lambda: any(t["task_id"] == task_id for t in st.tasks()), 10)
    task = next(t for t in st.tasks() if t["task_id"] == task_id)
    assert task["call_site"] == f"Cell In[{number}], line 1"
    assert task["name"] == f"Cell In[{number}]"


def test_notebook_functions_ship_by_value(ip: Any) -> None:
    run(ip, "def helper(v):\n    return v * factor\nfactor = 3")
    assert run(ip, "%%remote --block\nhelper(2)") == 6


def test_retries_rerun_a_cell_whose_worker_died(ip: Any, tmp_path: Any) -> None:
    run(ip, f"from memlab.testing import crash_once\nmarker = {str(tmp_path / 'm')!r}")
    assert run(ip, "%%remote --block --retries 1\ncrash_once(marker)\n'survived'") == "survived"
    result = cell(ip, f"%%remote --block --retries 0\ncrash_once({str(tmp_path / 'n')!r})")
    assert isinstance(result.error_in_exec, memlab.WorkerCrashedError)


def test_a_ref_inside_a_container_stays_a_ref(ip: Any) -> None:
    run(ip, "import memlab\nparts = [memlab.put(1), memlab.put(2)]")
    assert run(ip, "%%remote --block\nimport memlab\nsum(memlab.get(parts))") == 3


def test_refs_made_inside_a_remote_cell_name_the_cell(ip: Any) -> None:
    run(ip, "%%remote -o inner --block\nimport memlab\nx = 1\ninner = memlab.put(b'made remotely')")
    number = ip.execution_count - 1
    inner = memlab.get(ip.user_ns["inner"])
    wait_for(lambda: any(o["object_id"] == inner.hex() for o in st.objects()), 10)
    rec = next(o for o in st.objects() if o["object_id"] == inner.hex())
    assert rec["owner"].startswith("w-")
    assert rec["call_site"] == f"Cell In[{number}], line 3"


def test_syntax_errors_and_magics_are_reported_before_submitting(ip: Any) -> None:
    with pytest.raises(UsageError, match=r"does not parse: .*line 2"):
        ip.run_cell_magic("remote", "", "a = 1\nb = (")
    with pytest.raises(UsageError, match="IPython syntax such as %magics"):
        ip.run_cell_magic("remote", "", "%time 1")
