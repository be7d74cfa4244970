"""A JupyterLab server for the browser tests: a free port, a random token, a private copy of
the notebooks (so autosave never writes outputs into the repository), isolated settings and
workspaces, and the app exposed to the page (``window.jupyterapp``) so the test can run
commands and read the notebook model instead of guessing from pixels."""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from memlab.testing.leaks import session_processes

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
START_TIMEOUT = 60.0

# No "receive official Jupyter news?" toast over the notebook.
_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    }
}


@dataclass
class LabServer:
    url: str
    token: str
    process: subprocess.Popen[bytes]
    log: Path

    def notebook_url(self, name: str) -> str:
        # ?reset: a clean workspace, so the page shows this notebook alone.
        return f"{self.url}/lab/tree/notebooks/{name}?reset&token={self.token}"

    def session_pids(self) -> set[int]:
        """memlab processes started by the server's kernels (the server's descendants)."""
        return {p.pid for p in session_processes(self.process.pid)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(url: str, token: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


@contextmanager
def lab_server(root: Path) -> Iterator[LabServer]:
    """Serve a copy of notebooks/ under ``root`` until the block ends, then stop the server
    (which shuts its kernels down)."""
    shutil.copytree(NOTEBOOKS, root / "notebooks")
    settings = root / "settings"
    for name, value in _SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    port, token = _free_port(), secrets.token_hex(16)
    log = root / "jupyterlab.log"
    cmd = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        f"--port={port}",
        "--ServerApp.ip=127.0.0.1",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",
        f"--LabApp.user_settings_dir={settings}",
        f"--LabApp.workspaces_dir={root / 'workspaces'}",
        "--allow-root",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=root)
    server = LabServer(f"http://127.0.0.1:{port}", token, process, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _ready(server.url, token):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not start; its log:\n{log.read_text()}")
            time.sleep(0.2)  # polling the server's status endpoint, with a deadline
        yield server
    finally:
        process.send_signal(signal.SIGTERM)  # jupyter server shuts its kernels down first
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
