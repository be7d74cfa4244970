"""The ownership table as a pure state machine: events in, instructions out, invariants kept."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from memlab.core.ownership import ReferenceTable

A, B, C, D = (bytes([i]) * 16 for i in range(1, 5))


@pytest.fixture
def table() -> Iterator[ReferenceTable]:
    t = ReferenceTable("driver")
    yield t
    t.validate()


def ops(instructions: list[tuple]) -> list[tuple]:
    return [i for i in instructions if i[0] not in ("holders", "dropped")]


def test_last_local_ref_frees_the_object(table: ReferenceTable) -> None:
    table.create_owned(A, call_site="x.py:1", state="ready")
    table.set_ready(A, "node-0", 1000)
    assert ops(table.remove_local(A)) == [("free", A, "node-0")]
    assert table.get(A) is None


def test_pending_task_keeps_its_argument_alive(table: ReferenceTable) -> None:
    table.create_owned(A, call_site=None)
    table.add_submitted([A])
    assert ops(table.remove_local(A)) == []
    assert table.get(A) is not None
    assert ops(table.remove_submitted([A])) == [("free", A, None)]


def test_borrower_keeps_object_alive_until_released(table: ReferenceTable) -> None:
    table.create_owned(A, call_site=None)
    table.add_submitted([A])
    table.add_borrower(A, "w-1")  # registered before the task replied: no gap
    table.remove_submitted([A])
    table.remove_local(A)
    assert table.get(A) is not None
    assert table.get(A).holders()["borrowers"] == ["w-1"]
    assert ops(table.remove_borrower(A, "w-1")) == [("free", A, None)]


def test_dead_borrower_releases_everything(table: ReferenceTable) -> None:
    for oid in (A, B):
        table.create_owned(oid, call_site=None)
        table.add_borrower(oid, "w-9")
        table.remove_local(oid)
    freed = {i[1] for i in table.remove_borrower_everywhere("w-9") if i[0] == "free"}
    assert freed == {A, B}


def test_contained_ref_lives_as_long_as_its_container(table: ReferenceTable) -> None:
    table.create_owned(A, call_site=None, state="ready")
    table.create_owned(B, call_site=None, state="ready")
    table.set_contains(B, [A])
    assert ops(table.remove_local(A)) == []
    assert ops(table.remove_local(B)) == [("free", B, None), ("free", A, None)]


def test_borrowed_ref_released_to_its_owner(table: ReferenceTable) -> None:
    needs, _ = table.add_local(A, "w-1")
    assert needs is True
    needs, _ = table.add_local(A, "w-1")
    assert needs is False
    assert ops(table.remove_local(A)) == []
    assert ops(table.remove_local(A)) == [("release_borrow", A, "w-1", 1), ("forget", A)]


def test_ref_inside_task_result_is_held_by_the_result(table: ReferenceTable) -> None:
    # The worker registered us with w-2 (the owner of C) before replying with result D.
    table.create_owned(D, call_site=None)
    table.add_borrowed(C, "w-2", None)
    table.set_contains(D, [C])
    assert table.get(C).contained_in == {D}
    assert ops(table.remove_local(D)) == [
        ("free", D, None),
        ("release_borrow", C, "w-2", 1),
        ("forget", C),
    ]


def test_unheld_result_is_dropped_on_arrival(table: ReferenceTable) -> None:
    table.add_borrowed(C, "w-2", None)
    assert ops(table.release_if_unused(C)) == [("release_borrow", C, "w-2", 1), ("forget", C)]


def test_owned_ref_cannot_be_revived_after_free(table: ReferenceTable) -> None:
    table.create_owned(A, call_site=None)
    table.remove_local(A)
    with pytest.raises(KeyError, match="already freed"):
        table.add_local(A, "driver")


def test_handle_dispatches_event_tuples(table: ReferenceTable) -> None:
    table.create_owned(A, call_site=None)
    assert ops(table.handle(("remove_local", A))) == [("free", A, None)]
    with pytest.raises(ValueError, match="unknown ownership event"):
        table.handle(("validate",))


def test_counts_never_go_negative(table: ReferenceTable) -> None:
    table.create_owned(A, call_site=None)
    table.add_submitted([A])
    table.remove_submitted([A])
    table.remove_submitted([A])  # a duplicate reply must not underflow
    assert table.get(A).tasks == 0
    table.remove_local(A)
    assert table.remove_local(A) == []


def test_lineage_pin_keeps_entry_after_value_is_freed(table: ReferenceTable) -> None:
    table.create_owned(A, call_site=None, lineage="task-a", state="ready")
    table.set_ready(A, "node-1", 100)
    table.pin_lineage([A])  # a finished task read A; its result may need A rebuilt
    out = table.remove_local(A)
    assert ops(out) == [("free", A, "node-1")]
    entry = table.get(A)
    assert entry is not None and entry.value_freed and entry.lineage == "task-a"
    table.add_submitted([A])  # a re-run of the dependent task needs A again
    assert table.get(A).in_use()
    table.set_ready(A, "node-0", 100)  # rebuilt
    assert not table.get(A).value_freed
    assert ops(table.remove_submitted([A])) == [("free", A, "node-0")]
    out = table.unpin_lineage([A])
    assert ("dropped", A, "task-a") in out and table.get(A) is None


def test_lineage_only_entry_releases_its_contained_refs(table: ReferenceTable) -> None:
    table.create_owned(A, call_site=None, state="ready")
    table.create_owned(B, call_site=None, state="ready")
    table.set_contains(B, [A])
    table.pin_lineage([B])
    table.remove_local(A)
    out = ops(table.remove_local(B))
    assert out == [("free", B, None), ("free", A, None)]
    assert table.get(A) is None and table.get(B) is not None


@pytest.mark.parametrize("seed", range(20))
def test_random_event_sequences_keep_invariants(seed: int) -> None:
    """Random interleavings: nothing is freed while held, everything is freed when released."""
    rng = random.Random(seed)
    t = ReferenceTable("driver")
    held: dict[bytes, dict[str, int]] = {}
    freed: set[bytes] = set()
    oids = [bytes([seed, i]) * 8 for i in range(8)]
    for oid in oids:
        t.create_owned(oid, call_site=None)
        held[oid] = {"local": 1, "tasks": 0, "borrowers": 0}
    for _ in range(300):
        live = [o for o in oids if o not in freed]
        if not live:
            break
        oid = rng.choice(live)
        h = held[oid]
        action = rng.choice(["add_local", "remove_local", "submit", "reply", "borrow", "release"])
        out: list[tuple] = []
        if action == "add_local" and sum(h.values()):
            t.add_local(oid, "driver")
            h["local"] += 1
        elif action == "remove_local" and h["local"]:
            out = t.remove_local(oid)
            h["local"] -= 1
        elif action == "submit" and sum(h.values()):
            t.add_submitted([oid])
            h["tasks"] += 1
        elif action == "reply" and h["tasks"]:
            out = t.remove_submitted([oid])
            h["tasks"] -= 1
        elif action == "borrow" and sum(h.values()):
            t.add_borrower(oid, "w-1")
            h["borrowers"] += 1
        elif action == "release" and h["borrowers"]:
            n = rng.randint(1, h["borrowers"])
            out = t.remove_borrower(oid, "w-1", n)
            h["borrowers"] -= n
        for ins in out:
            if ins[0] == "free":
                assert sum(held[ins[1]].values()) == 0, "freed while still held"
                freed.add(ins[1])
        t.validate()
    for oid in oids:
        assert (oid in freed) == (sum(held[oid].values()) == 0)


def test_a_late_release_does_not_erase_a_new_registration(table: ReferenceTable) -> None:
    """Owner side: w-1 let go of A (its release is still in flight) and got A back from a
    task's result, whose executor registered it again by another connection. The late
    release ends only the first registration."""
    table.create_owned(A, call_site=None, state="ready")
    table.add_borrower(A, "w-1")
    table.add_borrower(A, "w-1")  # the new registration overtakes the release
    assert ops(table.remove_local(A)) == []
    assert ops(table.remove_borrower(A, "w-1", 1)) == []  # the late release
    assert table.get(A).borrowers == {"w-1": 1}
    assert ops(table.remove_borrower(A, "w-1", 1)) == [("free", A, None)]


def test_a_borrowed_entry_releases_every_registration_it_stands_for(
    table: ReferenceTable,
) -> None:
    table.add_local(A, "w-1")  # registered itself
    table.add_borrowed(A, "w-1", None)  # and a lender registered it again
    table.add_borrowed(A, "w-1", None, registered=False)  # a task it ran itself: no registration
    assert table.get(A).registrations == 2
    assert ops(table.remove_local(A)) == [("release_borrow", A, "w-1", 2), ("forget", A)]


def test_a_result_cannot_revive_an_owned_object_that_was_freed(table: ReferenceTable) -> None:
    table.create_owned(A, call_site=None)
    table.remove_local(A)
    with pytest.raises(KeyError, match="already freed"):
        table.add_borrowed(A, "driver", None)
