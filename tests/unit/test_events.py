"""Event buffers and the two shapes events travel in (dicts, positional records)."""

from __future__ import annotations

from memlab.core.events import EVENT_FIELDS, EventBuffer, expand
from memlab.core.state_model import StateModel


def test_a_record_expands_to_the_dict_of_its_kind_with_hex_ids() -> None:
    buffer = EventBuffer("driver")
    tid, oid = b"\x01" * 16, b"\xab" * 16
    buffer.record("task.submitted", tid, "f", "driver", (oid,), (), "nb.py:3")
    buffer.record("task.finished", tid, "w-1", 0, ((oid, 8, None),), 1.5, "node-0", None)
    (submitted, finished) = expand(buffer.drain(), "driver")
    assert set(submitted) == {"kind", "ts", "proc", *EVENT_FIELDS["task.submitted"]}
    assert submitted["task_id"] == tid.hex() and submitted["returns"] == (oid.hex(),)
    assert submitted["proc"] == "driver" and isinstance(submitted["ts"], float)
    assert finished["results"] == ((oid.hex(), 8, None),)
    assert (finished["started_at"], finished["node"]) == (1.5, "node-0")


def test_dict_events_get_hex_ids_and_keep_their_own_proc() -> None:
    buffer = EventBuffer("w-1")
    buffer.emit("task.started", task_id=b"\x02" * 16, worker="w-1", node="n", attempt=0, ts=3.0)
    (event,) = expand(buffer.drain(), "shipper-says")
    assert (event["task_id"], event["proc"], event["ts"]) == ("02" * 16, "w-1", 3.0)


def test_a_record_with_the_wrong_number_of_values_is_logged_as_malformed() -> None:
    model = StateModel()
    model.apply(expand([("task.submitted", 1.0, b"\x01", "f")], "driver"))
    assert model.malformed == 1
    assert model.tasks() == []
    ((event),), _ = model.events()
    assert list(event["values"]) == ["01", "f"]


def test_record_drops_and_counts_when_full_and_does_nothing_when_disabled() -> None:
    buffer = EventBuffer("driver", max_pending=2)
    for _ in range(3):
        buffer.record("object.freed", ("aa",))
    assert (len(buffer), buffer.dropped) == (2, 1)
    buffer.enabled = False
    buffer.record("object.freed", ("bb",))
    assert (len(buffer), buffer.dropped) == (2, 1)


def test_a_task_that_ends_before_the_drain_is_one_event_carrying_its_submission() -> None:
    buffer = EventBuffer("driver")
    quick, slow, oid = b"\x01" * 16, b"\x02" * 16, b"\xab" * 16
    buffer.hold(quick, "task.submitted", quick, "f", "driver", (oid,), (), "nb.py:3")
    buffer.hold(slow, "task.submitted", slow, "g", "driver", (), (), "nb.py:4")
    buffer.record(
        "task.finished", quick, "w-1", 0, ((oid, 8, None),), 1.5, "node-0", buffer.take(quick)
    )
    events = expand(buffer.drain(), "driver")
    assert [(e["kind"], e["task_id"]) for e in events] == [
        ("task.submitted", slow.hex()),
        ("task.finished", quick.hex()),
    ]
    carried = events[1]["submitted"]
    assert carried["name"] == "f" and carried["returns"] == (oid.hex(),)
    assert buffer.take(slow) is None  # drained: its end will be an event of its own

    model = StateModel()
    model.apply(events)
    tasks = {t["task_id"]: t for t in model.tasks()}
    assert tasks[quick.hex()]["state"] == "finished" and tasks[quick.hex()]["name"] == "f"
    assert tasks[quick.hex()]["submitted_at"] == carried["submitted_at"]
    assert tasks[slow.hex()]["state"] == "pending"
    (obj,) = model.objects()
    assert (obj["object_id"], obj["state"], obj["task_id"]) == (oid.hex(), "ready", quick.hex())


def test_a_released_submission_goes_before_the_events_about_its_failure() -> None:
    buffer = EventBuffer("driver")
    tid = b"\x03" * 16
    buffer.hold(tid, "task.submitted", tid, "f", "driver", (), (), None)
    buffer.release(tid)
    buffer.emit("task.failed", task_id=tid, worker="w-1", attempt=0, error="E: x")
    assert [e["kind"] for e in expand(buffer.drain(), "driver")] == [
        "task.submitted",
        "task.failed",
    ]


def test_held_records_count_against_the_bound() -> None:
    buffer = EventBuffer("driver", max_pending=2)
    for i in range(3):
        buffer.hold(i, "task.submitted", bytes([i]), "f", "driver", (), (), None)
    assert (len(buffer), buffer.dropped) == (2, 1)
