"""The session's footprint on the machine: its private directory, arena names and their cleanup.

Owns the naming scheme that makes leftovers findable: every session directory and every arena
file carries the driver's pid (``memlab-<pid>-…``), so a later ``init`` removes what a driver
that died without cleanup left behind (the node managers' lifelines normally do it first).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import tempfile
import time
import warnings

SHM_DIR = "/dev/shm"
_NAME = re.compile(r"^memlab-(\d+)-")

# Points of start-up where the tests of a driver killed during init (tests/integration/
# test_init_kill.py) have it SIGKILLed: set MEMLAB_TEST_KILL_DRIVER_AT to one. The "node_*"
# points are inside a node manager's start-up; the node manager kills its driver there.
KILL_POINTS = ("collector", "session_dir", "node_arena", "node_workers", "nodes", "ready")
KILL_ENV = "MEMLAB_TEST_KILL_DRIVER_AT"


def kill_point(name: str, driver_pid: int | None) -> None:
    """SIGKILL the driver ``driver_pid`` if a test placed its kill at this point of start-up."""
    if driver_pid is not None and driver_pid > 1 and os.environ.get(KILL_ENV) == name:
        os.kill(driver_pid, signal.SIGKILL)


def make_session_dir() -> str:
    """A new private (0700) directory for the session's sockets and spill files."""
    path = tempfile.mkdtemp(prefix=f"memlab-{os.getpid()}-", dir=_short_tmp())
    os.chmod(path, 0o700)
    return path


def arena_path(session_dir: str, node_id: str, directory: str | None = None) -> str:
    """Where a node's arena file goes: ``directory`` (``plasma_directory``) or /dev/shm."""
    base = directory or (SHM_DIR if os.path.isdir(SHM_DIR) else session_dir)
    return os.path.join(base, f"{os.path.basename(session_dir)}-{node_id}")


def check_plasma_directory(directory: str) -> str:
    """``directory`` as an absolute path, if arenas can be created there.

    Raises:
        ValueError: It is not an existing directory this process can write to.
    """
    if not isinstance(directory, str) or not os.path.isdir(directory):
        raise ValueError(
            f"plasma_directory={directory!r} is not an existing directory; pass a directory "
            "on a memory file system (a tmpfs, e.g. one mounted with huge=always for huge "
            "pages), or leave it unset for /dev/shm"
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ValueError(
            f"plasma_directory={directory!r} is not writable by this process; "
            "pick a directory it can create files in"
        )
    return os.path.abspath(directory)


def default_store_memory(directory: str = SHM_DIR) -> int:
    """30% of available memory, as Ray does, bounded by the free space of the arenas' file
    system (/dev/shm unless ``plasma_directory`` says otherwise)."""
    budget = int(available_memory() * 0.3)
    free = _free_bytes(directory)
    if free is not None:
        budget = min(budget, int(free * 0.8))
    return max(budget, 64 << 20)


def place_store(
    object_store_memory: int | None, plasma_directory: str | None, shm_dir: str = SHM_DIR
) -> tuple[int, str | None]:
    """The stores' capacity and directory: ``(object_store_memory, plasma_directory)``.

    A small /dev/shm (Docker's and Binder's default is 64 MiB) would cap the store at a size
    where the first large ``put`` fails. When the directory is not chosen and the store
    (asked for, or 30% of available memory) does not fit in /dev/shm's free space, the arenas
    go to the temporary directory instead, as Ray does, with a warning that says why: the
    store keeps its size, and pages of a file there are shared memory all the same.
    """
    if plasma_directory is not None:
        return object_store_memory or default_store_memory(plasma_directory), plasma_directory
    wanted = object_store_memory or max(int(available_memory() * 0.3), 64 << 20)
    free = _free_bytes(shm_dir)
    if free is None or wanted <= free * 0.8:
        return object_store_memory or default_store_memory(shm_dir), None
    fallback = _short_tmp()
    capacity = object_store_memory or default_store_memory(fallback)
    warnings.warn(
        f"{shm_dir} has only {free >> 20} MiB free, too little for a {capacity >> 20} MiB "
        f"object store, so the store's files go to {fallback} instead (a disk-backed file "
        "system: large values may be slower). To keep the store in shared memory, give the "
        "machine or container a larger /dev/shm (e.g. docker run --shm-size=2g), or pass "
        f"object_store_memory below {int(free * 0.8) >> 20} MiB.",
        stacklevel=3,
    )
    return capacity, fallback


def available_memory() -> int:
    """Bytes this process may still use: the machine's available memory, or less when a
    cgroup (a container: Docker, Binder) limits the memory of this process's group."""
    import psutil

    available = int(psutil.virtual_memory().available)
    for limit_file, usage_file in _CGROUP_MEMORY:
        with contextlib.suppress(OSError, ValueError):
            with open(limit_file) as f:
                limit = f.read().strip()
            if limit != "max" and int(limit) < (1 << 60):  # v1 "unlimited" is ~2**63
                with open(usage_file) as f:
                    used = int(f.read().strip())
                available = min(available, max(int(limit) - used, 0))
            break
    return available


_CGROUP_MEMORY = (
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
)


def _free_bytes(directory: str) -> int | None:
    try:
        st = os.statvfs(directory)
    except OSError:
        return None
    return int(st.f_bavail * st.f_frsize)


def remove_session(session_dir: str, arena_paths: list[str]) -> None:
    for path in arena_paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    shutil.rmtree(session_dir, ignore_errors=True)


def driver_gone(driver_pid: int, wait: float = 1.0) -> bool:
    """True once this process, a child of ``driver_pid``, has been re-parented away from it.

    A dying process closes its files (our lifeline's end, its sockets) a moment before its
    children are re-parented, so a failure seen through those may come before the answer here:
    wait up to ``wait`` seconds for it.
    """
    deadline = time.monotonic() + wait
    while os.getppid() == driver_pid:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)  # the kernel re-parents within moments of closing the files
    return True


def remove_driver_files(driver_pid: int, plasma_directory: str | None = None) -> list[str]:
    """Remove every session directory and arena of the driver ``driver_pid``, which died.

    Called by a session's own processes (collector, node managers) that outlive their driver,
    also during start-up, when they may not know every file yet: names carry the driver's pid,
    so what it made is found whatever it got to. Only for a driver known to be dead: the
    caller was re-parented away from it.
    """
    removed = []
    prefix = f"memlab-{driver_pid}-"
    for base in {SHM_DIR, _short_tmp(), plasma_directory or SHM_DIR}:
        with contextlib.suppress(OSError):
            for name in os.listdir(base):
                if name.startswith(prefix):
                    removed.append(_remove(os.path.join(base, name)))
    return removed


def _remove(path: str) -> str:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(path)
    return path


def reap_stale_sessions(plasma_directory: str | None = None) -> list[str]:
    """Remove directories and arenas of sessions whose driver is no longer alive (in /dev/shm,
    the temporary directory, and ``plasma_directory`` if one is used)."""
    removed = []
    for base in {SHM_DIR, _short_tmp(), plasma_directory or SHM_DIR}:
        with contextlib.suppress(OSError):
            for name in os.listdir(base):
                m = _NAME.match(name)
                if m is None or _alive(int(m.group(1))):
                    continue
                path = os.path.join(base, name)
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _short_tmp() -> str:
    # Unix socket paths are limited to ~107 bytes; a deep $TMPDIR would overflow them.
    tmp = tempfile.gettempdir()
    return tmp if len(tmp) < 40 else "/tmp"
