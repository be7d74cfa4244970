"""The kernel's sink for task output, over a fake kernel: a chunk goes out under the parent
header of the cell that submitted its task, through the kernel's stream or iopub directly."""

from __future__ import annotations

import io
from typing import Any

from memlab.jupyter.output_routing import OutputRouting
from memlab.runtime.coreworker.task_output import TaskOutput


class FakeKernel:
    def __init__(self) -> None:
        self.parent: dict[str, Any] = {}
        self.session = self
        self.iopub_socket = object()
        self.sent: list[tuple[Any, ...]] = []

    def get_parent(self) -> dict[str, Any]:
        return self.parent

    def send(
        self, socket: Any, msg_type: str, content: dict[str, Any], parent: Any, ident: bytes
    ) -> None:
        self.sent.append((socket, msg_type, content, parent, ident))


class ThreadParentStream(io.StringIO):
    """Like ipykernel's OutStream: a per-thread parent header decides where writes go."""

    def __init__(self) -> None:
        super().__init__()
        self.parent: Any = None
        self.writes: list[tuple[Any, str]] = []

    def set_thread_parent(self, parent: Any) -> str:
        self.parent = parent
        return "token"

    def reset_thread_parent(self, token: str) -> None:
        assert token == "token"
        self.parent = None

    def write(self, text: str) -> int:
        self.writes.append((self.parent, text))
        return len(text)


def routing(kernel: FakeKernel) -> OutputRouting:
    shell = type("Shell", (), {"kernel": kernel})()
    return OutputRouting(shell)


def out(tag: str | None, text: str, name: str = "f", nested: bool = False) -> TaskOutput:
    return TaskOutput(b"t" * 12, "stdout", text, name, 11, tag, nested)


def test_the_tag_is_the_submitting_cells_msg_id() -> None:
    kernel = FakeKernel()
    r = routing(kernel)
    assert r.tag() is None  # no request being handled: nothing to route to
    kernel.parent = {"header": {"msg_id": "cell-a", "msg_type": "execute_request"}}
    assert r.tag() == "cell-a"
    assert r.parents["cell-a"]["msg_type"] == "execute_request"


def test_output_goes_out_under_its_cells_parent() -> None:
    kernel = FakeKernel()
    r = routing(kernel)
    stream = ThreadParentStream()
    r.streams["stdout"] = stream
    kernel.parent = {"header": {"msg_id": "cell-a"}}
    tag = r.tag()
    kernel.parent = {"header": {"msg_id": "cell-b"}}  # a later cell runs when it arrives
    r.sink(out(tag, "hello\n"))
    r.sink(out(tag, "mine\n", name="Cell In[3]"))  # a %%remote cell's own print
    r.sink(out(tag, "nested\n", name="Cell In[3]", nested=True))
    assert stream.writes == [
        ({"header": {"msg_id": "cell-a"}}, "(f pid=11) hello\n"),
        ({"header": {"msg_id": "cell-a"}}, "mine\n"),
        ({"header": {"msg_id": "cell-a"}}, "(Cell In[3] pid=11) nested\n"),
    ]
    assert stream.parent is None  # the reader thread's parent is reset after each write


def test_without_ipykernels_stream_it_is_published_on_iopub() -> None:
    kernel = FakeKernel()
    r = routing(kernel)
    r.streams["stdout"] = io.StringIO()  # replaced: no per-thread parent
    kernel.parent = {"header": {"msg_id": "cell-a"}}
    r.sink(out(r.tag(), "hello\n"))
    assert kernel.sent == [
        (
            kernel.iopub_socket,
            "stream",
            {"name": "stdout", "text": "(f pid=11) hello\n"},
            {"header": {"msg_id": "cell-a"}},
            b"stream.stdout",
        )
    ]
