"""A session leaves nothing behind, however it ends (DESIGN.md §5, last row; §8).

Ways a session ends, and who is expected to clean up:

| how it ends                            | who cleans up                       | tests            |
| -------------------------------------- | ----------------------------------- | ---------------- |
| ``memlab.shutdown()``                  | the driver, before shutdown returns | test_shutdown_*  |
| interpreter exit without ``shutdown``  | the driver's atexit hook            | test_atexit_*    |
| the driver is SIGKILLed                | node managers (driver's lifeline)   | test_driver_*    |
| driver and node managers SIGKILLed     | the next ``memlab.init()`` (reaper) | test_stale_*     |
| the Jupyter kernel restarts / shuts    | as for SIGKILL / atexit             | test_kernel_*    |

"Nothing" means: no process of the session and no file of it (its private directory with
sockets and spill files, its arenas in /dev/shm), within 10 seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import psutil
import pytest

import memlab
from memlab.runtime.driver.runtime import STOP_TIMEOUT
from memlab.testing.leaks import (
    SHM_DIR,
    assert_session_gone,
    session_files,
    session_processes,
    wait_for,
)

DRIVER = os.path.join(os.path.dirname(__file__), "cleanup_driver.py")
MARKER = "MEMLAB-SESSION"
AFTER_EXIT_MARKER = "MEMLAB-AFTER-EXIT"
CLEANUP_TIMEOUT = 10.0


@memlab.remote
def square(x: int) -> int:
    return x * x


@memlab.remote
def touch_and_sleep(path: str, seconds: float) -> None:
    with open(path, "w"):
        pass
    time.sleep(seconds)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _my_shm_files() -> list[str]:
    return [f for f in os.listdir(SHM_DIR) if f.startswith(f"memlab-{os.getpid()}-")]


def _read_marked_line(stream: Any, marker: str, timeout: float) -> dict[str, Any]:
    """The JSON after ``marker`` on the first line of ``stream`` that starts with it."""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise AssertionError(f"no {marker} line from the driver within {timeout} s")
            line = stream.readline()
            if not line:
                raise AssertionError(f"the driver ended before printing a {marker} line")
            if line.startswith(marker + " "):
                return json.loads(line[len(marker) + 1 :])


def _start_driver(mode: str, tmpdir: str | None = None) -> subprocess.Popen[str]:
    env = dict(os.environ) if tmpdir is None else {**os.environ, "TMPDIR": tmpdir}
    return subprocess.Popen(
        [sys.executable, DRIVER, mode],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )


def _kill_session_procs(session_dir: str, pids: list[int]) -> None:
    """SIGKILL those of ``pids`` that still belong to the session (a pid may have been reused).

    Node managers carry the session directory in their argv, workers in their environment.
    """
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if session_dir in " ".join(proc.cmdline()) or session_dir in proc.environ().values():
                proc.kill()
        except psutil.Error:
            pass


def _force_cleanup(info: dict[str, Any]) -> None:
    """After a failed check, leave the machine clean for the next test."""
    _kill_session_procs(info["session_dir"], info["pids"])
    for path in info["arenas"]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    shutil.rmtree(info["session_dir"], ignore_errors=True)


# -- memlab.shutdown() -------------------------------------------------------------------------


def test_shutdown_removes_every_process_and_shm_file(
    fresh_runtime: Callable[..., Any],
) -> None:
    runtime = fresh_runtime()
    assert memlab.get(square.remote(3)) == 9
    big = memlab.put(np.ones(4 << 20))
    assert memlab.get(big)[0] == 1.0
    pids = [p.pid for p in session_processes()]
    assert len(pids) >= 3, f"expected a node manager and 2 workers, found pids {pids}"
    assert _my_shm_files(), "the session's arena should be in /dev/shm while it runs"
    session_dir = runtime.session_dir
    # §8: what the session puts on disk is private to the user.
    assert _mode(session_dir) == 0o700
    assert {_mode(os.path.join(SHM_DIR, f)) for f in _my_shm_files()} == {0o600}

    memlab.shutdown()

    # Checked right after the call returns: shutdown is synchronous, not eventual.
    assert not memlab.is_initialized()
    assert not [p for p in pids if _alive(p)], "processes of the session survived shutdown()"
    assert session_processes() == [], "a child process of the driver survived shutdown()"
    assert _my_shm_files() == [], "an arena file of the session survived shutdown()"
    assert session_files(session_dir) == []
    del big  # a ref outliving its runtime is dropped without error (warnings are errors here)


def test_shutdown_is_idempotent_and_bounded_with_a_busy_worker(
    fresh_runtime: Callable[..., Any],
    tmp_path: Any,
) -> None:
    runtime = fresh_runtime()
    started = tmp_path / "started"
    ref = touch_and_sleep.remote(str(started), 300.0)
    wait_for(started.exists, 30, message="the long task to start")
    pids = [p.pid for p in session_processes()]

    t0 = time.monotonic()
    memlab.shutdown()
    first = time.monotonic() - t0
    t0 = time.monotonic()
    memlab.shutdown()
    runtime.shutdown()
    again = time.monotonic() - t0

    assert first < STOP_TIMEOUT, f"shutdown with a busy worker took {first:.1f} s"
    assert again < 0.5, f"a second shutdown took {again:.1f} s; it should do nothing"
    assert_session_gone(runtime.session_dir, pids, timeout=0.5)
    del ref


def test_shutdown_is_bounded_when_a_node_manager_hangs(
    fresh_runtime: Callable[..., Any],
) -> None:
    runtime = fresh_runtime()
    assert memlab.get(square.remote(4)) == 16
    pids = [p.pid for p in session_processes()]
    (node_pid,) = [n["pid"] for n in runtime.nodes.info.values()]
    os.kill(node_pid, signal.SIGSTOP)  # it can neither answer nor exit
    try:
        t0 = time.monotonic()
        memlab.shutdown()
        took = time.monotonic() - t0
    finally:
        _kill_session_procs(runtime.session_dir, [node_pid])
    assert took < STOP_TIMEOUT + 3, f"shutdown with a hung node manager took {took:.1f} s"
    assert_session_gone(runtime.session_dir, pids, timeout=CLEANUP_TIMEOUT)


def test_shutdown_removes_spill_files(fresh_runtime: Callable[..., Any]) -> None:
    runtime = fresh_runtime(object_store_memory=64 << 20)
    refs = [memlab.put(np.full(30 << 17, float(i))) for i in range(3)]  # 3 x 30 MiB, all held
    spill_dir = os.path.join(runtime.session_dir, "spill-node-0")
    assert os.path.isdir(spill_dir) and os.listdir(spill_dir), (
        f"3 x 30 MiB in a 64 MiB store should have spilled one into {spill_dir}"
    )
    spilled = [os.path.join(spill_dir, f) for f in os.listdir(spill_dir)]
    assert _mode(spill_dir) == 0o700 and {_mode(f) for f in spilled} == {0o600}

    memlab.shutdown()

    assert [f for f in spilled if os.path.exists(f)] == []
    assert not os.path.exists(spill_dir)
    assert session_files(runtime.session_dir) == []
    del refs


def test_init_after_shutdown_starts_a_new_session(fresh_runtime: Callable[..., Any]) -> None:
    first = fresh_runtime()
    assert memlab.get(square.remote(5)) == 25
    first_pids = [p.pid for p in session_processes()]
    memlab.shutdown()
    assert_session_gone(first.session_dir, first_pids, timeout=0.5)

    second = memlab.init(num_workers=2, object_store_memory=64 << 20)
    try:
        assert second is not first
        assert second.session_dir != first.session_dir
        assert memlab.is_initialized()
        assert memlab.get(square.remote(6)) == 36
        assert memlab.get(memlab.put(np.arange(1 << 20)))[-1] == (1 << 20) - 1
        second_pids = [p.pid for p in session_processes()]
        assert second_pids and not set(second_pids) & set(first_pids)
    finally:
        memlab.shutdown()
    assert_session_gone(second.session_dir, second_pids, timeout=0.5)


# -- the driver ends without shutdown() --------------------------------------------------------


def test_atexit_cleans_up_when_the_interpreter_exits_without_shutdown(private_tmp: str) -> None:
    with _start_driver("exit", private_tmp) as proc:
        info = _read_marked_line(proc.stdout, MARKER, 60)
        after = _read_marked_line(proc.stdout, AFTER_EXIT_MARKER, 30)
        assert proc.wait(30) == 0
    # What was left when the driver's own atexit hooks had finished: only the atexit hook
    # can have cleaned up by then, not the node managers' lifelines.
    assert after == {"alive": [], "files": []}, after
    assert_session_gone(info["session_dir"], info["pids"], timeout=CLEANUP_TIMEOUT)


def test_driver_sigkill_leaves_no_process_and_no_file(private_tmp: str) -> None:
    with _start_driver("block", private_tmp) as proc:
        info = _read_marked_line(proc.stdout, MARKER, 60)
        assert info["session_dir"].startswith(private_tmp + os.sep)
        assert info["arenas"] and all(os.path.exists(a) for a in info["arenas"])
        try:
            proc.kill()
            # Not reaped until the check is done: a zombie driver still counts as alive for
            # other processes' reapers, so only the session itself can remove its arenas.
            assert_session_gone(info["session_dir"], info["pids"], timeout=CLEANUP_TIMEOUT)
            proc.wait(10)
        finally:
            _force_cleanup(info)


def test_stale_session_of_a_sigkilled_driver_is_removed_by_the_next_init(
    fresh_runtime: Callable[..., Any],
) -> None:
    with _start_driver("block") as proc:
        info = _read_marked_line(proc.stdout, MARKER, 60)
        everyone = [proc.pid, *info["pids"]]
        # Freeze the whole session first, so no process sees another die and cleans up.
        for pid in everyone:
            os.kill(pid, signal.SIGSTOP)
        for pid in everyone:  # all stopped, so none of these pids can have been reused
            os.kill(pid, signal.SIGKILL)
        try:
            wait_for(
                lambda: not any(_alive(p) for p in info["pids"]),
                CLEANUP_TIMEOUT,
                message="the SIGKILLed session's processes to exit",
            )
            # Checked before the driver is reaped: its zombie still counts as alive, so no
            # other memlab process on this machine reaps the session in the meantime.
            left = session_files(info["session_dir"])
            assert info["session_dir"] in left and set(info["arenas"]) <= set(left), (
                "precondition: with every process SIGKILLed nothing could clean up, "
                f"yet only {left} is left"
            )
        finally:
            proc.wait(10)  # reaped now: the driver's pid is dead, its session stale

    fresh_runtime()

    assert session_files(info["session_dir"]) == [], "memlab.init() did not reap a stale session"
    assert memlab.get(square.remote(8)) == 64


# -- a Jupyter kernel as the driver -------------------------------------------------------------

KERNEL_SETUP = f"""
import json, os, numpy as np, memlab
from memlab.testing.leaks import session_processes

@memlab.remote
def square(x):
    return x * x

_rt = memlab.init(num_workers=2, object_store_memory=128 << 20)
assert memlab.get(square.remote(9)) == 81
_big = memlab.put(np.ones(4 << 20))
_name = os.path.basename(_rt.session_dir)
print({MARKER!r}, json.dumps({{
    "session_dir": _rt.session_dir,
    "pids": [p.pid for p in session_processes()],
    "arenas": [os.path.join("/dev/shm", f) for f in os.listdir("/dev/shm")
               if f.startswith(_name)],
    "kernel": os.getpid(),
}}))
"""


@pytest.fixture
def kernel(tmp_path: Any, private_tmp: str) -> Iterator[Any]:
    """A Jupyter kernel running this interpreter (so it imports this memlab checkout)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec_dir = tmp_path / "kernels" / "memlab-test"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "memlab test",
                "language": "python",
            }
        )
    )
    ksm = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
    km = KernelManager(
        kernel_name="memlab-test",
        kernel_spec_manager=ksm,
        connection_file=str(tmp_path / "kernel.json"),
    )
    km.start_kernel(env={**os.environ, "TMPDIR": private_tmp})
    try:
        yield km
    finally:
        if km.has_kernel:
            km.shutdown_kernel(now=True)
        km.cleanup_resources()


def _run_in_kernel(km: Any, code: str) -> dict[str, Any]:
    kc = km.client()
    kc.start_channels()
    out: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            out.append("\n".join(msg["content"]["traceback"]))

    try:
        kc.wait_for_ready(timeout=30)
        reply = kc.execute_interactive(code, timeout=60, output_hook=hook)
    finally:
        kc.stop_channels()
    text = "".join(out)
    assert reply["content"]["status"] == "ok", text
    for line in text.splitlines():
        if line.startswith(MARKER + " "):
            return json.loads(line[len(MARKER) + 1 :])
    raise AssertionError(f"the kernel printed no {MARKER} line: {text}")


def test_kernel_restart_and_shutdown_leave_nothing(kernel: Any) -> None:
    before = _run_in_kernel(kernel, KERNEL_SETUP)
    assert os.path.dirname(before["session_dir"]) != "/tmp", "the kernel ignored its TMPDIR"
    assert before["pids"] and all(os.path.exists(a) for a in before["arenas"])
    try:
        kernel.restart_kernel(now=True)  # SIGKILL, as the "Restart kernel" button may do
        # The old session must go by itself: nothing of memlab has run in the new kernel yet.
        assert_session_gone(before["session_dir"], before["pids"], timeout=CLEANUP_TIMEOUT)
    finally:
        _force_cleanup(before)

    after = _run_in_kernel(kernel, KERNEL_SETUP)
    assert after["session_dir"] != before["session_dir"]
    try:
        kernel.shutdown_kernel(now=False)  # a polite shutdown: the kernel's atexit cleans up
        assert_session_gone(after["session_dir"], after["pids"], timeout=CLEANUP_TIMEOUT)
    finally:
        _force_cleanup(after)


@memlab.remote
def total(a: np.ndarray) -> float:
    return float(a.sum())


def test_stores_live_in_the_plasma_directory_and_leave_nothing(
    fresh_runtime: Callable[..., Any],
) -> None:
    directory = tempfile.mkdtemp(prefix="memlab-test-plasma-", dir=SHM_DIR)  # a tmpfs
    try:
        runtime = fresh_runtime(plasma_directory=directory)
        ref = memlab.put(np.ones(1 << 20))
        assert memlab.get(total.remote(ref)) == float(1 << 20)
        name = os.path.basename(runtime.session_dir)
        assert [f for f in os.listdir(directory) if f.startswith(name)], "no arena there"
        assert not [f for f in os.listdir(SHM_DIR) if f.startswith(name)], "arena in /dev/shm"
        pids = [p.pid for p in session_processes()]
        del ref
        memlab.shutdown()
        assert_session_gone(runtime.session_dir, pids, timeout=0.5, plasma_directory=directory)
        assert os.listdir(directory) == []
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_a_plasma_directory_that_cannot_hold_stores_is_refused(tmp_path: Any) -> None:
    missing, afile = str(tmp_path / "missing"), tmp_path / "file"
    afile.write_text("")
    for bad in (missing, str(afile)):
        with pytest.raises(ValueError, match=r"plasma_directory=.*not an existing directory"):
            memlab.init(num_workers=1, object_store_memory=64 << 20, plasma_directory=bad)
        assert not memlab.is_initialized()
