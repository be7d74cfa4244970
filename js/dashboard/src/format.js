// Formatting shared by the views (mirrors memlab/jupyter/dashboard/snapshot_html.py).

export function formatBytes(n) {
  if (n === null || n === undefined) return "–";
  let v = Number(n);
  for (const unit of ["B", "KiB", "MiB", "GiB", "TiB"]) {
    if (Math.abs(v) < 1024 || unit === "TiB") {
      return unit === "B" ? `${v.toFixed(0)} B` : `${v.toFixed(1)} ${unit}`;
    }
    v /= 1024;
  }
  return `${v.toFixed(1)} TiB`;
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "–";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
  const m = Math.floor(seconds / 60);
  return `${m} min ${Math.round(seconds - 60 * m)} s`;
}

export function formatClock(ts) {
  if (!ts) return "–";
  const d = new Date(ts * 1000);
  return d.toLocaleTimeString([], { hour12: false });
}

export function shortId(id, n = 10) {
  return id && id.length > n ? id.slice(0, n) : id || "–";
}

// The states an object may be in, most urgent first (the order of core/graph_aggregate.py).
export const STATES = ["lost", "reconstructing", "failed", "pending", "spilled", "ready"];

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "style" && typeof v === "object") Object.assign(node.style, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export function badge(state) {
  return el("span", { class: `md-badge md-s-${state}`, text: state });
}

// What holds an object besides the notebook's names (those have a column of their own).
export function holdersText(row, withNames = false) {
  const h = row.holders || {};
  const parts = withNames ? [...(row.names || [])] : [];
  if (h.local) parts.push(`${h.local} ref${h.local === 1 ? "" : "s"} in ${row.owner}`);
  if (h.tasks) parts.push(`${h.tasks} pending task${h.tasks === 1 ? "" : "s"}`);
  for (const b of h.borrowers || []) parts.push(`borrowed by ${b}`);
  for (const c of h.contained_in || []) parts.push(`inside ${shortId(c, 8)}`);
  return parts.join(", ") || "–";
}

// "_demo.<locals>.load" → "load": a task's function name as a person calls it.
export function shortName(name) {
  if (!name) return name;
  const parts = String(name).split(".");
  return parts[parts.length - 1] || name;
}

// "/home/me/project/pipeline.py:12" → "pipeline.py:12"; notebook cells stay as they are.
export function shortSite(site) {
  if (!site) return site;
  const i = site.lastIndexOf("/");
  return i >= 0 ? site.slice(i + 1) : site;
}

// "owner:driver" → "inline in driver" (a small value kept in its owner's memory).
export function locationText(loc) {
  return loc && loc.startsWith("owner:") ? `inline in ${loc.slice(6)}` : loc;
}
