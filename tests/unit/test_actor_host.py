"""The worker side of an actor: calls that overtake the actor's creation wait for it.

Another caller learns where an actor runs as soon as its worker is granted, so its calls can
reach the worker (on their own connection) before the owner's creation message does.
"""

from __future__ import annotations

from typing import Any

from memlab.runtime.worker.actor_host import ActorHost


class Counter:
    def __init__(self) -> None:
        self.n = 10

    def bump(self) -> int:
        self.n += 1
        return self.n


class FakeExecutor:
    """Runs what the host invokes at once, and records each result or error by task id."""

    def __init__(self) -> None:
        self.core = type(
            "Core", (), {"events": type("Events", (), {"enabled": False})(), "proc": "w-test"}
        )()
        self.outcomes: list[tuple[str, Any]] = []

    def function(self, fn_hash: bytes, fn_bytes: bytes | None, holds_refs: bool = False) -> Any:
        return Counter

    def invoke(self, caller: str, h: dict[str, Any], call: Any, main_thread: bool) -> None:
        try:
            self.outcomes.append((h["tid"], call()))
        except Exception as exc:
            self.outcomes.append((h["tid"], exc))


def call(tid: str) -> dict[str, Any]:
    return {"t": "actor_call", "tid": tid, "att": 0, "method": "bump"}


CREATE = {
    "t": "actor_create",
    "tid": "create",
    "att": 0,
    "fn": b"f",
    "aid": b"\x01" * 16,
    "cls": "Counter",
}


def test_calls_that_arrive_before_the_creation_run_after_it_in_order() -> None:
    executor = FakeExecutor()
    host = ActorHost(executor)  # type: ignore[arg-type]
    host.handle("w-other", call("a"), b"", None)
    host.handle("w-other", call("b"), b"", None)
    assert executor.outcomes == []  # held: there is no instance yet

    host.handle("driver", CREATE, b"", None)
    host.handle("w-other", call("c"), b"", None)
    assert executor.outcomes == [("create", None), ("a", 11), ("b", 12), ("c", 13)]
