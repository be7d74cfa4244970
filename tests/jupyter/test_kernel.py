"""Through a real Jupyter kernel (jupyter_client): the progress widget, and the stop button
(an interrupt) while a cell blocks in memlab.get, which cancels the awaited task."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

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
    _iopub_until(kc, msg_id, lambda m: m["msg_type"] == "stream"
                 and "blocking" in m["content"]["text"], deadline)
    # past the 2 s grace the kernel shows a progress widget
    _iopub_until(kc, msg_id, lambda m: m["msg_type"] == "display_data"
                 and "application/vnd.jupyter.widget-view+json" in m["content"]["data"],
                 deadline)
    interrupted = time.monotonic()
    km.interrupt_kernel()
    reply = kc.get_shell_msg(timeout=TIMEOUT)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kc.get_shell_msg(timeout=TIMEOUT)
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    assert time.monotonic() - interrupted < 10  # promptly, not after the task's 120 s
    _execute(kc, "from memlab.testing import wait_for\nimport memlab.state as st\n"
                 "wait_for(lambda: [t['state'] for t in st.tasks() if t['name'] == 'slow']"
                 " == ['cancelled'], 30)\n"
                 "try:\n    memlab.get(r, timeout=10)\nexcept memlab.TaskCancelledError:\n"
                 "    pass\nelse:\n    raise AssertionError('not cancelled')")


def test_call_sites_name_kernel_cells(kernel: Any) -> None:
    _, kc = kernel
    _execute(kc, "import memlab")
    content = _execute(kc, "a = 1\nx = memlab.put(b'v')")
    number = content["execution_count"]
    _execute(kc, "import memlab.state as st\nfrom memlab.testing import wait_for\n"
                 f"wait_for(lambda: any(o['call_site'] == 'Cell In[{number}], line 2' "
                 "for o in st.objects()), 10)")
