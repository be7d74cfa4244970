"""memlab's live dashboard widget: objects, ownership graph, recovery timeline, workers and nodes.

::

    memlab.dashboard()        # or memlab.jupyter.dashboard.dashboard(names=provider)

The views' data is aggregated in the session's collector process (``memlab.state.view``); the
kernel merges deltas and forwards them at most ten times a second from a background thread.
"""

from memlab.jupyter.dashboard.view_state import NamesProvider
from memlab.jupyter.dashboard.widget import Dashboard, dashboard, set_default_names

__all__ = ["Dashboard", "NamesProvider", "dashboard", "set_default_names"]
