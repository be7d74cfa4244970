"""Where the stores go and how large they are: a small /dev/shm (Docker's and Binder's 64 MiB)
moves them to the temporary directory instead of capping them below the first large put, and
a container's memory limit bounds the default size."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import psutil
import pytest

import memlab
from memlab.runtime import session

MiB = 1 << 20
GiB = 1 << 30


def fake_shm(monkeypatch: pytest.MonkeyPatch, free: int, available: int = 2 * GiB) -> None:
    """/dev/shm reports ``free`` bytes free; the process may use ``available`` bytes."""
    real = os.statvfs

    def statvfs(path: Any) -> Any:
        if os.fspath(path) == session.SHM_DIR:
            return SimpleNamespace(f_bavail=free // 4096, f_frsize=4096)
        return real(path)

    monkeypatch.setattr(session.os, "statvfs", statvfs)
    monkeypatch.setattr(session, "available_memory", lambda: available)


def test_a_small_shm_moves_the_default_store_to_the_temporary_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_shm(monkeypatch, free=64 * MiB)
    with pytest.warns(UserWarning, match=r"/dev/shm has only 64 MiB free.*--shm-size"):
        capacity, directory = session.place_store(None, None)
    assert directory == session._short_tmp()
    assert capacity == int(2 * GiB * 0.3)  # the store keeps its size (30% of 2 GiB)


def test_a_store_that_fits_in_shm_stays_there(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_shm(monkeypatch, free=64 * MiB)
    assert session.place_store(32 * MiB, None) == (32 * MiB, None)
    fake_shm(monkeypatch, free=8 * GiB)
    assert session.place_store(None, None) == (int(2 * GiB * 0.3), None)


def test_an_explicit_store_too_large_for_shm_moves_too(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_shm(monkeypatch, free=64 * MiB)
    with pytest.warns(UserWarning, match="object_store_memory below 51 MiB"):
        assert session.place_store(256 * MiB, None) == (256 * MiB, session._short_tmp())


def test_a_chosen_directory_is_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_shm(monkeypatch, free=64 * MiB)
    assert session.place_store(256 * MiB, str(tmp_path)) == (256 * MiB, str(tmp_path))


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_a_cgroup_memory_limit_bounds_available_memory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    limit, used = write(tmp_path / "max", f"{2 * GiB}\n"), write(tmp_path / "cur", f"{GiB // 2}\n")
    monkeypatch.setattr(session, "_CGROUP_MEMORY", ((limit, used),))
    machine = psutil.virtual_memory().available
    assert machine > 2 * GiB, "the test needs a machine with more than the fake limit"
    assert session.available_memory() == GiB + GiB // 2  # limit minus what the group uses
    write(tmp_path / "max", "max\n")  # cgroup v2 without a limit: the machine's memory
    assert abs(session.available_memory() - psutil.virtual_memory().available) < 256 * MiB


def test_a_runtime_on_a_small_shm_takes_a_put_larger_than_shm(
    monkeypatch: pytest.MonkeyPatch, fresh_runtime: Any
) -> None:
    fake_shm(monkeypatch, free=64 * MiB)
    with pytest.warns(UserWarning, match="/dev/shm has only 64 MiB free"):
        runtime = fresh_runtime(num_workers=1, object_store_memory=256 * MiB)
    assert runtime.options.plasma_directory == session._short_tmp()
    arenas = [
        f
        for f in os.listdir(session._short_tmp())
        if f.startswith(os.path.basename(runtime.session_dir)) and "node-0" in f
    ]
    assert arenas, "the arena file is in the temporary directory"
    value = np.arange(12_500_000, dtype=np.float64)  # 100 MB: more than the 64 MiB shm
    ref = memlab.put(value)
    assert np.array_equal(memlab.get(ref), value)
    del ref
