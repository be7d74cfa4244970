"""Entry point of a node manager process: ``python -m memlab.runtime.node.main CONFIG_JSON``.

The secret arrives on the first line of stdin (never in argv or the environment, which other
users may read); stdin then stays open as the lifeline from the driver.

A start-up that fails removes what this node made (its arena, its workers); if it failed
because the driver died (this process was re-parented away from it), it removes every file of
the driver's sessions too: the driver can no longer do it, and the node may be the only process
of the session left.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from typing import Any


def main() -> None:
    config = json.loads(sys.argv[1])
    # Not getppid(): the driver may have died before this line, and we would be init's child.
    driver_pid = config["driver_pid"]
    secret = bytes.fromhex(sys.stdin.buffer.readline().decode().strip())
    from memlab.runtime.node.manager import NodeManager

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a notebook interrupts the driver only
    manager: Any = None
    try:
        manager = NodeManager(config, secret, driver_pid)
        signal.signal(signal.SIGTERM, lambda *_: manager.shutdown())
        manager.start()
    except BaseException:
        if _failed_start(config, manager, driver_pid):
            os._exit(0)  # the driver is gone: nobody is there to read why
        raise
    manager.wait_for_driver_death()


def _failed_start(config: dict[str, Any], manager: Any, driver_pid: int) -> bool:
    """Remove what this node made; True if the driver died (then its files went too)."""
    from memlab.runtime.session import driver_gone, remove_driver_files

    driver_died = driver_gone(driver_pid)
    if manager is not None:
        with contextlib.suppress(BaseException):
            manager.stop_workers()
    with contextlib.suppress(OSError):
        os.unlink(config["arena_path"])
    if driver_died:
        remove_driver_files(driver_pid, config.get("plasma_directory"))
    return driver_died


if __name__ == "__main__":
    main()
