"""The dashboard widget by its model state (no browser): keyframes, deltas, names, fallback,
the update-rate bound, and its life with a real runtime."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import traitlets

import memlab
from memlab.core.dashboard_view import SECTIONS, DashboardView
from memlab.core.state_model import StateModel
from memlab.jupyter.dashboard import Dashboard, dashboard, set_default_names
from memlab.jupyter.dashboard.view_state import upserted_rows
from memlab.runtime.context import current_collector
from memlab.testing import wait_for

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def oid(i: int) -> str:
    return f"{i:032x}"


class FakeSource:
    """``memlab.state.view`` over a model the test folds events into (a collector in-process)."""

    def __init__(self) -> None:
        self.model = StateModel()
        self.view = DashboardView(min_interval=1e-9)
        self.calls = 0
        self.now = 0.0
        self.asked: list[str] | None = None

    def put(self, i: int, size: int = 1000, node: str = "node-0", **extra: Any) -> None:
        self.model.apply(
            [
                {
                    "kind": "object.created",
                    "ts": time.time(),
                    "proc": "driver",
                    "object_id": oid(i),
                    "owner": "driver",
                    "task_id": None,
                    "call_site": f"Cell In[{i}], line 1",
                    "size": size,
                    "state": "ready",
                    "node": node,
                    **extra,
                }
            ]
        )

    def apply(self, *events: dict[str, Any]) -> None:
        self.model.apply([{"ts": time.time(), "proc": "driver", **e} for e in events])

    def __call__(self, since: int | None, sections: list[str] | None) -> dict[str, Any]:
        self.calls += 1
        self.now += 1.0
        self.asked = sections
        wanted = sections or SECTIONS
        if self.view.due(self.now, self.model.latest_seq, wanted):
            events, _ = self.model.events(self.view.event_cursor)
            self.view.refresh(
                self.model.records(), events, self.model.latest_seq, self.now, sections=wanted
            )
        self.view.validate()
        return self.view.delta(since, wanted)


class Recorder:
    """Stands in for the browser: applies the delta messages the widget sends, in order."""

    def __init__(self, widget: Dashboard) -> None:
        self.messages: list[dict[str, Any]] = []
        self.objects: dict[str, dict[str, Any]] = {}
        frame = widget.keyframe
        self.seq = frame.get("seq", 0)
        for row in upserted_rows(frame.get("sections", {}).get("objects", [])):
            self.objects[row["object_id"]] = row
        widget.publisher.on_delta = self.receive

    def receive(self, msg: dict[str, Any]) -> None:
        assert msg["type"] == "delta" and msg["base"] == self.seq, "a delta out of order"
        self.seq = msg["seq"]
        self.messages.append(msg)
        d = msg["sections"].get("objects")
        if d:
            if d["reset"]:
                self.objects.clear()
            for key in d["remove"]:
                self.objects.pop(key, None)
            for row in upserted_rows(d):
                self.objects[row["object_id"]] = row


@pytest.fixture
def source() -> FakeSource:
    return FakeSource()


@pytest.fixture
def widget(source: FakeSource) -> Iterator[Dashboard]:
    w = Dashboard(source=source)
    yield w
    w.close()
    assert not w.publisher._thread or not w.publisher._thread.is_alive()


def test_a_first_snapshot_is_in_the_keyframe_before_the_widget_goes_live(
    source: FakeSource,
) -> None:
    for i in range(3):
        source.put(i)
    w = Dashboard(source=source, tab="graph")
    try:
        w.publisher.poll_once()
        frame = w.keyframe
        assert frame["seq"] == 1
        assert {r["object_id"] for r in upserted_rows(frame["sections"]["objects"])} == {
            oid(i) for i in range(3)
        }
        assert frame["sections"]["summary"][0]["objects"] == 3
        assert {n["id"] for n in frame["sections"]["graph_nodes"]} >= {
            "process:driver",
            "node:node-0",
        }
    finally:
        w.close()


def test_changes_arrive_as_numbered_deltas_of_only_what_changed(
    source: FakeSource, widget: Dashboard
) -> None:
    for i in range(100):
        source.put(i)
    widget.publisher.poll_once()
    browser = Recorder(widget)
    source.apply(
        {"kind": "object.freed", "object_ids": [oid(7)]},
        {"kind": "object.lost", "object_id": oid(8)},
    )
    widget.publisher.poll_once()
    [msg] = browser.messages
    objects = msg["sections"]["objects"]
    assert objects["remove"] == [oid(7)]
    assert [r["object_id"] for r in upserted_rows(objects)] == [oid(8)]
    assert browser.objects[oid(8)]["state"] == "lost" and len(browser.objects) == 99
    assert "incidents" in msg["sections"], "a lost object opens an incident"
    widget.publisher.poll_once()
    assert len(browser.messages) == 1, "nothing changed: nothing sent"


def test_names_from_the_provider_join_the_object_rows(source: FakeSource) -> None:
    names = {oid(1): ["x"], oid(2): ["parts[2]", "Out[4]"]}
    for i in range(5):
        source.put(i)
    w = Dashboard(source=source, names=lambda: dict(names))
    w.state.names_interval = 0.0
    try:
        w.publisher.poll_once()
        rows = {r["object_id"]: r for r in w.state.rows("objects")}
        assert rows[oid(1)]["names"] == ["x"] and rows[oid(3)]["names"] == []
        browser = Recorder(w)
        names[oid(3)] = ["y"]
        w.publisher.poll_once()
        [msg] = browser.messages
        assert [r["object_id"] for r in upserted_rows(msg["sections"]["objects"])] == [oid(3)]
        assert browser.objects[oid(3)]["names"] == ["y"]
    finally:
        w.close()


def test_a_failing_names_provider_is_reported_and_does_not_stop_the_dashboard(
    source: FakeSource,
) -> None:
    def broken() -> dict[str, list[str]]:
        raise RuntimeError("scan failed")

    source.put(1)
    w = Dashboard(source=source, names=broken)
    try:
        w.publisher.poll_once()
        assert w.state.names_error == "RuntimeError: scan failed"
        assert len(w.state.rows("objects")) == 1
    finally:
        w.close()


def test_the_default_names_hook_is_used_by_new_dashboards(source: FakeSource) -> None:
    source.put(1)
    set_default_names(lambda: {oid(1): ["df"]})
    try:
        w = Dashboard(source=source)
        w.publisher.poll_once()
        assert w.state.rows("objects")[0]["names"] == ["df"]
        w.close()
    finally:
        set_default_names(None)
    with pytest.raises(TypeError, match="callable"):
        set_default_names("x")  # type: ignore[arg-type]


def test_a_browser_that_asks_gets_a_keyframe_at_the_next_tick(
    source: FakeSource, widget: Dashboard
) -> None:
    source.put(1)
    widget.publisher.poll_once()
    first = widget.keyframe
    source.put(2)
    widget.publisher.poll_once()
    assert widget.keyframe is first, "keyframes are rare while deltas flow"
    widget._handle_custom_msg({"type": "resync"}, [])
    widget.publisher.poll_once()
    assert widget.keyframe["seq"] == 2
    assert len(upserted_rows(widget.keyframe["sections"]["objects"])) == 2


def test_the_static_fallback_shows_the_four_views(source: FakeSource, widget: Dashboard) -> None:
    source.apply(
        {"kind": "node.started", "node_id": "node-0", "pid": 1, "store_capacity": 1 << 30},
        {"kind": "worker.started", "worker_id": "w-1", "node": "node-0", "pid": 2},
    )
    source.put(1, size=5 << 20)
    source.put(2, size=10)
    source.apply(
        {"kind": "node.died", "node_id": "node-1"},
        {"kind": "object.lost", "object_id": oid(2)},
        {"kind": "object.reconstructed", "object_id": oid(2)},
    )
    widget.publisher.poll_once()
    data, _ = widget._repr_mimebundle_()
    assert data[WIDGET_MIME]["model_id"] == widget.model_id
    page = data["text/html"]
    assert "<script" not in page, "the fallback is plain HTML"
    for text in (
        oid(1)[:12],
        "5.0 MiB",
        "node-0",
        "w-1",
        "node node-1 died",
        "lost 1 → reconstructed 1",
        "Recovery timeline",
        "Workers",
        "its store and spill files went with it",
    ):
        assert text in page, text


def test_the_fallback_escapes_what_users_named(source: FakeSource) -> None:
    source.put(1, call_site="<img src=x onerror=alert(1)>")
    w = Dashboard(source=source)
    try:
        w.publisher.poll_once()
        page = w._repr_mimebundle_()[0]["text/html"]  # type: ignore[index]
        assert "<img" not in page and "&lt;img" in page
    finally:
        w.close()


def test_every_section_is_kept_live_whatever_the_tab(source: FakeSource, widget: Dashboard) -> None:
    # A tab switched in the browser while a cell runs reaches the kernel only after the cell:
    # the graph must already be there when the browser shows it.
    source.put(1)
    widget.publisher.poll_once()
    assert widget.tab == "objects"
    assert "process:driver" in widget.state.sections["graph_nodes"]


def test_dashboards_fed_alike_share_one_publisher(source: FakeSource) -> None:
    source.put(1)
    first = Dashboard(source=source).start()
    try:
        source.put(2)
        wait_for(lambda: len(first.state.sections["objects"]) == 2, 5, message="a live update")
        late = Dashboard(source=source).start()  # a notebook re-run displays another one
        assert late.publisher is first.publisher and late.state is first.state
        assert len(upserted_rows(late.keyframe["sections"]["objects"])) == 2, (
            "a late dashboard starts from the current keyframe"
        )
        assert late.status == "live"
        threads = [t for t in threading.enumerate() if t.name == "memlab-dashboard-publisher"]
        assert len(threads) == 1
        first.close()
        source.put(3)
        wait_for(
            lambda: len(late.state.sections["objects"]) == 3,
            5,
            message="the other dashboard stays live",
        )
        late.close()
        wait_for(
            lambda: not any(t.name == "memlab-dashboard-publisher" for t in threading.enumerate()),
            5,
            message="the last one closed stops the publisher",
        )
        again = Dashboard(source=source)
        assert again.publisher is not first.publisher, "a stopped hub is not reused"
        again.close()
    finally:
        first.close()


def test_tabs_are_checked(widget: Dashboard) -> None:
    widget.tab = "graph"
    with pytest.raises(traitlets.TraitError, match="unknown dashboard tab 'graphs'"):
        widget.tab = "graphs"


def test_the_rate_bound_is_checked(source: FakeSource) -> None:
    with pytest.raises(ValueError, match=r"max_rate_hz must be in \(0, 10\]"):
        Dashboard(source=source, max_rate_hz=50)


def test_an_idle_dashboard_polls_slowly(source: FakeSource) -> None:
    w = Dashboard(source=source)
    w.publisher.idle_after = 0.0
    w.publisher.idle_interval = 0.5
    try:
        w.start()
        wait_for(lambda: source.calls >= 2, 5, message="a second poll")
        started, calls = time.monotonic(), source.calls
        wait_for(lambda: source.calls >= calls + 2, 5, message="two more polls")
        # Two idle polls take at least one idle interval (a busy one would take 0.2 s).
        assert time.monotonic() - started >= 0.5
    finally:
        w.close()


def test_dashboard_needs_a_runtime() -> None:
    assert not memlab.is_initialized()
    with pytest.raises(memlab.RuntimeNotStartedError, match=r"memlab\.init\(\)"):
        memlab.dashboard()


# ---------------------------------------------------------------------- with a real runtime


@memlab.remote
def noop() -> None:
    return None


def test_a_burst_of_ten_thousand_events_reaches_the_browser_at_most_ten_times_a_second(
    fresh_runtime: Any,
) -> None:
    fresh_runtime(num_workers=2)
    w = dashboard()
    browser = Recorder(w)
    collector = current_collector()
    assert collector is not None
    before = collector.statistics()["latest_seq"]
    started = time.monotonic()
    refs = [memlab.put(i) for i in range(2000)]
    for _ in range(8):  # a task ends as one event: 8,000, plus the puts and their frees
        memlab.get([noop.remote() for _ in range(1000)])
    del refs
    assert collector.statistics()["latest_seq"] - before >= 10_000
    wait_for(lambda: not browser.objects, 20, message="the frees reach the browser")
    took = time.monotonic() - started
    times = w.publisher.sent_at[-len(browser.messages) :]
    for i in range(len(times)):
        in_a_second = [t for t in times[i:] if t - times[i] < 1.0]
        assert len(in_a_second) <= 10, f"{len(in_a_second)} updates within 1 s"
    assert 2 <= len(browser.messages) <= 10 * took + 1
    w.close()


def test_the_dashboard_stops_with_the_runtime_and_keeps_its_last_state(fresh_runtime: Any) -> None:
    fresh_runtime(num_workers=1)
    keep = memlab.put(b"x" * 200_000)
    w = dashboard()
    assert any(r["object_id"] == keep.hex() for r in w.state.rows("objects"))
    assert w.status == "live"
    memlab.shutdown()
    wait_for(lambda: w.status.startswith("stopped"), 10, message="the dashboard stops")
    assert "memlab.init()" in w.status or "collector" in w.status, w.status
    assert w.state.rows("objects"), "the last state stays on screen"
    w.close()
