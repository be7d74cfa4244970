// Workers and nodes: per node its store use (pinned primary copies, other use, free; spilled
// beside) as bars, and its workers with their state and current task.
import { badge, el, formatBytes, formatDuration, shortName } from "../format.js";

export function nodesView(store) {
  const list = el("div", { class: "md-nodes" });
  const root = el("div", { class: "md-nodes-view" }, list);
  let drawnAt = "";

  function bar(n) {
    const cap = n.store_capacity || n.store_used || 1;
    const pinned = Math.min(n.primary_bytes || 0, n.store_used || 0);
    const other = Math.max(0, (n.store_used || 0) - pinned);
    const pct = (x) => `${Math.min(100, (100 * x) / cap).toFixed(2)}%`;
    return el("div", { class: "md-bar", title: `${formatBytes(n.store_used)} of ${formatBytes(cap)} used` },
      el("div", { class: "md-bar-pinned", style: { width: pct(pinned) }, title: `pinned (primary copies): ${formatBytes(pinned)}` }),
      el("div", { class: "md-bar-used", style: { width: pct(other) }, title: `other use (secondary copies, unsealed): ${formatBytes(other)}` }));
  }

  function legend() {
    return el("div", { class: "md-bar-legend" },
      el("span", {}, el("i", { class: "md-bar-pinned" }), "pinned (primary copies)"),
      el("span", {}, el("i", { class: "md-bar-used" }), "other (secondary copies)"),
      el("span", {}, el("i", { class: "md-bar-free" }), "free"),
      el("span", {}, el("i", { class: "md-bar-spilled" }), "spilled to disk"));
  }

  function spillBar(n, maxSpill) {
    const s = n.spilled_bytes || 0;
    return el("div", { class: "md-bar md-bar-thin", title: `spilled to disk: ${formatBytes(s)}` },
      el("div", { class: "md-bar-spilled", style: { width: `${maxSpill ? (100 * s) / maxSpill : 0}%` } }));
  }

  function draw() {
    const key = `${store.versions.nodes}/${store.versions.workers}`;
    if (key === drawnAt) return;
    drawnAt = key;
    const nodes = store.rows("nodes").sort((a, b) => a.node_id.localeCompare(b.node_id, undefined, { numeric: true }));
    const workers = store.rows("workers");
    const maxSpill = Math.max(1, ...nodes.map((n) => n.spilled_bytes || 0));
    const now = Date.now() / 1000;
    if (!nodes.length) { list.replaceChildren(el("div", { class: "md-empty", text: "No nodes yet." })); return; }
    list.replaceChildren(...nodes.map((n) => {
      const mine = workers.filter((w) => w.node === n.node_id)
        .sort((a, b) => (a.state === b.state ? a.worker_id.localeCompare(b.worker_id) : a.state === "alive" ? -1 : 1));
      const rows = mine.map((w) => {
        const t = w.current_task;
        const doing = w.state !== "alive"
          ? (w.cause || (w.signal ? `signal ${w.signal}` : w.exitcode !== null && w.exitcode !== undefined ? `exit ${w.exitcode}` : "dead"))
          : t ? `${shortName(t.name) || "task"}() for ${formatDuration(now - (t.started_at || now))}` : "idle";
        return el("tr", { class: w.state !== "alive" ? "md-dead" : "" },
          el("td", {}, el("code", { text: w.worker_id })), el("td", {}, badge(w.state)),
          el("td", { text: w.pid ? `pid ${w.pid}` : "" }), el("td", { class: t ? "md-busy" : "", text: doing }));
      });
      return el("div", { class: `md-node${n.alive ? "" : " md-node-dead"}` },
        el("div", { class: "md-node-head" }, el("b", { text: n.node_id }), badge(n.alive ? "alive" : "dead"),
          el("span", { class: "md-node-nums",
            text: n.alive
              ? `store ${formatBytes(n.store_used)} / ${formatBytes(n.store_capacity)} · pinned ${formatBytes(n.primary_bytes)} · ` +
                `${n.num_objects || 0} objects · spilled ${formatBytes(n.spilled_bytes)}`
              : "its store and spill files went with it" })),
        n.alive ? el("div", { class: "md-bar-row" }, el("span", { class: "md-bar-label", text: "store" }), bar(n)) : null,
        n.alive ? el("div", { class: "md-bar-row" }, el("span", { class: "md-bar-label", text: "spilled" }), spillBar(n, maxSpill)) : null,
        n.alive ? legend() : null,
        el("table", { class: "md-workers" },
          el("tr", {}, el("th", { text: "worker" }), el("th", { text: "state" }), el("th", { text: "" }), el("th", { text: "current task / exit cause" })),
          ...rows));
    }));
  }

  return {
    root,
    update(changed) { if (changed.has("nodes") || changed.has("workers")) draw(); },
    show: draw,
  };
}
