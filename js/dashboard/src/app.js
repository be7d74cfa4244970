// The dashboard: a header with the status and totals, tabs, and the four views, mounted on
// any element and fed by a Store. Hosted by the notebook widget (index.js) and, later, by the
// web dashboard page, which feeds the same Store from a WebSocket.
import { el, formatBytes } from "./format.js";
import { graphView } from "./views/graph.js";
import { nodesView } from "./views/nodes.js";
import { objectsView } from "./views/objects.js";
import { timelineView } from "./views/timeline.js";

export const TABS = [
  ["objects", "Objects"], ["graph", "Ownership graph"], ["timeline", "Recovery timeline"],
  ["nodes", "Workers & nodes"],
];

export function mountDashboard(host, store) {
  const views = {
    objects: objectsView(store), graph: graphView(store), timeline: timelineView(store),
    nodes: nodesView(store),
  };
  const status = el("span", { class: "md-status" });
  const summary = el("span", { class: "md-summary" });
  const tabs = el("div", { class: "md-tabs", role: "tablist" });
  const buttons = {};
  for (const [name, label] of TABS) {
    buttons[name] = el("button", { class: "md-tab", role: "tab", "data-tab": name,
      onclick: () => store.showTab(name) }, label, el("span", { class: "md-tab-count" }));
    tabs.append(buttons[name]);
  }
  const panes = el("div", { class: "md-panes" });
  for (const [name] of TABS) panes.append(el("div", { class: "md-pane", "data-pane": name }, views[name].root));
  const root = el("div", { class: "memlab-dash" },
    el("div", { class: "md-header" }, el("span", { class: "md-title", text: "memlab" }), status, summary),
    tabs, panes);
  host.append(root);
  let shown = null;

  function showTab() {
    const tab = store.tab in views ? store.tab : "objects";
    for (const [name] of TABS) {
      buttons[name].classList.toggle("md-active", name === tab);
      panes.querySelector(`[data-pane="${name}"]`).style.display = name === tab ? "" : "none";
    }
    if (shown !== tab) {
      if (shown && views[shown].hide) views[shown].hide();
      shown = tab;
      views[tab].show();
    }
  }

  function header() {
    const t = store.totals();
    const live = store.status === "live";
    status.className = `md-status ${live ? "md-live" : "md-stopped"}`;
    status.textContent = live ? "● live" : store.status;
    const nodes = store.rows("nodes");
    const alive = nodes.filter((n) => n.alive).length;
    const workers = store.rows("workers").filter((w) => w.state === "alive").length;
    summary.textContent = `${t.objects ?? 0} objects · ${formatBytes(t.bytes ?? 0)} · ` +
      `${workers} workers · ${alive}/${nodes.length} nodes`;
    const incidents = store.rows("incidents");
    const recovering = incidents.filter((i) => i.state === "recovering").length;
    buttons.objects.lastChild.textContent = ` ${t.objects ?? 0}`;
    buttons.timeline.lastChild.textContent = incidents.length ? ` ${incidents.length}` : "";
    buttons.timeline.classList.toggle("md-alert", recovering > 0);
    buttons.graph.lastChild.textContent = ` ${store.sections.graph_nodes.size}`;
  }

  const unsubscribe = store.subscribe((changed) => {
    if (changed.has("tab")) showTab();
    header();
    views[shown].update(changed);
  });
  showTab();
  header();
  return () => { unsubscribe(); root.remove(); };
}
