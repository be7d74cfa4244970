"""Render the dashboard's browser bundle in a plain page, in headless Chromium, as a user sees it.

The page hosts the built bundle (``memlab/jupyter/dashboard/static``) with a stand-in for the
widget model (get/set/on/send, as anywidget gives one), fed a keyframe and then deltas from a
real widget's :class:`~memlab.jupyter.dashboard.view_state.ViewState`. Nothing is loaded from
the network: the page and the bundle are served by Playwright's request routing.

Used by ``test_dashboard_browser.py`` and, by hand, to take screenshots::

    python tests/jupyter/dashboard_page.py      # a real session with a node killed → PNGs in
                                                # tests/artifacts/
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

STATIC = pathlib.Path(__file__).resolve().parents[2] / "memlab" / "jupyter" / "dashboard" / "static"
ARTIFACTS = pathlib.Path(__file__).resolve().parents[1] / "artifacts"
ORIGIN = "http://memlab-dashboard.invalid"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

_PAGE = """<!doctype html><html><head><meta charset="utf-8">
<link rel="stylesheet" href="/dashboard.css">
<style>body{margin:12px;background:#fff} #host{width:%(width)dpx}</style></head>
<body><div id="host"></div>
<script type="module">
import widget from "/dashboard.js";
const state = %(state)s;
const handlers = {};
const sent = [];
const model = {
  get: (k) => state[k],
  set: (k, v) => { state[k] = v; (handlers["change:" + k] || []).forEach((f) => f()); },
  on: (e, f) => { (handlers[e] = handlers[e] || []).push(f); },
  off: () => {},
  send: (m) => sent.push(m),
  save_changes: () => {},
};
window.memlabPage = {
  model, sent, state,
  delta: (msg) => (handlers["msg:custom"] || []).forEach((f) => f(msg)),
  keyframe: (frame) => model.set("keyframe", frame),
};
widget.initialize({ model });
widget.render({ model, el: document.getElementById("host") });
window.memlabReady = true;
</script></body></html>"""


def chromium_available() -> bool:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return False
    return os.path.exists(CHROMIUM)


@contextmanager
def dashboard_page(
    keyframe: dict[str, Any], width: int = 1200, tab: str = "objects", status: str = "live"
) -> Iterator[Any]:
    """A Playwright page showing the dashboard with ``keyframe`` loaded."""
    from playwright.sync_api import sync_playwright

    state = {"keyframe": keyframe, "status": status, "selected": "", "tab": tab}
    html = _PAGE % {"width": width, "state": json.dumps(state)}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page(viewport={"width": width + 40, "height": 640})

            def serve(route: Any) -> None:
                path = route.request.url[len(ORIGIN) :].split("?")[0]
                if path in ("/", "/index.html"):
                    route.fulfill(body=html, content_type="text/html")
                elif path in ("/dashboard.js", "/dashboard.css"):
                    kind = "text/javascript" if path.endswith(".js") else "text/css"
                    route.fulfill(body=(STATIC / path[1:]).read_bytes(), content_type=kind)
                else:
                    route.fulfill(status=404, body="")

            page.route(f"{ORIGIN}/**", serve)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            if os.environ.get("MEMLAB_PAGE_DEBUG"):
                page.on("console", lambda m: print("console:", m.text))
                page.on("pageerror", lambda exc: print("pageerror:", exc))
            page.goto(f"{ORIGIN}/")
            page.wait_for_function("window.memlabReady === true", timeout=60_000)
            page.errors = errors
            yield page
        finally:
            browser.close()


def show_tab(page: Any, tab: str) -> None:
    page.click(f'button[data-tab="{tab}"]')
    page.wait_for_timeout(50)  # one animation frame for the store's batched redraw


def _demo_session() -> tuple[dict[str, Any], str]:
    """A real session: tasks, puts, a borrower, a node killed and rebuilt. Returns a keyframe
    and the static snapshot."""
    import time

    import numpy as np

    import memlab
    from memlab.jupyter.dashboard import Dashboard
    from memlab.testing import drop_copies, kill_node, wait_for

    memlab.init(num_workers=4, num_nodes=2, object_store_memory=512 << 20)
    try:

        @memlab.remote
        def load(i: int) -> np.ndarray:
            time.sleep(0.05)
            return np.full(200_000 + 10_000 * i, i, dtype=np.float64)

        @memlab.remote
        def total(a: np.ndarray) -> float:
            return float(a.sum())

        @memlab.remote
        def slow(a: np.ndarray) -> float:
            time.sleep(30)
            return float(a.sum())

        parts = [load.remote(i) for i in range(12)]
        memlab.get(parts)
        table = memlab.put(np.arange(1_000_000))
        sums = [total.remote(p) for p in parts[:4]]
        pending = slow.remote(table)  # a running task holding a borrowed ref
        small = [memlab.put(i) for i in range(30)]
        memlab.get(sums)
        names = {parts[i].hex(): [f"parts[{i}]"] for i in range(12)}
        names[table.hex()] = ["table"]
        widget = Dashboard(names=lambda: names)
        widget.publisher.poll_once()
        drop_copies("node-0")  # so the node's death loses objects, which lineage rebuilds
        kill_node("node-1")
        memlab.get(parts)  # rebuilt by lineage where they were lost
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            time.sleep(0.2)
            widget.publisher.poll_once()
            incidents = widget.state.rows("incidents")
            if incidents and all(i["state"] != "recovering" for i in incidents):
                break
        wait_for(lambda: bool(widget.state.rows("incidents")), 5, message="an incident")
        frame = widget.state.keyframe()
        html = widget._repr_mimebundle_()[0]["text/html"]  # type: ignore[index]
        widget.close()
        del pending, small, sums
        return frame, html
    finally:
        memlab.shutdown()


def main() -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    frame, html = _demo_session()
    (ARTIFACTS / "dashboard-keyframe.json").write_text(json.dumps(frame))
    (ARTIFACTS / "dashboard-snapshot.html").write_text(html)
    with dashboard_page(frame) as page:
        for tab in ("objects", "graph", "timeline", "nodes"):
            show_tab(page, tab)
            if tab == "graph":
                page.wait_for_timeout(500)
            page.screenshot(path=str(ARTIFACTS / f"dashboard-{tab}.png"), full_page=True)
        if page.errors:
            raise SystemExit(f"page errors: {page.errors}")
        page.set_content(f"<html><body style='margin:12px'>{html}</body></html>")
        page.screenshot(path=str(ARTIFACTS / "dashboard-snapshot.png"), full_page=True)
    print(f"screenshots in {ARTIFACTS}")


if __name__ == "__main__":
    main()
