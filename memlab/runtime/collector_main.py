"""Entry point of the collector process: ``python -m memlab.runtime.collector_main CONFIG_JSON``.

The driver starts one per session (unless events are off). The secret arrives on the first line
of stdin; stdin then stays open as the lifeline from the driver: at its end (the driver shut
down or died) the collector exits. It owns no shared memory and no file but its socket, which
lives in the session directory. :func:`spawn` is the driver's side of that contract.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys


def spawn(session_dir: str, secret: bytes, env: dict[str, str] | None = None,
          max_log: int = 20_000) -> subprocess.Popen[bytes]:
    """Start a session's collector process; it listens once its socket file exists.

    Args:
        session_dir: The session directory (the socket goes there).
        secret: The per-session secret, sent on stdin, never in argv or the environment.
        env: The process's environment (the node managers' one, so ``memlab`` imports alike).
        max_log: Bound on the collector's event log.
    """
    config = {"session_dir": session_dir, "max_log": max_log}
    proc = subprocess.Popen(
        [sys.executable, "-m", "memlab.runtime.collector_main", json.dumps(config)],
        stdin=subprocess.PIPE, close_fds=True, env=env,
        # Own session, like the node managers: it must not die of the kernel's process-group
        # signals before the lifeline tells it to go.
        start_new_session=True,
    )
    assert proc.stdin is not None
    proc.stdin.write(secret.hex().encode() + b"\n")
    proc.stdin.flush()  # stays open: the lifeline
    return proc


def main() -> None:
    config = json.loads(sys.argv[1])
    secret = bytes.fromhex(sys.stdin.buffer.readline().decode().strip())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a notebook interrupts the driver only
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))

    from memlab.protocol.endpoints import Listener
    from memlab.runtime.collector import Collector
    from memlab.runtime.event_shipper import collector_address

    collector = Collector(max_log=config.get("max_log", 20_000))
    listener = Listener(collector_address(config["session_dir"]), secret,
                        on_connection=lambda conn: None, on_message=collector.on_message,
                        on_close=lambda conn, error: None, name="collector")
    with contextlib.suppress(Exception):
        sys.stdin.buffer.read()  # the lifeline: returns when the driver closes it or dies
    with contextlib.suppress(Exception):
        listener.close()
    os._exit(0)


if __name__ == "__main__":
    main()
