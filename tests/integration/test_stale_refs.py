"""A ref kept from a session that ended (a notebook variable across ``shutdown``/``init``) is
refused wherever it is used, with a memlab error that says so and how to get the value again."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import pytest

import memlab


@memlab.remote
def inc(x: Any) -> Any:
    return x + 1 if isinstance(x, int) else x


@memlab.remote
class Box:
    def take(self, x: Any) -> Any:
        return x


def _check(error: memlab.StaleRefError, ref: memlab.ObjectRef, site: str) -> None:
    message = str(error)
    assert ref.hex() in message, message
    assert "belongs to a memlab session that ended" in message, message
    assert site in message, message  # where it was made, so the user can re-run that code
    assert "recompute it in this session" in message, message  # the fix
    assert error.object_id == ref.hex() and error.call_site == site


def test_ref_from_an_ended_session_is_refused_everywhere(
    fresh_runtime: Callable[..., Any],
) -> None:
    fresh_runtime(num_workers=1)
    old = inc.remote(1)
    site = f"{__file__}:{sys._getframe().f_lineno - 1}"  # the line above: where old was made
    assert memlab.get(old, timeout=30) == 2
    old_put = memlab.put(5)
    memlab.shutdown()
    fresh_runtime(num_workers=1)
    box = Box.remote()
    uses: list[tuple[str, Callable[[], Any]]] = [
        ("get", lambda: memlab.get(old, timeout=10)),
        ("get list", lambda: memlab.get([old], timeout=10)),
        ("wait", lambda: memlab.wait([old], timeout=10)),
        ("cancel", lambda: memlab.cancel(old)),
        ("argument", lambda: inc.remote(old)),
        ("keyword argument", lambda: inc.remote(x=old)),
        ("nested argument", lambda: inc.remote([old])),
        ("inside a put value", lambda: memlab.put({"k": old})),
        ("actor argument", lambda: box.take.remote(old)),
        ("nested actor argument", lambda: box.take.remote((old,))),
        ("captured in a closure", lambda: memlab.remote(lambda: old).remote()),
    ]
    for label, use in uses:
        with pytest.raises(memlab.StaleRefError) as info:
            use()
        assert isinstance(info.value, memlab.MemlabError), label
        _check(info.value, old, site)
    with pytest.raises(memlab.StaleRefError, match="belongs to a memlab session that ended"):
        memlab.get(old_put, timeout=10)
    # Nothing was half-submitted: the runtime works and holds nothing of the refused calls.
    assert memlab.get(inc.remote(41), timeout=30) == 42
    assert memlab.get(box.take.remote(7), timeout=30) == 7
