"""One look as a person would: JupyterLab in chromium opens the notebooks, runs every cell, and
shows the results and the dashboard widget's four views; screenshots go to tests/artifacts/.

The test reads the notebook's model through ``window.jupyterapp`` (exposed by the server) to
know that every cell ran and none failed, and screenshots the page for a human to look at.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from memlab.testing.leaks import wait_for
from tests.browser.lab_server import LabServer, lab_server

RUN_TIMEOUT = 120.0  # seconds for a notebook's cells to run (each takes < 15 s alone)

# The notebook panel's cells, as the model has them: type, execution count, output types.
_CELLS_JS = """name => {
  const panel = window.jupyterapp.shell.currentWidget;
  if (!panel || !panel.content || !panel.sessionContext) return null;
  const status = panel.sessionContext.session?.kernel?.status ?? "none";
  const cells = [];
  for (const cell of panel.content.model.cells) {
    const json = cell.toJSON();
    cells.push({type: json.cell_type, count: json.execution_count ?? null,
                outputs: (json.outputs || []).map(o => ({type: o.output_type,
                  ename: o.ename || null, evalue: o.evalue || null}))});
  }
  return {status, cells};
}"""


def cells(page: Any, name: str) -> dict[str, Any] | None:
    return page.evaluate(_CELLS_JS, name)  # type: ignore[no-any-return]


def open_notebook(page: Any, server: LabServer, name: str) -> None:
    """Open ``name`` alone (a reset workspace) and wait until its kernel is idle."""
    page.goto(server.notebook_url(name))
    page.wait_for_function(
        """name => {
          const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
          return !!(w && w.context && w.context.path.endsWith(name)
                    && w.sessionContext.session?.kernel?.status === "idle");
        }""",
        arg=name,
        timeout=60_000,
    )


def run_all(page: Any, name: str) -> dict[str, Any]:
    """Run every cell and wait until each code cell has an execution count and the kernel is
    idle again; return the notebook's cells."""
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    state: dict[str, Any] = {}

    def finished() -> bool:
        snap = cells(page, name)
        if not snap:
            return False
        state.update(snap)
        code = [c for c in snap["cells"] if c["type"] == "code"]
        return snap["status"] == "idle" and all(c["count"] for c in code)

    try:
        wait_for(finished, timeout=RUN_TIMEOUT, interval=0.25, message=f"{name}: every cell ran")
    except AssertionError as exc:
        seen = [(c["type"], c["count"], c["outputs"]) for c in state.get("cells", [])]
        raise AssertionError(
            f"{exc}; kernel {state.get('status')}, cells (type, count, outputs): {seen}"
        ) from None
    return state


def screenshot_whole_notebook(page: Any, path: Path) -> None:
    """The notebook scrolls inside its panel, not the page: grow the viewport to the panel's
    content height (bounded), screenshot, and restore it."""
    size = page.viewport_size
    height = page.evaluate("""() => {
      const notebook = window.jupyterapp.shell.currentWidget?.content;
      const scroller = notebook?.outerNode ?? notebook?.node;
      if (!scroller) return 0;
      const extra = window.innerHeight - scroller.clientHeight;  // menus, toolbar, status bar
      return scroller.scrollHeight + extra;
    }""")
    tall = min(max(height, size["height"]), 14000)
    page.set_viewport_size({"width": size["width"], "height": tall})
    page.evaluate("""() => {
      const notebook = window.jupyterapp.shell.currentWidget.content;
      (notebook.outerNode ?? notebook.node).scrollTop = 0;
    }""")
    page.wait_for_timeout(500)  # one layout pass of the resized notebook before the picture
    page.screenshot(path=str(path))
    page.set_viewport_size(size)


TABS = ("objects", "graph", "timeline", "nodes")


def check_dashboard(page: Any, name: str, artifacts: Path) -> dict[str, str]:
    """The notebook's dashboard widget renders its four views with what the session holds;
    each view is screenshotted. Returns each view's text."""
    widget = page.locator(".jp-OutputArea-output:has(.md-tab)").first
    widget.wait_for(timeout=30_000)
    assert sorted(
        widget.locator(".md-tab").evaluate_all("bs => bs.map(b => b.dataset.tab)")
    ) == sorted(TABS), f"{name}: the four views"
    texts = {}
    stem = Path(name).stem
    for tab in TABS:
        widget.locator(f'.md-tab[data-tab="{tab}"]').click()
        pane = widget.locator(f'.md-pane[data-pane="{tab}"]')
        pane.wait_for(state="visible", timeout=10_000)
        if tab == "objects":  # the table lists the objects the notebook still holds
            pane.locator(".md-tr").first.wait_for(timeout=20_000)
        elif tab == "graph":  # cytoscape drew the graph
            pane.locator(".md-graph-canvas canvas").first.wait_for(state="attached", timeout=20_000)
        elif tab == "nodes":
            pane.locator(".md-node").first.wait_for(timeout=20_000)
        texts[tab] = pane.inner_text()
        widget.screenshot(path=str(artifacts / f"{stem}-dashboard-{tab}.png"))
    return texts


def errors(state: dict[str, Any]) -> list[str]:
    return [
        f"cell {i}: {o['ename']}: {o['evalue']}"
        for i, c in enumerate(state["cells"])
        for o in c["outputs"]
        if o["type"] == "error"
    ]


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_jupyterlab_runs_the_quickstart_and_fault_tolerance_notebooks(
    browser: Any, artifacts: Path, tmp_path: Path
) -> None:
    started = time.monotonic()
    session_pids: set[int] = set()
    with lab_server(tmp_path) as server:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        for name in ("01-quickstart.ipynb", "03-fault-tolerance.ipynb"):
            open_notebook(page, server, name)
            try:
                state = run_all(page, name)
            finally:
                screenshot_whole_notebook(page, artifacts / f"{Path(name).stem}.png")
            session_pids |= server.session_pids()
            assert not errors(state), f"{name}: {errors(state)}"
            code = [c for c in state["cells"] if c["type"] == "code"]
            assert code[0]["outputs"], f"{name}: %memlab start shows the runtime"
            views = check_dashboard(page, name, artifacts)
            assert "node-0" in views["nodes"]
            if name.startswith("03"):
                # The node killed in part 2 is an incident: died, lost, re-run, rebuilt.
                timeline = views["timeline"]
                assert "node-1" in timeline and "died" in timeline, timeline
                assert "objects lost" in timeline and "objects rebuilt" in timeline, timeline
                assert "copies promoted" in timeline, timeline  # part 3: node-2's copies
                assert "node-1" in views["nodes"] and "node-2" in views["nodes"]
        page.close()
    assert session_pids, "the notebooks started memlab sessions in their kernels"
    wait_for(
        lambda: (
            not [
                p
                for p in session_pids
                if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
            ]
        ),
        timeout=15,
        message="the kernels' memlab sessions ended with the server",
    )
    print(f"browser test: {time.monotonic() - started:.1f} s")
