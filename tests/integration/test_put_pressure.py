"""``put`` into a full store waits for the room that releases already in flight make, and when
it does fail, the error names what really holds the space."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import memlab

MiB = 1 << 20


@memlab.remote
def echo(x: Any) -> Any:
    return x


@memlab.remote
def total(a: np.ndarray) -> float:
    return float(a.sum())


def test_put_right_after_dropping_refs_and_a_task_result(
    fresh_runtime: Callable[..., Any],
) -> None:
    fresh_runtime(num_workers=1, object_store_memory=100 * MiB)
    keep = memlab.put(np.zeros(40 * MiB, dtype=np.uint8))
    for _ in range(5):  # each put's ref dies at once; its delete is batched
        memlab.put(np.zeros(40 * MiB, dtype=np.uint8))
    del keep
    kept = echo.remote(np.zeros(40 * MiB, dtype=np.uint8))
    memlab.get(kept)
    for _ in range(5):
        memlab.put(np.zeros(40 * MiB, dtype=np.uint8))
    del kept


def test_put_right_after_a_task_read_a_large_argument(fresh_runtime: Callable[..., Any]) -> None:
    """The worker's pin on the argument it read is released in its next batch, after the
    owner has the result: the put must wait for it rather than fail."""
    fresh_runtime(num_workers=1, object_store_memory=150 * MiB)
    for _ in range(5):
        big = memlab.put(np.ones(100 * MiB // 8))
        assert memlab.get(total.remote(big)) == 100 * MiB // 8
        r = memlab.put(np.full(40 * MiB // 8, 1.0))  # big must be spilled to make room
        del r, big


def test_a_full_store_names_the_views_that_hold_it(fresh_runtime: Callable[..., Any]) -> None:
    fresh_runtime(num_workers=1, object_store_memory=100 * MiB)
    view = memlab.get(memlab.put(np.zeros(70 * MiB, dtype=np.uint8)))  # the driver's own view
    with pytest.raises(memlab.ObjectStoreFullError) as info:
        memlab.put(np.zeros(50 * MiB, dtype=np.uint8))
    message = str(info.value)
    assert "read through live zero-copy views" in message
    assert "views held by driver 70.0 MiB" in message, message
    del view
