"""The dashboard's view aggregation (collector side): keyed delta tables, incidents, grouping."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest

from memlab.core.dashboard_view import SECTIONS, DashboardView
from memlab.core.incidents import IncidentTracker
from memlab.core.state_model import StateModel
from memlab.core.view_table import ViewTable


def oid(i: int) -> str:
    return f"{i:032x}"


def created(
    i: int,
    owner: str = "driver",
    node: str | None = "node-0",
    size: int = 1000,
    task_id: str | None = None,
    call_site: str = "Cell In[1], line 1",
) -> dict:
    return {
        "kind": "object.created",
        "ts": 1.0,
        "proc": owner,
        "object_id": oid(i),
        "owner": owner,
        "task_id": task_id,
        "call_site": call_site,
        "size": size,
        "state": "ready",
        "node": node,
    }


class Reader:
    """A reader of a view that applies its deltas, as the kernel does."""

    def __init__(self) -> None:
        self.version = 0
        self.sections: dict[str, dict[str, dict]] = {name: {} for name in SECTIONS}

    def pull(self, view: DashboardView) -> dict[str, Any]:
        delta = view.delta(self.version)
        for name, d in delta["sections"].items():
            rows = self.sections[name]
            if d["reset"]:
                rows.clear()
            for key in d["remove"]:
                rows.pop(key, None)
            for row in d["upsert"]:
                rows[key_of(name, row)] = row
        self.version = delta["version"]
        return delta


def key_of(section: str, row: dict) -> str:
    if section == "graph_edges":
        return f"{row['src']}|{row['kind']}|{row['dst']}"
    field = {
        "summary": "key",
        "nodes": "node_id",
        "workers": "worker_id",
        "objects": "object_id",
        "graph_nodes": "id",
        "incidents": "id",
    }[section]
    return str(row[field])


@pytest.fixture
def model() -> Iterator[StateModel]:
    m = StateModel()
    yield m
    m.validate()


def refresh(view: DashboardView, model: StateModel, now: float = 0.0) -> bool:
    events, _ = model.events(
        view.event_cursor,
        frozenset(
            {
                "worker.died",
                "node.died",
                "owner.died",
                "object.lost",
                "object.promoted",
                "task.retried",
                "object.reconstructing",
                "object.reconstructed",
                "object.failed",
                "task.failed",
                "actor.died",
                "actor.restarting",
                "actor.restarted",
            }
        ),
    )
    changed = view.refresh(model.records(), events, model.latest_seq, now)
    view.validate()
    return changed


# ---------------------------------------------------------------------- view table


def test_a_table_sends_only_what_changed_since_a_version() -> None:
    t = ViewTable("t")
    t.sync([("a", 1, {"k": "a", "v": 1}), ("b", 1, {"k": "b", "v": 1})], dict, 1)
    t.sync(
        [("a", 1, {"k": "a", "v": 1}), ("b", 2, {"k": "b", "v": 2}), ("c", 1, {"k": "c"})], dict, 2
    )
    t.sync([("b", 2, None), ("c", 1, None)], dict, 3)
    t.validate()
    assert t.delta(0) == {"reset": True, "upsert": [{"k": "b", "v": 2}, {"k": "c"}], "remove": []}
    assert t.delta(1) == {
        "reset": False,
        "upsert": [{"k": "b", "v": 2}, {"k": "c"}],
        "remove": ["a"],
    }
    assert t.delta(2) == {"reset": False, "upsert": [], "remove": ["a"]}
    assert t.delta(3) is None


def test_a_row_is_rebuilt_only_when_its_fingerprint_changes() -> None:
    built: list[str] = []

    def make(src: str) -> dict:
        built.append(src)
        return {"k": src}

    t = ViewTable("t")
    t.sync([("a", 1, "a"), ("b", 1, "b")], make, 1)
    t.sync([("a", 1, "a"), ("b", 2, "b")], make, 2)
    assert built == ["a", "b", "b"]
    assert t.version == 2
    assert t.sync([("a", 1, "a"), ("b", 2, "b")], make, 3) == 0
    assert t.version == 2, "a sync that changed nothing does not move the version"


def test_a_reader_older_than_the_forgotten_removals_gets_a_reset() -> None:
    t = ViewTable("t", max_removed=2)
    t.sync([(k, 1, {"k": k}) for k in "abcd"], dict, 1)
    t.sync([("d", 1, None)], dict, 2)  # removes a, b, c: one is forgotten
    t.validate()
    assert t.floor == 2
    assert t.delta(1) == {"reset": True, "upsert": [{"k": "d"}], "remove": []}


def test_a_table_refuses_a_version_that_does_not_grow() -> None:
    t = ViewTable("objects")
    t.sync([("a", 1, {})], dict, 5)
    with pytest.raises(ValueError, match="version 5 is not after 5"):
        t.sync([("a", 2, {})], dict, 5)


def test_random_syncs_replayed_as_deltas_rebuild_the_table() -> None:
    rng = random.Random(7)
    t = ViewTable("t", max_removed=30)
    snapshots: dict[int, dict[str, dict]] = {0: {}}
    live: dict[str, int] = {}
    for version in range(1, 60):
        for _ in range(rng.randint(0, 6)):
            live[f"k{rng.randint(0, 40)}"] = rng.randint(0, 3)
        for key in rng.sample(sorted(live), k=min(len(live), rng.randint(0, 4))):
            del live[key]
        t.sync([(k, v, (k, v)) for k, v in live.items()], lambda s: {"k": s[0], "v": s[1]}, version)
        t.validate()
        snapshots[t.version] = {k: {"k": k, "v": v} for k, v in live.items()}
    # A reader at any version it could have seen catches up exactly (a removal may name a key
    # added and removed after its version: readers ignore removals of keys they lack).
    for since, copy in snapshots.items():
        have = dict(copy)
        d = t.delta(since)
        if d is not None:
            if d["reset"]:
                have.clear()
            for k in d["remove"]:
                have.pop(k, None)
            for row in d["upsert"]:
                have[row["k"]] = row
        assert have == {k: {"k": k, "v": v} for k, v in live.items()}, since


# ---------------------------------------------------------------------- aggregation


def test_the_view_shows_objects_totals_nodes_and_the_graph(model: StateModel) -> None:
    model.apply(
        [
            {
                "kind": "node.started",
                "ts": 1.0,
                "proc": "driver",
                "node_id": "node-0",
                "pid": 10,
                "store_capacity": 10_000,
            }
        ]
    )
    model.apply(
        [
            created(1, size=3000),
            created(2, size=500, node=None),
            {
                "kind": "node.store",
                "ts": 1.0,
                "proc": "node-0",
                "node_id": "node-0",
                "store_used": 3000,
                "spilled_bytes": 700,
                "num_objects": 1,
            },
        ]
    )
    view = DashboardView()
    assert refresh(view, model)
    reader = Reader()
    reader.pull(view)
    objects = reader.sections["objects"]
    assert set(objects) == {oid(1), oid(2)}
    assert objects[oid(1)]["locations"] == ["node-0"]
    assert objects[oid(2)]["locations"] == ["owner:driver"]
    totals = reader.sections["summary"]["totals"]
    assert totals["objects"] == 2 and totals["bytes"] == 3500
    assert totals["by_node"] == {"node-0": {"objects": 1, "primary_bytes": 3000, "copy_bytes": 0}}
    assert totals["by_owner"]["driver"] == {"objects": 2, "bytes": 3500, "inline": 500}
    assert totals["spilled_bytes"] == 700
    node = reader.sections["nodes"]["node-0"]
    assert node["primary_bytes"] == 3000 and node["store_used"] == 3000
    assert {n["id"] for n in reader.sections["graph_nodes"].values()} >= {
        "process:driver",
        f"object:{oid(1)}",
        "node:node-0",
    }
    assert f"process:driver|owns|object:{oid(1)}" in reader.sections["graph_edges"]


def test_an_unchanged_model_sends_nothing_and_a_change_sends_only_itself(model: StateModel) -> None:
    model.apply([created(i) for i in range(100)])
    view = DashboardView()
    refresh(view, model)
    reader = Reader()
    reader.pull(view)
    assert not refresh(view, model, now=1.0)
    assert reader.pull(view)["sections"] == {}
    model.apply(
        [
            {"kind": "object.freed", "ts": 2.0, "proc": "driver", "object_ids": [oid(5)]},
            {
                "kind": "object.spilled",
                "ts": 2.0,
                "proc": "node-0",
                "object_id": oid(6),
                "node": "node-0",
                "size": 1000,
            },
        ]
    )
    refresh(view, model, now=2.0)
    delta = reader.pull(view)
    assert delta["sections"]["objects"]["remove"] == [oid(5)]
    assert [r["object_id"] for r in delta["sections"]["objects"]["upsert"]] == [oid(6)]
    assert reader.sections["objects"][oid(6)]["state"] == "spilled"
    assert len(reader.sections["objects"]) == 99


def test_refreshes_are_due_at_most_ten_a_second_and_only_after_new_events(
    model: StateModel,
) -> None:
    view = DashboardView(min_interval=0.1, max_share=0.25)
    model.apply([created(1)])
    assert view.due(0.0, model.latest_seq)
    refresh(view, model, now=0.0)
    model.apply([created(2)])
    assert not view.due(0.05, model.latest_seq), "sooner than min_interval"
    assert view.due(0.1, model.latest_seq)
    assert not view.due(5.0, view.seq), "no new events: nothing to refresh"
    view.last_cost = 0.2  # a costly refresh spaces the next ones to bound the CPU share
    assert not view.due(0.5, model.latest_seq)
    assert view.due(0.8, model.latest_seq)


def test_above_the_bound_the_graph_groups_objects_by_what_made_them(model: StateModel) -> None:
    model.apply(
        [
            {
                "kind": "task.submitted",
                "ts": 1.0,
                "proc": "driver",
                "task_id": "t1",
                "name": "load",
                "owner": "driver",
                "returns": [],
                "deps": [],
                "call_site": "x.py:1",
            }
        ]
    )
    model.apply([created(i, task_id="t1") for i in range(30)])
    model.apply([created(100 + i, call_site="Cell In[2], line 1") for i in range(20)])
    model.apply([{"kind": "object.lost", "ts": 2.0, "proc": "driver", "object_id": oid(3)}])
    view = DashboardView(aggregate_above=40)
    refresh(view, model)
    reader = Reader()
    reader.pull(view)
    groups = {n["id"]: n for n in reader.sections["graph_nodes"].values() if n["kind"] == "group"}
    assert set(groups) == {"group:task:load", "group:site:Cell In[2], line 1"}
    load = groups["group:task:load"]
    assert load["count"] == 30 and load["states"] == {"ready": 29, "lost": 1}
    assert load["state"] == "lost", "a lost object shows in its group"
    edge = reader.sections["graph_edges"]["process:driver|owns|group:task:load"]
    assert edge["count"] == 30
    assert "group:task:load|created_by|task:group:load" in reader.sections["graph_edges"]
    assert reader.sections["summary"]["graph"]["grouped"] is True
    assert len(reader.sections["graph_nodes"]) < 10


def test_a_view_of_ten_thousand_objects_ships_deltas_of_the_changes(model: StateModel) -> None:
    model.apply([created(i) for i in range(10_000)])
    view = DashboardView()
    refresh(view, model)
    reader = Reader()
    assert len(reader.pull(view)["sections"]["objects"]["upsert"]) == 10_000
    model.apply(
        [
            {
                "kind": "object.holders",
                "ts": 2.0,
                "proc": "driver",
                "object_id": oid(i),
                "local": 2,
                "tasks": 0,
                "contained_in": [],
                "borrowers": ["w-1"],
            }
            for i in range(10)
        ]
    )
    refresh(view, model, now=1.0)
    d = reader.pull(view)["sections"]["objects"]
    assert len(d["upsert"]) == 10 and d["remove"] == []
    assert reader.sections["objects"][oid(3)]["holders"]["borrowers"] == ["w-1"]


def test_workers_show_their_current_task(model: StateModel) -> None:
    model.apply(
        [
            {
                "kind": "worker.started",
                "ts": 1.0,
                "proc": "node-0",
                "worker_id": "w-1",
                "node": "node-0",
                "pid": 5,
            },
            {
                "kind": "task.submitted",
                "ts": 1.0,
                "proc": "driver",
                "task_id": "t1",
                "name": "train",
                "owner": "driver",
                "returns": [],
                "deps": [],
                "call_site": None,
            },
            {
                "kind": "task.started",
                "ts": 1.5,
                "proc": "w-1",
                "task_id": "t1",
                "worker": "w-1",
                "node": "node-0",
                "attempt": 0,
            },
        ]
    )
    view = DashboardView()
    refresh(view, model)
    reader = Reader()
    reader.pull(view)
    assert reader.sections["workers"]["w-1"]["current_task"] == {
        "task_id": "t1",
        "name": "train",
        "started_at": 1.5,
    }


# ---------------------------------------------------------------------- incidents


def ev(kind: str, ts: float, **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "ts": ts, "proc": "driver", **fields}


def test_a_node_death_and_its_recovery_are_one_incident_in_order() -> None:
    t = IncidentTracker()
    for e in [
        ev("node.died", 10.0, node_id="node-1"),
        ev("worker.died", 10.01, worker_id="w-2", node="node-1", cause="its node died"),
        ev("object.promoted", 10.05, object_id="a", node="node-0"),
        ev("object.lost", 10.1, object_id="b"),
        ev("object.lost", 10.1, object_id="c"),
        ev("task.retried", 10.2, task_id="t-b", attempt=1, reason="object lost"),
        ev("object.reconstructing", 10.2, object_id="b"),
        ev("object.reconstructed", 10.6, object_id="b"),
    ]:
        t.handle(e)
        t.validate()
    [inc] = t.incidents()
    assert inc["title"] == "node node-1 died"
    assert [s["kind"] for s in inc["steps"]] == [
        "died",
        "lost",
        "promoted",
        "retried",
        "reconstructing",
        "reconstructed",
    ]
    assert inc["state"] == "recovering" and inc["pending"] == 1, "c is not rebuilt yet"
    t.handle(ev("object.reconstructed", 11.0, object_id="c"))
    assert inc["state"] == "recovered" and inc["pending"] == 0 and inc["lost"] == 2
    assert inc["duration"] == pytest.approx(1.0)
    died = inc["steps"][0]
    assert died["count"] == 2 and died["items"] == ["node-1", "w-2"]


def test_an_owner_death_names_the_holders_that_get_owner_died_error() -> None:
    owned = {"w-9": [("x1", 100, ["driver", "w-3"]), ("x2", 50, [])]}
    t = IncidentTracker(owned_by=lambda owner: owned.get(owner, []))
    t.handle(ev("worker.died", 5.0, worker_id="w-9", cause="killed by signal 9"))
    t.handle(ev("owner.died", 5.01, owner="w-9"))
    t.handle(ev("owner.died", 5.02, owner="w-idle"))  # owned nothing: nothing to tell
    [inc] = t.incidents()
    assert inc["state"] == "failed"
    assert inc["holders"] == ["driver", "w-3"] and inc["owner_bytes"] == 150
    assert [s["kind"] for s in inc["steps"]] == ["died", "owner_died"]
    assert inc["steps"][1]["count"] == 2


def test_deaths_far_apart_are_separate_incidents_and_user_errors_are_none() -> None:
    t = IncidentTracker(merge_window=2.0, quiet=5.0)
    t.handle(ev("task.failed", 1.0, task_id="t", error="TaskError: ZeroDivisionError"))
    t.handle(ev("task.retried", 1.0, task_id="t", attempt=1, reason="ValueError"))
    assert t.incidents() == []
    t.handle(ev("worker.died", 10.0, worker_id="w-1"))
    t.handle(ev("worker.died", 30.0, worker_id="w-2"))
    assert [i["title"] for i in t.incidents()] == ["worker w-1 died", "worker w-2 died"]
    t.handle(ev("task.failed", 30.5, task_id="t2", error="WorkerCrashedError: exit 1"))
    assert t.incidents()[-1]["steps"][-1]["kind"] == "failed"


def test_objects_lost_with_no_death_seen_open_an_incident() -> None:
    t = IncidentTracker()
    t.handle(ev("object.lost", 3.0, object_id="z"))
    t.handle(ev("object.failed", 3.5, object_id="z", error="ObjectLostError"))
    [inc] = t.incidents()
    assert inc["title"] == "objects lost" and inc["state"] == "failed"


def test_incidents_are_bounded() -> None:
    t = IncidentTracker(max_incidents=3, max_items=2, quiet=0.1)
    for i in range(10):
        t.handle(ev("worker.died", 100.0 * i, worker_id=f"w-{i}"))
        for j in range(5):
            t.handle(ev("object.lost", 100.0 * i + 0.01, object_id=f"o{i}-{j}"))
        t.validate()
    assert len(t.incidents()) == 3
    assert t.incidents()[-1]["steps"][1]["count"] == 5
    assert len(t.incidents()[-1]["steps"][1]["items"]) == 2


def test_the_view_builds_incidents_from_the_event_log(model: StateModel) -> None:
    model.apply([created(1, owner="w-7", node="node-1", size=4096)])
    view = DashboardView()
    refresh(view, model)
    model.apply(
        [
            ev("worker.died", 10.0, worker_id="w-7", node="node-1"),
            ev("owner.died", 10.0, owner="w-7"),
        ]
    )
    refresh(view, model, now=1.0)
    reader = Reader()
    reader.pull(view)
    [inc] = reader.sections["incidents"].values()
    assert inc["owner_bytes"] == 4096 and inc["state"] == "failed"
    assert oid(1) not in reader.sections["objects"], "fate-sharing: the object is gone"


def test_the_graph_is_built_only_when_asked_and_at_most_every_graph_interval(
    model: StateModel,
) -> None:
    model.apply([created(1)])
    view = DashboardView(graph_interval=0.5)
    events: list[dict] = []
    view.refresh(model.records(), events, model.latest_seq, 0.0, sections=["objects"])
    assert len(view.tables["graph_nodes"]) == 0 and len(view.tables["objects"]) == 1
    reader = Reader()
    reader.pull(view)
    view.refresh(model.records(), events, model.latest_seq, 1.0, sections=["graph_nodes"])
    assert f"object:{oid(1)}" in view.tables["graph_nodes"].rows()
    model.apply([created(2)])
    view.refresh(model.records(), events, model.latest_seq, 1.2, sections=["graph_nodes"])
    assert f"object:{oid(2)}" not in view.tables["graph_nodes"].rows(), "too soon"
    assert view.due(1.6, model.latest_seq, ["graph_nodes"]), "the graph is still behind"
    view.refresh(model.records(), events, model.latest_seq, 1.6, sections=["graph_nodes"])
    assert f"object:{oid(2)}" in view.tables["graph_nodes"].rows()
    view.validate()
    delta = view.delta(reader.version, ["graph_edges"])
    assert set(delta["sections"]) == {"summary", "graph_nodes", "graph_edges"}
    with pytest.raises(ValueError, match="unknown dashboard view sections"):
        view.delta(0, ["graphs"])
