// Recovery timeline: each incident as a group of steps (died → lost → promoted / retried →
// reconstructing → reconstructed, or failed / owner died), on a time axis from its start.
import { badge, el, formatClock, formatDuration, shortId } from "../format.js";

const STEP_LABELS = {
  died: "died", lost: "objects lost", promoted: "copies promoted", retried: "tasks re-run",
  reconstructing: "reconstructing", reconstructed: "objects rebuilt", restarted: "actors restarted",
  failed: "failed", owner_died: "owner died: holders get OwnerDiedError",
};

export function timelineView(store) {
  const list = el("div", { class: "md-incidents" });
  const root = el("div", { class: "md-timeline" }, list);
  let drawnAt = -1;

  function card(inc) {
    const span = Math.max(inc.duration || 0, 0.001);
    const axis = el("div", { class: "md-axis" });
    const steps = el("div", { class: "md-steps" });
    for (const s of inc.steps || []) {
      const left = ((s.first - inc.started_at) / span) * 100;
      const width = Math.max(((s.last - s.first) / span) * 100, 0.8);
      axis.append(el("div", {
        class: `md-seg md-step-${s.kind}`,
        style: { left: `${Math.min(left, 99.2)}%`, width: `${Math.min(width, 100 - Math.min(left, 99.2))}%` },
        title: `${STEP_LABELS[s.kind] || s.kind}: ${s.count} at +${formatDuration(s.first - inc.started_at)}`,
      }));
      // Object ids are links: a click selects the object in the table.
      const items = (s.items || []).slice(0, 6).map((x) => store.sections.objects.has(x)
        ? el("a", { class: "md-link", href: "#", title: x, text: shortId(x, 10),
          onclick: (e) => { e.preventDefault(); store.select(x); store.showTab("objects"); } })
        : el("span", { title: x, text: shortId(x, 10) }));
      const more = s.count > 6 ? ` +${s.count - 6}` : "";
      steps.append(el("div", { class: "md-step" },
        el("i", { class: `md-dot md-step-${s.kind}` }),
        el("span", { class: "md-step-name", text: STEP_LABELS[s.kind] || s.kind }),
        el("b", { text: ` ${s.count}` }),
        el("span", { class: "md-step-time", text: ` at +${formatDuration(s.first - inc.started_at)}` +
          (s.last > s.first ? ` – +${formatDuration(s.last - inc.started_at)}` : "") }),
        el("div", { class: "md-step-items" }, ...items.flatMap((x, i) => (i ? [", ", x] : [x])), more),
        (s.details || []).length ? el("div", { class: "md-step-detail", text: s.details.join("; ") }) : null));
    }
    const extra = [];
    if (inc.pending) extra.push(`${inc.pending} of ${inc.lost} lost objects not yet recovered`);
    if ((inc.holders || []).length) extra.push(`holders told OwnerDiedError: ${inc.holders.join(", ")}`);
    return el("div", { class: `md-incident md-inc-${inc.state}` },
      el("div", { class: "md-inc-head" }, badge(inc.state), el("b", { text: inc.title }),
        el("span", { class: "md-inc-time", text: `${formatClock(inc.started_at)} · ${inc.state === "recovering" ? "so far" : "took"} ${formatDuration(inc.duration)}` })),
      axis,
      el("div", { class: "md-axis-scale" }, el("span", { text: "0" }), el("span", { text: `+${formatDuration(inc.duration)}` })),
      steps,
      extra.length ? el("div", { class: "md-inc-extra", text: extra.join(" · ") }) : null);
  }

  function draw() {
    if (drawnAt === store.versions.incidents) return;
    drawnAt = store.versions.incidents;
    const incidents = store.rows("incidents").sort((a, b) => b.started_at - a.started_at);
    if (!incidents.length) {
      list.replaceChildren(el("div", { class: "md-empty",
        text: "No incidents. When a worker or node dies, what it cost and how memlab recovered appear here." }));
      return;
    }
    list.replaceChildren(...incidents.map(card));
  }

  return { root, update(changed) { if (changed.has("incidents")) draw(); }, show: draw };
}
