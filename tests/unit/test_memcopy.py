"""Tests of memlab.serialization.memcopy: striped copies are exact, whatever the split."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from memlab.serialization import memcopy
from memlab.serialization.memcopy import PARALLEL_THRESHOLD, copy_into


@pytest.mark.parametrize("extra", [0, 1, 4095, 4097, 123_457])
@pytest.mark.parametrize("stripes", [2, 3, 8])
def test_striped_copy_is_byte_exact(extra: int, stripes: int) -> None:
    n = PARALLEL_THRESHOLD + extra
    src = np.random.default_rng(extra).integers(0, 256, n, dtype=np.uint8)
    dest = np.zeros(n + 64, dtype=np.uint8)
    copy_into(memoryview(dest)[:n], memoryview(src), stripes=stripes)
    assert np.array_equal(dest[:n], src)
    assert not dest[n:].any(), "the copy wrote past its destination"


def test_large_copies_use_helper_threads_and_leave_none(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[str] = []
    real_start = threading.Thread.start

    def spy(self: threading.Thread) -> None:
        started.append(self.name)
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", spy)
    src = np.ones(PARALLEL_THRESHOLD, dtype=np.uint8)
    dest = np.zeros_like(src)
    copy_into(memoryview(dest), memoryview(src), stripes=2)
    assert started == ["memlab-copy"]
    assert np.array_equal(dest, src)
    assert not [t for t in threading.enumerate() if t.name == "memlab-copy"]


def test_small_copies_stay_on_the_calling_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threading.Thread, "start", lambda self: pytest.fail("thread started"))
    src = np.arange(1000, dtype=np.uint8)
    dest = np.zeros_like(src)
    copy_into(memoryview(dest), memoryview(src), stripes=4)
    assert np.array_equal(dest, src)


def test_a_failing_stripe_raises_instead_of_leaving_a_hole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = 0
    real = np.copyto

    def flaky(d: np.ndarray, s: np.ndarray) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise MemoryError("stripe failed")
        real(d, s)

    monkeypatch.setattr(memcopy.np, "copyto", flaky)
    src = np.ones(PARALLEL_THRESHOLD, dtype=np.uint8)
    with pytest.raises(MemoryError, match="stripe failed"):
        copy_into(memoryview(np.zeros_like(src)), memoryview(src), stripes=2)
