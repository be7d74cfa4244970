"""The output channel without processes: captures, the bound, forwarding of nested output and
what a submission's route is, over a fake core that records what would be sent."""

from __future__ import annotations

from typing import Any

from memlab.runtime.coreworker import output_channel, task_output
from memlab.runtime.coreworker.output_channel import OutputCapture, OutputChannel
from memlab.runtime.coreworker.task_output import TaskOutput


class Conn:
    def __init__(self, sent: list[tuple[str, dict[str, Any], bytes]], peer: str) -> None:
        self.sent, self.peer = sent, peer

    def send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        self.sent.append((self.peer, header, payload))


class FakeCore:
    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}
        self.peers = self  # the registry the channel registers its handler with
        self.sent: list[tuple[str, dict[str, Any], bytes]] = []
        self.submitter = type("Submitter", (), {"tasks": {}})()

    def register(self, kind: str, handler: Any, *, replace: bool = False) -> None:
        self.handlers[kind] = handler

    def conn_to(self, peer: str) -> Conn:
        return Conn(self.sent, peer)


def unpack(header: dict[str, Any], payload: bytes) -> list[tuple[Any, ...]]:
    out, pos = [], 0
    for tid, tag, stream, size, name, _pid, nested in header["c"]:
        out.append((tid, tag, stream, payload[pos : pos + size].decode(), name, nested))
        pos += size
    return out


def test_writes_in_a_task_are_joined_and_sent_to_its_caller_at_its_end() -> None:
    core = FakeCore()
    channel = OutputChannel(core)  # type: ignore[arg-type]
    capture = channel.begin(b"T" * 12, "f", "driver", "cell-1")
    assert output_channel.current.get() is capture
    capture.write("stdout", "a")
    capture.write("stdout", "b\n")
    capture.write("stderr", "oops\n")
    capture.write("stdout", "c\n")
    assert core.sent == []  # nothing leaves before a flush or the task's end
    channel.end(capture)
    assert output_channel.current.get() is None
    ((peer, header, payload),) = core.sent
    assert peer == "driver" and header["t"] == "out"
    assert unpack(header, payload) == [
        (b"T" * 12, "cell-1", "stdout", "ab\n", "f", False),
        (b"T" * 12, "cell-1", "stderr", "oops\n", "f", False),
        (b"T" * 12, "cell-1", "stdout", "c\n", "f", False),
    ]
    channel.end(channel.begin(b"U" * 12, "quiet", "driver", None))
    assert len(core.sent) == 1  # a task that printed nothing sends nothing


def test_the_bound_keeps_the_head_and_counts_the_rest_in_bytes() -> None:
    core = FakeCore()
    channel = OutputChannel(core)  # type: ignore[arg-type]
    capture = channel.begin(b"T" * 12, "f", "driver", None)
    limit = output_channel.FLUSH_LIMIT
    capture.write("stdout", "x" * (limit - 1))
    capture.write("stderr", "éé")  # one fits; the other is two bytes of UTF-8
    channel.flush()
    capture.write("stdout", "fits again\n")
    channel.end(capture)
    first, second = (unpack(h, p) for _, h, p in core.sent)
    assert [(c[2], len(c[3])) for c in first[:2]] == [("stdout", limit - 1), ("stderr", 1)]
    assert first[1][3] == "é"
    assert first[2][2:4] == ("stderr", "[… 2 bytes dropped]\n")
    assert [c[3] for c in second] == ["fits again\n"]


def test_nested_output_joins_the_submitting_task_and_goes_up_its_caller() -> None:
    core = FakeCore()
    channel = OutputChannel(core)  # type: ignore[arg-type]
    outer = channel.begin(b"O" * 12, "outer", "driver", "cell-7")
    inner_tid = b"I" * 12
    route = channel.route(inner_tid)  # submitted while outer runs on this thread
    assert route is outer
    channel.end(outer)  # the outer task ended before its nested one printed
    core.submitter.tasks.clear()  # and the nested task's spec is gone too: the route remains
    core.handlers["out"](
        None, {"t": "out", "c": [[inner_tid, None, "stdout", 6, "inner", 42, False]]}, b"late!\n"
    )
    channel.flush()
    ((peer, header, payload),) = core.sent
    assert peer == "driver"
    assert unpack(header, payload) == [(b"O" * 12, "cell-7", "stdout", "late!\n", "inner", True)]
    assert header["c"][0][5] == 42  # the writer's pid survives the hop


def test_output_of_tasks_submitted_outside_a_task_is_delivered_here() -> None:
    core = FakeCore()
    channel = OutputChannel(core)  # type: ignore[arg-type]
    got: list[TaskOutput] = []
    task_output.set_task_output_sink(got.append)
    task_output.set_submission_tagger(lambda: "cell-3")
    try:
        assert channel.route(b"D" * 12) == "cell-3"  # the driver: the front end's tag
        core.handlers["out"](
            None, {"t": "out", "c": [[b"D" * 12, "cell-3", "stderr", 3, "g", 9, False]]}, b"hi\n"
        )
    finally:
        task_output.set_task_output_sink(None)
        task_output.set_submission_tagger(None)
    assert got == [TaskOutput(b"D" * 12, "stderr", "hi\n", "g", 9, "cell-3", False)]
    assert not isinstance(channel.route(b"E" * 12), OutputCapture)
