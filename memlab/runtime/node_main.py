"""Entry point of a node manager process: ``python -m memlab.runtime.node_main CONFIG_JSON``.

The secret arrives on the first line of stdin (never in argv or the environment, which other
users may read); stdin then stays open as the lifeline from the driver.
"""

from __future__ import annotations

import json
import signal
import sys


def main() -> None:
    config = json.loads(sys.argv[1])
    secret = bytes.fromhex(sys.stdin.buffer.readline().decode().strip())
    from memlab.runtime.node_manager import NodeManager

    manager = NodeManager(config, secret)
    signal.signal(signal.SIGTERM, lambda *_: manager.shutdown())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a notebook interrupts the driver only
    manager.start()
    manager.wait_for_driver_death()


if __name__ == "__main__":
    main()
