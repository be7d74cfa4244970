// Ownership graph: processes, objects (or groups of them), tasks and nodes, with owns,
// borrows, contains, created_by, depends_on and located_at edges, drawn by cytoscape.js on a
// canvas (no WebGL needed). Pan, zoom, hover for details, click selects the object.
// Updates are incremental: elements are added and removed in place, new ones placed beside a
// neighbour; a full layout runs when the structure changed a lot or on "Re-layout".
import cytoscape from "cytoscape";
import fcose from "cytoscape-fcose";
import { el, formatBytes, holdersText, locationText, shortId, shortName, shortSite } from "../format.js";
import { lanesPositions } from "./lanes.js";

// Up to this many nodes a force-directed layout (fcose) draws the graph; above, the lanes
// layout does (fast, and it keeps alike objects apart).
const FORCE_MAX = 150;

cytoscape.use(fcose);

const EDGE_COLORS = {
  owns: "#1e88e5", borrows: "#8e24aa", contains: "#00897b", created_by: "#9e9e9e",
  depends_on: "#f4511e", located_at: "#cfd8dc",
};

const STYLE = [
  { selector: "node", style: {
    "label": "data(label)", "font-size": 9, "color": "#37474f", "text-valign": "bottom",
    "text-margin-y": 2, "width": 14, "height": 14, "background-color": "#90a4ae",
    "border-width": 1, "border-color": "#fff", "min-zoomed-font-size": 7 } },
  { selector: "node[kind = 'process']", style: {
    "shape": "round-rectangle", "width": (n) => 12 + 6.2 * String(n.data("label")).length, "height": 18,
    "background-color": "#3949ab", "color": "#fff", "text-valign": "center", "text-margin-y": 0,
    "font-size": 10, "font-weight": "bold", "min-zoomed-font-size": 0 } },
  { selector: "node[kind = 'process'][?dead]", style: { "background-color": "#b0bec5", "border-color": "#c62828", "border-width": 2 } },
  { selector: "node[kind = 'node']", style: {
    "shape": "barrel", "width": (n) => 16 + 6.2 * String(n.data("label")).length, "height": 22, "background-color": "#546e7a",
    "color": "#fff", "text-valign": "center", "text-margin-y": 0, "font-size": 10, "min-zoomed-font-size": 0 } },
  { selector: "node[kind = 'node'][?dead]", style: { "background-color": "#ef9a9a" } },
  { selector: "node[kind = 'task']", style: {
    "shape": "diamond", "width": 14, "height": 14, "background-color": "#ffb300" } },
  { selector: "node[kind = 'task'][state = 'running']", style: { "background-color": "#fb8c00", "border-color": "#e65100" } },
  { selector: "node[kind = 'task'][state = 'pending']", style: { "background-color": "#ffe082" } },
  { selector: "node[kind = 'object'], node[kind = 'group']", style: { "background-color": "#43a047" } },
  { selector: "node[kind = 'object']", style: { "font-size": 8, "min-zoomed-font-size": 9, "color": "#607d8b" } },
  { selector: "node[kind = 'group']", style: { "width": "data(diam)", "height": "data(diam)", "font-size": 9,
    "text-wrap": "ellipsis", "text-max-width": 140 } },
  { selector: "node[kind != 'task'][kind != 'process'][state = 'pending']", style: { "background-color": "#bdbdbd" } },
  { selector: "node[kind != 'task'][kind != 'process'][state = 'spilled']", style: { "background-color": "#8e24aa" } },
  { selector: "node[kind != 'task'][kind != 'process'][state = 'failed']", style: { "background-color": "#6d4c41" } },
  { selector: "node[kind != 'task'][kind != 'process'][state = 'lost']", style: {
    "background-color": "#e53935", "border-color": "#b71c1c", "border-width": 3 } },
  { selector: "node[kind != 'task'][kind != 'process'][state = 'reconstructing']", style: {
    "background-color": "#fb8c00", "border-color": "#e65100", "border-width": 3, "border-style": "dashed" } },
  { selector: "node:selected, node.md-picked", style: { "border-color": "#000", "border-width": 3, "z-index": 10 } },
  { selector: "edge", style: {
    "width": 1, "line-color": "#b0bec5", "target-arrow-shape": "triangle", "target-arrow-color": "#b0bec5",
    "arrow-scale": 0.6, "curve-style": "haystack", "opacity": 0.8 } },
  ...Object.entries(EDGE_COLORS).map(([kind, color]) => ({
    selector: `edge[kind = '${kind}']`,
    style: { "line-color": color, "target-arrow-color": color },
  })),
  { selector: "edge[kind = 'borrows'], edge[kind = 'depends_on'], edge[kind = 'contains']",
    style: { "curve-style": "straight", "width": 1.5 } },
  { selector: "edge[kind = 'borrows']", style: { "line-style": "dashed" } },
  { selector: "edge[count > 1]", style: { "width": "mapData(count, 1, 1000, 1.5, 6)" } },
];

function nodeData(n) {
  const data = { ...n, dead: n.alive === false };
  if (n.kind === "group") {
    data.diam = Math.min(46, 12 + 4 * Math.log2(1 + (n.count || 1)));
    const name = n.ref.startsWith("task:") ? `${shortName(n.ref.slice(5))}()` : `put @ ${shortSite(n.ref.slice(5))}`;
    data.label = `${name} ×${n.count}`;
  } else if (n.kind === "task") {
    data.label = shortName(n.label) + (n.count > 1 ? ` ×${n.count}` : "");
  } else if (n.kind === "object") {
    data.label = formatBytes(n.size);
  }
  return data;
}

function describe(d, store) {
  const lines = [];
  if (d.kind === "object") {
    const row = store.sections.objects.get(d.ref);
    lines.push(["object", d.ref]);
    if (row) {
      lines.push(["state", row.state], ["size", formatBytes(row.size)], ["owner", row.owner],
        ["holders", holdersText(row, true)], ["call site", row.call_site || "–"],
        ["made by", row.task_name ? `${row.task_name}()` : row.task_id ? shortId(row.task_id) : "put"],
        ["locations", (row.locations || []).map(locationText).join(", ") || "–"]);
      if (row.error) lines.push(["error", row.error]);
    } else lines.push(["state", d.state], ["size", formatBytes(d.size)]);
  } else if (d.kind === "group") {
    lines.push(["group", d.label], ["objects", String(d.count)], ["bytes", formatBytes(d.size)],
      ["states", Object.entries(d.states || {}).map(([s, n]) => `${n} ${s}`).join(", ")]);
  } else if (d.kind === "task") {
    lines.push(["task", `${d.ref && d.count ? d.ref : shortName(d.label)}()`], ["state", d.state || "–"]);
    if (d.count) lines.push(["tasks", String(d.count)]); else lines.push(["id", d.ref]);
  } else if (d.kind === "process") {
    lines.push(["process", d.ref], ["state", d.alive === false ? "dead" : d.alive ? "alive" : "driver / owner"]);
  } else if (d.kind === "node") {
    lines.push(["node", d.ref], ["state", d.alive === false ? "dead" : "alive"]);
  }
  return lines;
}

export function graphView(store) {
  const canvas = el("div", { class: "md-graph-canvas" });
  const tip = el("div", { class: "md-tip", style: { display: "none" } });
  const info = el("span", { class: "md-graph-info" });
  const details = el("div", { class: "md-graph-details" });
  const legend = el("div", { class: "md-legend" },
    ...[["process", "md-k-process"], ["object", "md-k-object"], ["task", "md-k-task"], ["node", "md-k-node"],
      ["lost", "md-k-lost"], ["reconstructing", "md-k-reconstructing"]].map(([t, c]) =>
      el("span", {}, el("i", { class: c }), t)),
    ...Object.entries(EDGE_COLORS).map(([k, c]) => el("span", {}, el("i", { class: "md-k-edge", style: { background: c } }), k.replace("_", " "))));
  const relayout = el("button", { class: "md-btn", text: "Re-layout", onclick: () => layout(true) });
  const fit = el("button", { class: "md-btn", text: "Fit", onclick: () => cy && cy.fit(undefined, 20) });
  const root = el("div", { class: "md-graph" },
    el("div", { class: "md-toolbar" }, relayout, fit, info), legend,
    el("div", { class: "md-graph-body" }, canvas, details), tip);
  let cy = null;
  let drawnAt = -1;
  let visible = false;
  let changedSinceLayout = 0;
  let lastLayout = 0;
  let deferred = null;

  function ensure() {
    if (cy) return;
    // Label colours follow the theme (JupyterLab's dark theme included).
    const fg = getComputedStyle(root).getPropertyValue("--md-fg").trim() || "#37474f";
    const fg2 = getComputedStyle(root).getPropertyValue("--md-fg2").trim() || "#607d8b";
    cy = cytoscape({
      // Pan and zoom move a cached picture of the graph: smooth at thousands of elements.
      container: canvas, style: STYLE, textureOnViewport: true, minZoom: 0.05, maxZoom: 4,
      boxSelectionEnabled: false, autoungrabify: false,
    });
    cy.style().selector("node").style("color", fg).selector("node[kind = 'object']").style("color", fg2)
      .selector("node[kind = 'process'], node[kind = 'node']").style("color", "#fff").update();
    cy.on("mouseover", "node", (e) => showTip(e.target, e.renderedPosition));
    cy.on("mouseout", "node", () => { tip.style.display = "none"; });
    cy.on("tap", "node", (e) => {
      const d = e.target.data();
      if (d.kind === "object") store.select(d.ref);
      showDetails(d);
    });
    cy.on("dbltap", "node[kind = 'object']", (e) => { store.select(e.target.data("ref")); store.showTab("objects"); });
    cy.on("tap", (e) => { if (e.target === cy) details.replaceChildren(); });
  }

  function showTip(node, pos) {
    const lines = describe(node.data(), store);
    tip.replaceChildren(...lines.map(([k, v]) => el("div", {}, el("b", { text: `${k}: ` }), v)));
    tip.style.display = "block";
    tip.style.left = `${canvas.offsetLeft + pos.x + 14}px`;
    tip.style.top = `${canvas.offsetTop + pos.y + 14}px`;
  }

  function showDetails(d) {
    const lines = describe(d, store);
    const kids = [el("div", { class: "md-details-title", text: d.kind === "object" ? "Selected object" : d.kind })];
    for (const [k, v] of lines) kids.push(el("div", {}, el("b", { text: `${k}: ` }), v));
    if (d.kind === "object") {
      kids.push(el("button", { class: "md-btn", text: "Show in table →",
        onclick: () => { store.select(d.ref); store.showTab("objects"); } }));
    }
    details.replaceChildren(...kids);
  }

  function sync() {
    ensure();
    const v = store.versions.graph_nodes + store.versions.graph_edges * 1e6;
    if (v === drawnAt) return;
    drawnAt = v;
    const nodes = store.sections.graph_nodes;
    const edges = store.sections.graph_edges;
    let added = 0;
    let removed = 0;
    cy.batch(() => {
      cy.elements().forEach((ele) => {
        const id = ele.id();
        if (ele.isNode() ? !nodes.has(id) : !edges.has(id)) { ele.remove(); removed += 1; }
      });
      const fresh = [];
      for (const [id, n] of nodes) {
        const ele = cy.getElementById(id);
        if (ele.length) ele.data(nodeData(n));
        else fresh.push({ group: "nodes", data: nodeData(n) });
      }
      const newEdges = [];
      for (const [id, e] of edges) {
        if (!nodes.has(e.src) || !nodes.has(e.dst)) continue;
        const ele = cy.getElementById(id);
        if (ele.length) ele.data("count", e.count || 1);
        else newEdges.push({ group: "edges", data: { id, source: e.src, target: e.dst, kind: e.kind, count: e.count || 1 } });
      }
      const addedNodes = cy.add(fresh);
      cy.add(newEdges);
      added = fresh.length;
      // New nodes start beside a neighbour already placed, so the picture does not jump.
      addedNodes.forEach((n) => {
        const placed = n.neighborhood("node").filter((m) => !addedNodes.has(m));
        const base = placed.length ? placed[0].position() : { x: 0, y: 0 };
        n.position({ x: base.x + (Math.random() - 0.5) * 60, y: base.y + (Math.random() - 0.5) * 60 });
      });
    });
    changedSinceLayout += added + removed;
    const meta = store.graphMeta();
    info.textContent = `${nodes.size} nodes, ${edges.size} edges` +
      (meta.grouped ? ` — ${meta.objects} objects grouped by the task or call site that made them` : "");
    const n = cy.nodes().length;
    if (lastLayout === 0 || (n > FORCE_MAX ? changedSinceLayout > 0 : changedSinceLayout > Math.max(10, 0.2 * n))) layout(false);
  }

  function layout(force) {
    if (!cy || !visible) return;
    const n = cy.nodes().length;
    if (!n) return;
    const now = Date.now();
    const spacing = n > FORCE_MAX ? 1000 : 3000;
    if (!force && now - lastLayout < spacing && lastLayout !== 0) {
      // Bounded: at most one layout per spacing under a stream of changes, and one after it.
      if (!deferred) deferred = setTimeout(() => { deferred = null; layout(false); }, spacing - (now - lastLayout));
      return;
    }
    const first = lastLayout === 0;
    lastLayout = now;
    changedSinceLayout = 0;
    if (n > FORCE_MAX) {
      const pos = lanesPositions(cy, canvas.clientWidth || 1100, canvas.clientHeight || 420);
      cy.layout({ name: "preset", positions: (node) => pos[node.id()] || node.position(), animate: false }).run();
      cy.fit(undefined, 20);
      return;
    }
    // fcose starts from random positions (spectral, then refined) or, to keep the picture a
    // person already reads, from the current ones, which it supports only at "proof" quality.
    const options = first || force
      ? { name: "fcose", quality: "default", randomize: true }
      : { name: "fcose", quality: "proof", randomize: false, numIter: 1000 };
    try {
      // Edges as long as their ends are big (groups are drawn by their size), so none overlap.
      const size = (node) => Math.max(node.width(), node.height());
      cy.layout({ ...options, animate: false, packComponents: true,
        nodeRepulsion: (node) => 4500 + 40 * size(node) * size(node),
        idealEdgeLength: (edge) => 45 + size(edge.source()) + size(edge.target()),
        nodeSeparation: 40, nodeDimensionsIncludeLabels: true }).run();
    } catch (err) {
      console.warn("memlab dashboard: fcose layout failed, using lanes", err);
      const pos = lanesPositions(cy);
      cy.layout({ name: "preset", positions: (node) => pos[node.id()] || node.position(), animate: false }).run();
    }
    cy.fit(undefined, 20);
  }

  function pick() {
    if (!cy) return;
    cy.nodes(".md-picked").removeClass("md-picked");
    if (store.selected) cy.getElementById(`object:${store.selected}`).addClass("md-picked");
  }

  return {
    root,
    update(changed) {
      if (!visible) return;
      if (changed.has("graph_nodes") || changed.has("graph_edges")) sync();
      if (changed.has("selected")) pick();
    },
    show() {
      visible = true;
      ensure();
      cy.resize();
      sync();
      if (lastLayout === 0 || changedSinceLayout) layout(false);
      pick();
    },
    hide() { visible = false; },
    cy: () => cy,
  };
}
