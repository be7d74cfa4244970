"""The dashboard in a real kernel (``jupyter_client``): it updates while a cell is busy, and its
output carries the widget and the static snapshot."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from jupyter_client.manager import KernelManager

SETUP = """
import memlab, time
memlab.init(num_workers=2, object_store_memory=128 << 20)
@memlab.remote
def work(i):
    time.sleep(0.02)
    return b"x" * 200_000
memlab.dashboard()
"""

# Runs for a few seconds; the widget's updates must reach the front end meanwhile.
BUSY = """
refs = []
for i in range(6):
    refs += [work.remote(i * 10 + j) for j in range(10)]
    memlab.get(refs)
    time.sleep(0.3)
len(refs)
"""


@pytest.fixture
def kernel() -> Iterator[Any]:
    km = KernelManager(kernel_name="python3")
    km.start_kernel()
    client = km.client()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    pid = km.provisioner.pid  # type: ignore[union-attr]
    assert pid, "the kernel's pid, for the leak check"
    try:
        yield client
    finally:
        run(client, "memlab.shutdown()")
        client.stop_channels()
        km.shutdown_kernel(now=False)
        left = [f for f in os.listdir("/dev/shm") if f.startswith(f"memlab-{pid}-")]
        assert not left, f"the kernel's session left shared memory behind: {left}"


def run(client: Any, code: str, timeout: float = 60) -> list[dict[str, Any]]:
    """Execute ``code``; return every iopub message until the kernel is idle again."""
    msg_id = client.execute(code)
    messages = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        messages.append(msg)
        if (
            msg["parent_header"].get("msg_id") == msg_id
            and msg["msg_type"] == "status"
            and msg["content"]["execution_state"] == "idle"
        ):
            return messages
    raise AssertionError(f"the cell did not finish in {timeout} s: {code!r}")


def test_the_dashboard_updates_while_a_cell_runs(kernel: Any) -> None:
    out = run(kernel, SETUP)
    errors = [m["content"] for m in out if m["msg_type"] == "error"]
    assert not errors, errors
    [display] = [m for m in out if m["msg_type"] == "execute_result"]
    data = display["content"]["data"]
    assert "application/vnd.jupyter.widget-view+json" in data
    assert "memlab dashboard" in data["text/html"], "the static snapshot for a saved notebook"
    busy = run(kernel, BUSY)
    deltas = [
        m
        for m in busy
        if m["msg_type"] == "comm_msg"
        and m["content"]["data"].get("method") == "custom"
        and m["content"]["data"]["content"].get("type") == "delta"
    ]
    assert len(deltas) >= 2, "the dashboard sent updates while the cell ran"
    started = next(
        m for m in busy if m["msg_type"] == "status" and m["content"]["execution_state"] == "busy"
    )
    ended = busy[-1]
    during = [
        m
        for m in deltas
        if started["header"]["date"] < m["header"]["date"] < ended["header"]["date"]
    ]
    assert during, "updates arrived during the busy cell, not after it"
    rows = sum(
        len(s.get("rows", ())) + len(s.get("upsert", ()))
        for m in deltas
        for name, s in m["content"]["data"]["content"]["sections"].items()
        if name == "objects"
    )
    assert rows >= 60, f"the 60 results reached the front end ({rows} rows)"
