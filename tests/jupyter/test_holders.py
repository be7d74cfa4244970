"""The kernel's holder scan: names, bounds in depth, items and time, and its rate limit."""

from __future__ import annotations

import sys
from typing import Any

from memlab.jupyter.holders import HolderIndex, active, scan_shell
from memlab.runtime.coreworker.object_ref import ObjectRef


class _Shell:
    def __init__(self, **ns: Any) -> None:
        self.user_ns: dict[str, Any] = ns
        self.user_ns_hidden: dict[str, Any] = {}


def _ref(i: int) -> ObjectRef:
    return ObjectRef(i.to_bytes(16, "little"), "driver")  # uncounted: no runtime needed


def test_names_inside_containers_and_out() -> None:
    r = _ref(1)
    shell = _Shell(x=r, parts=[0, r], d={"k": (r,)}, s={r}, Out={4: r})
    names = scan_shell(shell).objects[r.hex()]
    assert names[:4] == ["x", "parts[1]", "d['k'][0]", f"s{{{r.hex()[:8]}…}}"]
    assert names[-1] == "Out[4]"


def test_depth_is_bounded() -> None:
    r = _ref(2)
    shell = _Shell(deep=[[[[r]]]], shallow=[[r]])
    assert scan_shell(shell, max_depth=3).objects[r.hex()] == ["shallow[0][0]"]


def test_cycles_end() -> None:
    r = _ref(3)
    loop: list[Any] = [r]
    loop.append(loop)
    assert scan_shell(_Shell(loop=loop)).objects[r.hex()] == ["loop[0]"]


def test_items_bound_truncates() -> None:
    shell = _Shell(big=[[i] for i in range(10_000)], x=_ref(4))
    scan = scan_shell(shell, max_items=500)
    assert scan.truncated and scan.visited <= 500


def test_time_bound_truncates() -> None:
    shell = _Shell(**{f"v{i}": [[j] for j in range(50)] for i in range(2_000)})
    scan = scan_shell(shell, budget=0.0)
    assert scan.truncated and scan.visited < 2_000 * 51


def test_index_rescans_at_most_every_interval() -> None:
    shell = _Shell(x=_ref(5))
    index = HolderIndex(shell, min_interval=0.5)
    first = index.scan()
    shell.user_ns["y"] = _ref(6)
    assert index.scan() is first  # younger than 500 ms: reused
    first.at -= 0.5
    assert _ref(6).hex() in index.names()  # older: rescanned
    index.invalidate()
    assert index.scan() is not first


def test_last_traceback_frames() -> None:
    r = _ref(7)

    def fails(held: ObjectRef) -> None:
        raise ValueError("boom")

    try:
        fails(r)
    except ValueError:
        sys.last_type, sys.last_value, sys.last_traceback = sys.exc_info()
    try:
        names = scan_shell(_Shell()).objects[r.hex()]
    finally:
        sys.last_type = sys.last_value = sys.last_traceback = None  # type: ignore[assignment]
    assert "traceback fails() local held" in names
    assert any(n.startswith("traceback test_last_traceback_frames() local") for n in names)


def test_active_index_is_the_loaded_shells(ipython: Any) -> None:
    index = active()
    assert index is ipython.magics_manager.registry["MemlabMagics"].holders


def test_underscore_user_names_are_holders_but_input_history_is_not() -> None:
    r = _ref(8)
    shell = _Shell(_items=[r], _i3="x = put()", _ii="", _5=r)
    assert scan_shell(shell).objects[r.hex()] == ["_items[0]"]


def test_a_container_held_by_two_names_names_both() -> None:
    r = _ref(9)
    shared = [0, r]
    shell = _Shell(parts=shared, again={"p": shared}, Out={3: shared})
    assert scan_shell(shell).objects[r.hex()] == ["parts[1]", "again['p'][1]", "Out[3][1]"]


def test_proxies_are_not_asked_for_attributes() -> None:
    asked: list[str] = []

    class Proxy:
        __slots__ = ()

        def __getattr__(self, name: str) -> Any:
            asked.append(name)
            return [_ref(10)]

    class Plain:
        def __init__(self) -> None:
            self.ref = _ref(11)

    scan = scan_shell(_Shell(proxy=Proxy(), plain=Plain()))
    assert asked == []
    assert scan.objects == {_ref(11).hex(): ["plain.ref"]}
