"""The dashboard's bundle in headless Chromium: what a person sees and can do, at scale.

Runs the built bundle in a plain page (see ``dashboard_page.py``) on view data made by the
real aggregation (a state model and ``DashboardView``, as in the collector): 10,000 objects in
the table, a graph of about 1,000 nodes, an incident, two nodes. Saves screenshots to
``tests/artifacts/``. Needs Debian's chromium (``apt-get install chromium``; CI installs it).
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from memlab.core.dashboard_view import DashboardView
from memlab.core.state_model import StateModel
from memlab.jupyter.dashboard.view_state import ViewState
from tests.jupyter.dashboard_page import ARTIFACTS, chromium_available, dashboard_page, show_tab

if not chromium_available():
    if os.environ.get("CI"):
        raise RuntimeError("CI must install Debian's chromium (see .ci/run) for this test")
    pytest.skip("needs Debian's chromium: apt-get install -y chromium", allow_module_level=True)


def oid(i: int) -> str:
    return f"{i:08x}{'ab' * 12}"


def session(objects: int, tasks: int, aggregate_above: int = 2_000) -> dict[str, Any]:
    """A keyframe of a session with ``objects`` objects (some lost and rebuilding) over two
    nodes, ``tasks`` running tasks, four workers and one incident."""
    m = StateModel()
    now = time.time()
    m.apply(
        [
            {
                "kind": "node.started",
                "ts": now,
                "proc": "driver",
                "node_id": f"node-{n}",
                "pid": 100 + n,
                "store_capacity": 1 << 30,
            }
            for n in range(2)
        ]
    )
    m.apply(
        [
            {
                "kind": "worker.started",
                "ts": now,
                "proc": f"node-{w % 2}",
                "worker_id": f"w-{w}",
                "node": f"node-{w % 2}",
                "pid": 200 + w,
            }
            for w in range(4)
        ]
    )
    m.apply(
        [
            {
                "kind": "task.submitted",
                "ts": now,
                "proc": "driver",
                "task_id": f"t{t}",
                "name": "pipeline.<locals>.load",
                "owner": "driver",
                "returns": [],
                "deps": [oid(t)],
                "call_site": "Cell In[3], line 4",
            }
            for t in range(tasks)
        ]
    )
    m.apply(
        [
            {
                "kind": "task.started",
                "ts": now,
                "proc": "w-1",
                "task_id": "t0",
                "worker": "w-1",
                "node": "node-1",
                "attempt": 0,
            }
        ]
    )
    m.apply(
        [
            {
                "kind": "object.created",
                "ts": now,
                "proc": "driver",
                "object_id": oid(i),
                "owner": "driver" if i % 5 else "w-2",
                "task_id": None,
                "call_site": f"Cell In[{2 + i % 7}], line {1 + i % 3}",
                "size": 1000 + 37 * i,
                "state": "ready",
                "node": f"node-{i % 2}",
            }
            for i in range(objects)
        ]
    )
    m.apply(
        [
            {
                "kind": "object.holders",
                "ts": now,
                "proc": "driver",
                "object_id": oid(i),
                "local": 1,
                "tasks": 1,
                "contained_in": [],
                "borrowers": ["w-3"],
            }
            for i in range(0, objects, 9)
        ]
    )
    m.apply(
        [
            {
                "kind": "node.store",
                "ts": now,
                "proc": f"node-{n}",
                "node_id": f"node-{n}",
                "store_used": 300 << 20,
                "spilled_bytes": (n * 40) << 20,
                "num_objects": 5,
            }
            for n in range(2)
        ]
    )
    m.apply(
        [
            {
                "kind": "worker.died",
                "ts": now + 1,
                "proc": "node-1",
                "worker_id": "w-5",
                "node": "node-1",
                "pid": 300,
                "exitcode": None,
                "signal": 9,
                "cause": "killed by signal 9 (SIGKILL)",
            },
            {"kind": "object.lost", "ts": now + 1.01, "proc": "driver", "object_id": oid(3)},
            {"kind": "object.lost", "ts": now + 1.01, "proc": "driver", "object_id": oid(4)},
            {
                "kind": "task.retried",
                "ts": now + 1.02,
                "proc": "driver",
                "task_id": "t3",
                "attempt": 1,
                "reason": "rebuilding lost results",
            },
            {
                "kind": "object.reconstructing",
                "ts": now + 1.02,
                "proc": "driver",
                "object_id": oid(3),
            },
            {
                "kind": "object.reconstructed",
                "ts": now + 1.4,
                "proc": "driver",
                "object_id": oid(4),
            },
        ]
    )
    view = DashboardView(aggregate_above=aggregate_above)
    events, _ = m.events(0)
    view.refresh(m.records(), events, m.latest_seq, 0.0)
    view.validate()
    state = ViewState(names=lambda: {oid(i): [f"parts[{i}]"] for i in range(0, objects, 3)})
    state.apply(view.delta(0))
    return state.keyframe()


@pytest.fixture(scope="module")
def big() -> dict[str, Any]:
    return session(objects=10_000, tasks=50)


def test_the_objects_table_stays_virtual_sortable_and_filterable_at_10k_rows(
    big: dict[str, Any],
) -> None:
    with dashboard_page(big) as page:
        page.wait_for_selector(".md-tr")
        assert page.inner_text(".md-count") == "10000 objects"
        rows = page.locator(".md-tr").count()
        assert 0 < rows < 100, f"{rows} rows in the DOM for 10,000 objects"
        largest = page.locator(".md-tr").first.get_attribute("data-id")
        assert largest == oid(9_999), "sorted by size, largest first"
        page.screenshot(path=str(ARTIFACTS / "browser-objects-10k.png"))
        page.click('.md-th[data-key="size"]')  # ascending now
        page.wait_for_timeout(50)
        assert page.locator(".md-tr").first.get_attribute("data-id") == oid(0)
        page.fill(".md-filter", "parts[42]")
        page.wait_for_timeout(50)
        assert page.inner_text(".md-count") == "1 of 10000 objects"
        assert "parts[42]" in page.inner_text(".md-tr")
        page.fill(".md-filter", "")
        page.select_option(".md-filter-state", "reconstructing")
        page.wait_for_timeout(50)
        assert page.inner_text(".md-count") == "1 of 10000 objects"
        page.select_option(".md-filter-state", "")
        page.eval_on_selector(".md-tbody", "b => { b.scrollTop = b.scrollHeight; }")
        page.wait_for_timeout(100)
        ids = [e.get_attribute("data-id") for e in page.locator(".md-tr").all()]
        assert oid(9_999) in ids, "scrolled to the end, the last rows are drawn"
        page.locator(".md-tr").last.click()
        assert page.evaluate("window.memlabPage.state.selected") == ids[-1]
        assert page.errors == []


def test_the_graph_of_a_thousand_nodes_pans_hovers_and_selects(tmp_path: Any) -> None:
    frame = session(objects=900, tasks=100)
    assert 990 < len(frame["sections"]["graph_nodes"]) < 1100
    with dashboard_page(frame, tab="graph") as page:
        page.wait_for_function(
            "document.querySelector('.md-graph-canvas canvas') !== null", timeout=20_000
        )
        page.wait_for_timeout(300)
        assert "nodes" in page.inner_text(".md-graph-info")
        page.screenshot(path=str(ARTIFACTS / "browser-graph-1k.png"))
        # Find an object node's place on screen and click it: it becomes the selection.
        target = oid(3)
        found = page.evaluate(
            """(id) => { const c = document.querySelector('.md-graph-canvas')._cyreg.cy;
                 const p = c.getElementById('object:' + id).renderedPosition();
                 return {x: p.x, y: p.y}; }""",
            target,
        )
        box = page.locator(".md-graph-canvas").bounding_box()
        page.mouse.move(box["x"] + found["x"], box["y"] + found["y"])
        page.wait_for_selector(".md-tip", state="visible")
        assert target in page.inner_text(".md-tip")
        assert "reconstructing" in page.inner_text(".md-tip")
        page.mouse.click(box["x"] + found["x"], box["y"] + found["y"])
        page.wait_for_timeout(100)
        assert page.evaluate("window.memlabPage.state.selected") == target
        assert "Selected object" in page.inner_text(".md-graph-details")
        page.click("text=Show in table →")
        page.wait_for_timeout(100)
        assert page.evaluate("window.memlabPage.state.tab") == "objects"
        assert page.locator(".md-tr.md-selected").get_attribute("data-id") == target
        assert page.errors == []


def test_a_large_session_shows_a_grouped_graph() -> None:
    with dashboard_page(session(objects=5_000, tasks=20), tab="graph") as page:
        page.wait_for_function("document.querySelector('.md-graph-canvas canvas') !== null")
        assert "grouped by the task or call site" in page.inner_text(".md-graph-info")
        page.screenshot(path=str(ARTIFACTS / "browser-graph-grouped.png"))
        assert page.errors == []


def test_timeline_and_nodes_show_the_incident_and_the_store_bars(big: dict[str, Any]) -> None:
    with dashboard_page(big) as page:
        show_tab(page, "timeline")
        text = page.inner_text(".md-timeline")
        assert "worker w-5 died" in text and "objects lost 2" in text
        assert "tasks re-run 1" in text and "objects rebuilt 1" in text
        assert "recovering" in text, "one lost object is not rebuilt yet"
        page.screenshot(path=str(ARTIFACTS / "browser-timeline.png"))
        show_tab(page, "nodes")
        assert page.locator(".md-node").count() == 2
        bars = page.locator(".md-bar .md-bar-pinned")
        assert bars.count() == 2
        assert all(
            float(b.evaluate("e => e.getBoundingClientRect().width")) > 0 for b in bars.all()
        ), "pinned bytes show as a bar"
        assert "load() for" in page.inner_text(".md-nodes-view"), "the running task"
        page.screenshot(path=str(ARTIFACTS / "browser-nodes.png"))
        show_tab(page, "timeline")
        page.locator(".md-step-items a").first.click()  # a lost object's id
        page.wait_for_timeout(100)
        assert page.evaluate("window.memlabPage.state.tab") == "objects"
        assert page.evaluate("window.memlabPage.state.selected") == oid(3)
        assert page.locator(".md-tr.md-selected").get_attribute("data-id") == oid(3)
        assert page.errors == []


def test_live_deltas_apply_in_order_and_a_gap_asks_for_a_keyframe() -> None:
    frame = session(objects=20, tasks=2)
    seq = frame["seq"]
    with dashboard_page(frame) as page:
        page.wait_for_selector(".md-tr")
        page.evaluate(
            """([seq, gone]) => window.memlabPage.delta({type: 'delta', base: seq,
            seq: seq + 1, sections: {objects: {reset: false, upsert: [], remove: [gone]}}})""",
            [seq, oid(19)],
        )
        page.wait_for_timeout(50)
        assert page.inner_text(".md-count") == "19 objects"
        page.evaluate(
            """(seq) => window.memlabPage.delta({type: 'delta', base: seq + 5,
            seq: seq + 6, sections: {objects: {reset: true, upsert: [], remove: []}}})""",
            seq,
        )
        page.wait_for_timeout(50)
        assert page.inner_text(".md-count") == "19 objects", "a delta out of step is ignored"
        sent = page.evaluate("window.memlabPage.sent")
        assert {"type": "resync"} in sent and {"type": "hello"} in sent
