// Objects: totals per node and per owner, and a virtualized, sortable, filterable table that
// stays responsive at 10,000 rows (only the rows in sight are in the DOM).
import { badge, el, formatBytes, holdersText, locationText, shortId, shortName, shortSite, STATES } from "../format.js";

const ROW_H = 24;
const OVERSCAN = 12;

const COLUMNS = [
  { key: "object_id", label: "object", width: "110px", value: (r) => r.object_id,
    cell: (r) => el("code", { text: shortId(r.object_id, 12), title: r.object_id }) },
  { key: "state", label: "state", width: "112px",
    value: (r) => STATES.indexOf(r.state), cell: (r) => badge(r.state) },
  { key: "size", label: "size", width: "84px", num: true, value: (r) => r.size ?? -1,
    cell: (r) => formatBytes(r.size) },
  { key: "names", label: "names", width: "minmax(80px, 1fr)",
    value: (r) => (r.names || []).join(", "), cell: (r) => (r.names || []).join(", ") || "–",
    title: (r) => (r.names || []).join(", ") || "no notebook name holds it" },
  { key: "holders", label: "other holders", width: "minmax(160px, 1.6fr)",
    value: (r) => holdersText(r), cell: (r) => holdersText(r), title: (r) => holdersText(r) },
  { key: "call_site", label: "call site", width: "minmax(140px, 1.5fr)",
    value: (r) => r.call_site || "", cell: (r) => shortSite(r.call_site) || "–",
    title: (r) => r.call_site },
  { key: "task_name", label: "made by", width: "minmax(90px, 1fr)",
    value: (r) => r.task_name || (r.task_id ? "task" : "put"),
    cell: (r) => r.task_name ? `${shortName(r.task_name)}()` : (r.task_id ? shortId(r.task_id, 8) : "put"),
    title: (r) => r.task_name || r.task_id },
  { key: "owner", label: "owner", width: "100px", value: (r) => r.owner || "", cell: (r) => r.owner },
  { key: "locations", label: "locations", width: "minmax(100px, 1fr)",
    value: (r) => (r.locations || []).join(","),
    cell: (r) => (r.locations || []).map(locationText).join(", ") || "–" },
];

function searchText(r) {
  return [r.object_id, r.state, r.owner, r.call_site, r.task_name, r.error,
    ...(r.names || []), ...(r.locations || []), ...((r.holders || {}).borrowers || [])]
    .filter(Boolean).join(" ").toLowerCase();
}

export function objectsView(store) {
  let sortKey = "size";
  let sortDir = -1;
  let filter = "";
  let stateFilter = "";
  let derivedAt = -1;
  let rows = [];
  const template = COLUMNS.map((c) => c.width).join(" ");

  const totals = el("div", { class: "md-totals" });
  const search = el("input", { class: "md-filter", type: "search",
    placeholder: "filter: id, name, call site, owner, node…",
    oninput: (e) => { filter = e.target.value.trim().toLowerCase(); derivedAt = -1; draw(); } });
  const stateSel = el("select", { class: "md-filter-state",
    onchange: (e) => { stateFilter = e.target.value; derivedAt = -1; draw(); } },
  el("option", { value: "", text: "all states" }),
  ...STATES.map((s) => el("option", { value: s, text: s })));
  const count = el("span", { class: "md-count" });
  const head = el("div", { class: "md-thead", style: { gridTemplateColumns: template } });
  const body = el("div", { class: "md-tbody" });
  const spacer = el("div", { class: "md-spacer" });
  const win = el("div", { class: "md-window" });
  spacer.append(win);
  body.append(spacer);
  const root = el("div", { class: "md-objects" },
    totals, el("div", { class: "md-toolbar" }, search, stateSel, count), head, body);

  for (const c of COLUMNS) {
    head.append(el("div", { class: `md-th${c.num ? " md-num" : ""}`, "data-key": c.key,
      onclick: () => {
        if (sortKey === c.key) sortDir = -sortDir; else { sortKey = c.key; sortDir = c.num ? -1 : 1; }
        derivedAt = -1;
        draw();
      } }, c.label));
  }
  body.addEventListener("scroll", () => drawWindow());

  function derive() {
    const v = store.versions.objects;
    if (v === derivedAt) return;
    derivedAt = v;
    let all = store.rows("objects");
    if (stateFilter) all = all.filter((r) => r.state === stateFilter);
    if (filter) {
      const terms = filter.split(/\s+/);
      all = all.filter((r) => { const t = searchText(r); return terms.every((x) => t.includes(x)); });
    }
    const col = COLUMNS.find((c) => c.key === sortKey);
    const keyed = all.map((r) => [col.value(r), r]);
    keyed.sort((a, b) => (a[0] < b[0] ? -sortDir : a[0] > b[0] ? sortDir : 0));
    rows = keyed.map((x) => x[1]);
  }

  function drawTotals() {
    const t = store.totals();
    totals.replaceChildren();
    const chip = (label, value, title) => el("span", { class: "md-chip", title },
      el("b", { text: value }), ` ${label}`);
    totals.append(chip("objects", String(t.objects ?? 0)), chip("total", formatBytes(t.bytes ?? 0)),
      chip("spilled", formatBytes(t.spilled_bytes ?? 0), "bytes spilled to disk, all nodes"));
    for (const s of STATES) {
      const n = (t.by_state || {})[s];
      if (n && s !== "ready") totals.append(el("span", { class: `md-chip md-s-${s}-text` },
        el("b", { text: String(n) }), ` ${s}`));
    }
    const byNode = Object.entries(t.by_node || {}).sort();
    if (byNode.length) {
      totals.append(el("span", { class: "md-sep", text: "per node:" }));
      for (const [node, u] of byNode) {
        totals.append(chip(node, formatBytes(u.primary_bytes + u.copy_bytes),
          `${u.objects} objects; primary ${formatBytes(u.primary_bytes)}, copies ${formatBytes(u.copy_bytes)}`));
      }
    }
    const byOwner = Object.entries(t.by_owner || {}).sort((a, b) => b[1].bytes - a[1].bytes);
    if (byOwner.length) {
      totals.append(el("span", { class: "md-sep", text: "per owner:" }));
      for (const [owner, u] of byOwner.slice(0, 8)) {
        totals.append(chip(owner, formatBytes(u.bytes), `${u.objects} objects, ${formatBytes(u.inline)} inline`));
      }
      if (byOwner.length > 8) totals.append(el("span", { class: "md-sep", text: `+${byOwner.length - 8} more` }));
    }
  }

  function drawWindow() {
    const top = body.scrollTop;
    const height = body.clientHeight || 400;
    const first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
    const last = Math.min(rows.length, Math.ceil((top + height) / ROW_H) + OVERSCAN);
    spacer.style.height = `${rows.length * ROW_H}px`;
    win.style.transform = `translateY(${first * ROW_H}px)`;
    const frag = document.createDocumentFragment();
    for (let i = first; i < last; i++) {
      const r = rows[i];
      const tr = el("div", {
        class: `md-tr${r.object_id === store.selected ? " md-selected" : ""}${i % 2 ? " md-odd" : ""}`,
        style: { gridTemplateColumns: template, height: `${ROW_H}px` },
        "data-id": r.object_id,
        title: r.error ? `error: ${r.error}` : null,
        onclick: () => store.select(r.object_id === store.selected ? "" : r.object_id),
      });
      for (const c of COLUMNS) {
        tr.append(el("div", { class: `md-td${c.num ? " md-num" : ""}`, title: c.title ? c.title(r) : null }, c.cell(r)));
      }
      frag.append(tr);
    }
    win.replaceChildren(frag);
  }

  function scrollToSelected() {
    const i = rows.findIndex((r) => r.object_id === store.selected);
    if (i < 0) return;
    const top = i * ROW_H;
    if (top < body.scrollTop || top > body.scrollTop + body.clientHeight - ROW_H) {
      body.scrollTop = Math.max(0, top - body.clientHeight / 2);
    }
  }

  function draw() {
    derive();
    for (const th of head.children) {
      const k = th.getAttribute("data-key");
      th.classList.toggle("md-sorted", k === sortKey);
      th.dataset.dir = k === sortKey ? (sortDir > 0 ? "▲" : "▼") : "";
    }
    const total = store.sections.objects.size;
    count.textContent = rows.length === total ? `${total} objects` : `${rows.length} of ${total} objects`;
    drawWindow();
  }

  return {
    root,
    update(changed) {
      if (changed.has("summary")) drawTotals();
      if (changed.has("objects") || changed.has("selected")) draw();
      if (changed.has("selected")) scrollToSelected();
    },
    show() { draw(); drawTotals(); scrollToSelected(); },
    // for tests and the web page: what is drawn
    visibleRows: () => rows,
  };
}
