"""Through a real Jupyter kernel (jupyter_client): the progress widget, and the stop button
(an interrupt) while a cell blocks in memlab.get, which cancels the awaited task."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from memlab.testing import wait_for

TIMEOUT = 60.0


@pytest.fixture
def kernel() -> Iterator[Any]:
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", startup_timeout=TIMEOUT)
    try:
        _execute(kc, "%load_ext memlab\n%memlab start --workers 1 --memory 64MB")
        yield km, kc
        _execute(kc, "%memlab stop")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)


def _execute(kc: Any, code: str, timeout: float = TIMEOUT) -> dict[str, Any]:
    msg_id = kc.execute(code)
    reply = kc.get_shell_msg(timeout=timeout)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kc.get_shell_msg(timeout=timeout)
    assert reply["content"]["status"] == "ok", reply["content"]
    return reply["content"]


def _iopub_until(kc: Any, msg_id: str, predicate: Any, deadline: float) -> dict[str, Any]:
    while time.monotonic() < deadline:
        msg = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") == msg_id and predicate(msg):
            return msg
    raise AssertionError("the expected output did not arrive in time")


def test_interrupt_while_blocked_in_get_cancels_and_returns(kernel: Any) -> None:
    km, kc = kernel
    _execute(kc, "import memlab, time\n@memlab.remote\ndef slow():\n    time.sleep(120)\n")
    msg_id = kc.execute("r = slow.remote()\nprint('blocking', flush=True)\nmemlab.get(r)")
    deadline = time.monotonic() + TIMEOUT
    _iopub_until(
        kc,
        msg_id,
        lambda m: m["msg_type"] == "stream" and "blocking" in m["content"]["text"],
        deadline,
    )
    # past the 2 s grace the kernel shows a progress widget
    _iopub_until(
        kc,
        msg_id,
        lambda m: (
            m["msg_type"] == "display_data"
            and "application/vnd.jupyter.widget-view+json" in m["content"]["data"]
        ),
        deadline,
    )
    interrupted = time.monotonic()
    km.interrupt_kernel()
    reply = kc.get_shell_msg(timeout=TIMEOUT)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kc.get_shell_msg(timeout=TIMEOUT)
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    assert time.monotonic() - interrupted < 10  # promptly, not after the task's 120 s
    _execute(
        kc,
        "from memlab.testing import wait_for\nimport memlab.state as st\n"
        "wait_for(lambda: [t['state'] for t in st.tasks() if t['name'] == 'slow']"
        " == ['cancelled'], 30)\n"
        "try:\n    memlab.get(r, timeout=10)\nexcept memlab.TaskCancelledError:\n"
        "    pass\nelse:\n    raise AssertionError('not cancelled')",
    )


def test_call_sites_name_kernel_cells(kernel: Any) -> None:
    _, kc = kernel
    _execute(kc, "import memlab")
    content = _execute(kc, "a = 1\nx = memlab.put(b'v')")
    number = content["execution_count"]
    _execute(
        kc,
        "import memlab.state as st\nfrom memlab.testing import wait_for\n"
        f"wait_for(lambda: any(o['call_site'] == 'Cell In[{number}], line 2' "
        "for o in st.objects()), 10)",
    )


def test_remote_cell_updates_in_place_and_prints_into_its_own_cell(
    kernel: Any, tmp_path: Any
) -> None:
    _, kc = kernel
    gate = tmp_path / "gate"
    _execute(kc, f"from memlab.testing import wait_for_file\ngate = {str(gate)!r}")
    remote_id = kc.execute("%%remote\nwait_for_file(gate)\nprint('late hello')\n42")
    deadline = time.monotonic() + TIMEOUT
    shown = _iopub_until(
        kc,
        remote_id,
        lambda m: (
            m["msg_type"] == "display_data" and "queued" in m["content"]["data"]["text/plain"]
        ),
        deadline,
    )
    display_id = shown["content"]["transient"]["display_id"]
    _execute(kc, "x = 1")  # a later cell runs while the remote one waits
    gate.write_text("go")
    # the status line of the first cell updates in place, and its print goes to that cell
    printed, done = False, False
    while not (printed and done) and time.monotonic() < deadline:
        msg = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg["msg_type"] == "stream" and "late hello" in msg["content"]["text"]:
            assert msg["parent_header"]["msg_id"] == remote_id  # not the later cell's
            printed = True
        elif msg["msg_type"] == "update_display_data":
            assert msg["content"]["transient"]["display_id"] == display_id
            text = msg["content"]["data"]["text/plain"]
            done = done or ("done in" in text and "on worker w-" in text)
    assert printed and done, (printed, done)
    _execute(kc, "import memlab\nassert memlab.get(_remote) == 42")


def test_task_prints_go_to_the_cell_that_submitted_them(kernel: Any, tmp_path: Any) -> None:
    _, kc = kernel
    gate = tmp_path / "gate"
    _execute(
        kc,
        "import memlab\nfrom memlab.testing import wait_for_file\n"
        "@memlab.remote\ndef late(gate):\n    print('task started', flush=True)\n"
        "    wait_for_file(gate)\n    print('late task output')\n    return 1\n",
    )
    cell_a = kc.execute(f"r = late.remote({str(gate)!r})")
    deadline = time.monotonic() + TIMEOUT
    started = _iopub_until(
        kc,
        cell_a,
        lambda m: m["msg_type"] == "stream" and "task started" in m["content"]["text"],
        deadline,
    )
    assert started["content"]["text"].startswith("(late pid=")  # Ray's prefix for tasks
    # cell B runs (blocked on the task) when the print comes: Ray would put it there
    cell_b = kc.execute("assert memlab.get(r) == 1\nprint('cell B done')")
    _iopub_until(
        kc,
        cell_b,
        lambda m: m["msg_type"] == "status" and m["content"]["execution_state"] == "busy",
        deadline,
    )
    gate.write_text("go")
    late, b_done = None, False
    while not (late and b_done) and time.monotonic() < deadline:
        msg = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg["msg_type"] != "stream":
            continue
        if "late task output" in msg["content"]["text"]:
            late = msg
        b_done = b_done or "cell B done" in msg["content"]["text"]
    assert late is not None and b_done, (late, b_done)
    assert late["parent_header"]["msg_id"] == cell_a  # not cell B's
    assert late["content"]["name"] == "stdout"


def test_kernel_restart_leaves_no_memlab_process(kernel: Any) -> None:
    km, kc = kernel
    msg_id = kc.execute(
        "import memlab.testing, json\nprint(json.dumps(memlab.testing.worker_pids()), flush=True)"
    )
    deadline = time.monotonic() + TIMEOUT
    out = _iopub_until(kc, msg_id, lambda m: m["msg_type"] == "stream", deadline)
    pids = json.loads(out["content"]["text"])
    assert pids
    km.restart_kernel(now=True)
    kc.wait_for_ready(timeout=TIMEOUT)

    def gone() -> bool:
        return not any(
            psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids
        )

    wait_for(gone, 20, message="the old kernel's memlab workers are gone")
    _execute(kc, "%load_ext memlab\n%memlab start --workers 1 --memory 64MB")
