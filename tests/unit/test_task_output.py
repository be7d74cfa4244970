"""The driver's end of task output: the default sink's Ray-style prefixes, and hooks that
fail without breaking the runtime."""

from __future__ import annotations

from typing import Any

import pytest

from memlab.runtime.coreworker import task_output
from memlab.runtime.coreworker.task_output import LinePrefixer, TaskOutput


def chunk(text: str, name: str = "f", pid: int = 7, stream: str = "stdout") -> TaskOutput:
    return TaskOutput(b"t" * 12, stream, text, name, pid, None, False)


def test_each_line_is_prefixed_once_also_across_chunks() -> None:
    prefix = LinePrefixer()
    assert prefix(chunk("a\nb\n")) == "(f pid=7) a\n(f pid=7) b\n"
    assert prefix(chunk("par")) == "(f pid=7) par"
    assert prefix(chunk("x", name="g")) == "(g pid=7) x"  # another writer's line is its own
    assert prefix(chunk("tial\nnext\n")) == "tial\n(f pid=7) next\n"
    assert prefix(chunk("err\n", stream="stderr")) == "(f pid=7) err\n"


def test_default_sink_prints_to_the_matching_stream(capsys: Any) -> None:
    task_output.default_sink(chunk("to out\n"))
    task_output.default_sink(chunk("to err\n", stream="stderr"))
    captured = capsys.readouterr()
    assert captured.out == "(f pid=7) to out\n"
    assert captured.err == "(f pid=7) to err\n"


def test_a_failing_sink_or_tagger_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("front end bug")

    task_output.set_task_output_sink(broken)
    task_output.set_submission_tagger(broken)
    try:
        task_output.deliver(chunk("x\n"))
        assert task_output.tag_for_submission() is None
    finally:
        task_output.set_task_output_sink(None)
        task_output.set_submission_tagger(None)
    assert [r.message for r in caplog.records] == [
        "the task output sink failed",
        "the task output tagger failed",
    ]
