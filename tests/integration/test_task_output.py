"""What tasks print reaches the driver, attributed to the task the driver submitted: plain
tasks, actor methods (threaded and async), nested tasks (also when their prints come after
the outer task ended), always before the task's result, bounded per flush; and without a front
end the driver prints it, prefixed as Ray does."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import memlab
from memlab.ids import task_of
from memlab.runtime.coreworker import output_channel, task_output
from memlab.runtime.coreworker.task_output import TaskOutput
from memlab.testing import wait_for, wait_for_file

DEADLINE = 10.0


class Recorder:
    """A sink that keeps every chunk (it runs on the driver's reader threads)."""

    def __init__(self) -> None:
        self.chunks: list[TaskOutput] = []
        self.lock = threading.Lock()

    def __call__(self, output: TaskOutput) -> None:
        with self.lock:
            self.chunks.append(output)

    def of(self, ref: memlab.ObjectRef, stream: str = "stdout") -> str:
        tid = task_of(ref.binary)
        with self.lock:
            return "".join(c.text for c in self.chunks if c.task_id == tid and c.stream == stream)

    def where(self, text: str) -> list[TaskOutput]:
        with self.lock:
            return [c for c in self.chunks if text in c.text]


@pytest.fixture
def sink(rt: Any) -> Iterator[Recorder]:
    recorder = Recorder()
    task_output.set_task_output_sink(recorder)
    yield recorder
    task_output.set_task_output_sink(None)


@memlab.remote
def chatty(i: int) -> int:
    print(f"out {i}")
    print(f"err {i}", file=sys.stderr)
    return os.getpid()


@memlab.remote
def many_lines(n: int) -> int:
    for i in range(n):
        print(f"line {i}")
    return n


@memlab.remote
def inner(word: str) -> int:
    print(f"inner {word}")
    return os.getpid()


@memlab.remote
def outer(word: str) -> int:
    print("outer before")
    pid = memlab.get(inner.remote(word))
    print("outer after")
    return pid


@memlab.remote
def late_inner(gate: str) -> str:
    wait_for_file(gate)
    print("inner, after its caller returned")
    return "late"


@memlab.remote
def leaves_inner_running(gate: str) -> list[memlab.ObjectRef]:
    return [late_inner.remote(gate)]


@memlab.remote
def flood(size: int) -> int:
    sys.stdout.write("a" * size)
    return size


@memlab.remote
def prints_from_a_thread() -> None:
    t = threading.Thread(target=lambda: print("from a thread the task started", flush=True))
    t.start()
    t.join()
    print("from the task")


@memlab.remote
class Talker:
    def __init__(self, gate_dir: str) -> None:
        self.gate_dir = gate_dir
        self.arrived: dict[str, asyncio.Event] = {}

    def say(self, word: str) -> int:
        print(f"{word} before")
        wait_for_file(os.path.join(self.gate_dir, word))  # the other call runs meanwhile
        print(f"{word} after")
        return threading.get_ident()

    async def say_async(self, word: str, other: str) -> str:
        print(f"{word} before")
        self.arrived.setdefault(word, asyncio.Event()).set()
        # each waits for the other to have printed: their prints interleave on one loop
        await asyncio.wait_for(self.arrived.setdefault(other, asyncio.Event()).wait(), 10)
        print(f"{word} after")
        return word


def test_a_tasks_prints_reach_the_driver_attributed_to_it(sink: Recorder) -> None:
    refs = [chatty.remote(i) for i in range(3)]
    pids = memlab.get(refs)
    for i, ref in enumerate(refs):
        assert sink.of(ref) == f"out {i}\n"
        assert sink.of(ref, "stderr") == f"err {i}\n"
    chunk = sink.where("out 0")[0]
    assert (chunk.task_name, chunk.pid, chunk.nested) == ("chatty", pids[0], False)
    assert chunk.pid != os.getpid()


def test_output_arrives_before_the_result(sink: Recorder) -> None:
    for _ in range(5):  # all of it, as soon as get returns: no wait for a later flush
        ref = many_lines.remote(2000)
        memlab.get(ref)
        assert sink.of(ref) == "".join(f"line {i}\n" for i in range(2000))


def test_concurrent_actor_methods_are_told_apart(sink: Recorder, tmp_path: Path) -> None:
    talker = Talker.options(max_concurrency=2).remote(str(tmp_path))
    a, b = talker.say.remote("a"), talker.say.remote("b")
    wait_for(
        lambda: sink.where("a before") and sink.where("b before"),
        DEADLINE,
        message="both calls run at once",
    )
    (tmp_path / "b").write_text("go")
    (tmp_path / "a").write_text("go")
    threads = memlab.get([a, b])
    assert threads[0] != threads[1]  # on two threads of the actor's pool
    assert sink.of(a) == "a before\na after\n"
    assert sink.of(b) == "b before\nb after\n"
    assert {c.task_name for c in sink.where("before")} == {"Talker.say"}
    memlab.kill(talker)


def test_async_actor_methods_are_told_apart(sink: Recorder, tmp_path: Path) -> None:
    talker = Talker.options(max_concurrency=4).remote(str(tmp_path))
    x, y = talker.say_async.remote("x", "y"), talker.say_async.remote("y", "x")
    assert memlab.get([x, y]) == ["x", "y"]
    assert sink.of(x) == "x before\nx after\n"
    assert sink.of(y) == "y before\ny after\n"
    memlab.kill(talker)


def test_nested_output_is_attributed_to_the_outermost_task(sink: Recorder) -> None:
    ref = outer.remote("hi")
    inner_pid = memlab.get(ref)
    # in order and before the outer result, although it took two hops
    assert sink.of(ref) == "outer before\ninner hi\nouter after\n"
    chunk = sink.where("inner hi")[0]
    assert chunk.task_id == task_of(ref.binary)
    assert (chunk.task_name, chunk.pid, chunk.nested) == ("inner", inner_pid, True)
    assert not sink.where("outer before")[0].nested


def test_late_nested_output_still_goes_to_the_outer_task(sink: Recorder, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    ref = leaves_inner_running.remote(str(gate))
    (pending,) = memlab.get(ref)  # the outer task is done; its nested one waits
    gate.write_text("go")
    assert memlab.get(pending) == "late"
    wait_for(
        lambda: sink.where("after its caller returned"),
        DEADLINE,
        message="the nested task's print reaches the driver",
    )
    (chunk,) = sink.where("after its caller returned")
    assert chunk.task_id == task_of(ref.binary) and chunk.nested


def test_output_beyond_the_bound_is_dropped_with_a_notice(sink: Recorder) -> None:
    limit = output_channel.FLUSH_LIMIT
    ref = flood.remote(3 * limit)
    memlab.get(ref)
    text = sink.of(ref)
    assert text == "a" * limit + f"[… {2 * limit} bytes dropped]\n"
    ref = flood.remote(1000)  # the bound is per flush: the next task is whole
    memlab.get(ref)
    assert sink.of(ref) == "a" * 1000


def test_without_a_front_end_the_driver_prints_prefixed(rt: Any, capsys: Any) -> None:
    task_output.set_task_output_sink(None)
    pid = memlab.get(chatty.remote(7))
    captured = capsys.readouterr()
    assert f"(chatty pid={pid}) out 7\n" in captured.out
    assert f"(chatty pid={pid}) err 7\n" in captured.err


def test_prints_outside_a_task_go_to_the_workers_stdout(fresh_runtime: Any, capfd: Any) -> None:
    # last in this module: it stops the shared runtime for one whose workers write to this
    # test's captured fd 1
    fresh_runtime(num_workers=1)
    sink = Recorder()
    task_output.set_task_output_sink(sink)
    try:
        ref = prints_from_a_thread.remote()
        memlab.get(ref)
    finally:
        task_output.set_task_output_sink(None)
    assert sink.of(ref) == "from the task\n"
    assert not sink.where("from a thread")
    out: list[str] = []

    def printed() -> bool:
        out.append(capfd.readouterr().out)
        return "from a thread the task started\n" in "".join(out)

    wait_for(printed, DEADLINE, message="the thread's print reaches the worker's real stdout")
