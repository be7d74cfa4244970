"""The collector process: ``python -m memlab.runtime.events.collector_main CONFIG_JSON``.

The driver starts one per session (unless events are off), before anything else of the session
exists. The secret arrives on the first line of stdin and the session directory on the second
(the driver makes it once the collector runs, so no moment of start-up lacks a process to clean
up after it); stdin then stays open as the lifeline from the driver: at its end the collector
exits. If the driver died (this process was re-parented away from it), the collector first
removes every file of that driver's sessions: during start-up no node manager may exist yet to
do it. :func:`spawn` and :func:`attach` are the driver's side of that contract.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from typing import Any


def spawn(
    session_dir: str | None,
    secret: bytes,
    env: dict[str, str] | None = None,
    max_log: int = 20_000,
    plasma_directory: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start a session's collector process; it listens once its socket file exists.

    Args:
        session_dir: The session directory (the socket goes there), or None to give it later
            with :func:`attach`.
        secret: The per-session secret, sent on stdin, never in argv or the environment.
        env: The process's environment (the node managers' one, so ``memlab`` imports alike).
        max_log: Bound on the collector's event log.
        plasma_directory: Where the session's arenas go, if not /dev/shm (for the cleanup).
    """
    config = {"driver_pid": os.getpid(), "max_log": max_log, "plasma_directory": plasma_directory}
    proc = subprocess.Popen(
        [sys.executable, "-m", "memlab.runtime.events.collector_main", json.dumps(config)],
        stdin=subprocess.PIPE,
        close_fds=True,
        env=env,
        # Own session, like the node managers: it must not die of the kernel's process-group
        # signals before the lifeline tells it to go.
        start_new_session=True,
    )
    assert proc.stdin is not None
    proc.stdin.write(secret.hex().encode() + b"\n")
    proc.stdin.flush()  # stays open: the lifeline
    if session_dir is not None:
        attach(proc, session_dir)
    return proc


STOP = b"stop\n"


def stop(proc: subprocess.Popen[bytes]) -> None:
    """End the collector's lifeline cleanly: it exits without cleaning up for a dead driver."""
    if proc.stdin is not None:
        with contextlib.suppress(Exception):
            proc.stdin.write(STOP)
        with contextlib.suppress(Exception):
            proc.stdin.close()


def attach(proc: subprocess.Popen[bytes], session_dir: str) -> None:
    """Tell a collector started with ``session_dir=None`` where its session lives."""
    assert proc.stdin is not None
    proc.stdin.write(session_dir.encode() + b"\n")
    proc.stdin.flush()


def main() -> None:
    config = json.loads(sys.argv[1])
    driver_pid = config["driver_pid"]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a notebook interrupts the driver only
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    stopped = False
    try:
        stopped = _serve(config)
    finally:
        from memlab.runtime.session import driver_gone, remove_driver_files

        if not stopped and driver_gone(driver_pid):  # nobody else may be left to clean up
            remove_driver_files(driver_pid, config.get("plasma_directory"))
        os._exit(0)


def _serve(config: dict[str, Any]) -> bool:
    """Serve until the lifeline ends; True if the driver said ``stop`` first (a clean end)."""
    secret = bytes.fromhex(sys.stdin.buffer.readline().decode().strip())
    session_dir = sys.stdin.buffer.readline().decode().strip()
    if not session_dir:
        return False  # the driver ended before it made the session

    from memlab.protocol.endpoints import Listener
    from memlab.runtime.events.collector import Collector
    from memlab.runtime.events.shipper import collector_address

    collector = Collector(max_log=config.get("max_log", 20_000))
    listener = Listener(
        collector_address(session_dir),
        secret,
        on_connection=lambda conn: None,
        on_message=collector.on_message,
        on_close=lambda conn, error: None,
        name="collector",
    )
    rest = b""
    with contextlib.suppress(Exception):
        rest = sys.stdin.buffer.read()  # the lifeline: returns when the driver closes it or dies
    with contextlib.suppress(Exception):
        listener.close()
    return rest.startswith(STOP)


if __name__ == "__main__":
    main()
