"""Event buffers and the two shapes events travel in (dicts, positional records)."""

from __future__ import annotations

from memlab.core.events import EVENT_FIELDS, EventBuffer, expand
from memlab.core.state_model import StateModel


def test_a_record_expands_to_the_dict_of_its_kind_with_hex_ids() -> None:
    buffer = EventBuffer("driver")
    tid, oid = b"\x01" * 16, b"\xab" * 16
    buffer.record("task.submitted", tid, "f", "driver", (oid,), (), "nb.py:3")
    buffer.record("task.finished", tid, "w-1", 0, ((oid, 8, None),), 1.5, "node-0")
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
