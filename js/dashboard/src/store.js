// The browser's copy of the view data: keyframes and numbered deltas in, change events out.
// Host-agnostic: the notebook widget feeds it from the widget comm; a web page can feed it
// from a WebSocket with the same messages (see memlab/jupyter/dashboard/view_state.py).

// The fields that key each section's rows (KEYS in view_state.py).
export const KEYS = {
  summary: ["key"], nodes: ["node_id"], workers: ["worker_id"], objects: ["object_id"],
  graph_nodes: ["id"], graph_edges: ["src", "kind", "dst"], incidents: ["id"],
};

export function rowKey(section, row) {
  const f = KEYS[section];
  return f.length === 1 ? String(row[f[0]]) : f.map((k) => String(row[k])).join("|");
}

// The rows a section of a delta or keyframe carries, whichever its shape: a list of rows (a
// keyframe), {upsert: [rows]}, or columns and lists {cols, rows} (object rows: far less JSON).
export function upsertedRows(payload) {
  if (Array.isArray(payload)) return payload;
  const out = payload.upsert ? [...payload.upsert] : [];
  if (payload.cols) {
    const cols = payload.cols;
    for (const r of payload.rows || []) {
      const row = {};
      for (let i = 0; i < cols.length; i++) row[cols[i]] = r[i];
      out.push(row);
    }
  }
  return out;
}

export class Store {
  constructor() {
    this.seq = -1; // nothing yet
    this.sections = {};
    for (const name of Object.keys(KEYS)) this.sections[name] = new Map();
    this.versions = {}; // per section: bumped on every change (views re-derive on a bump)
    for (const name of Object.keys(KEYS)) this.versions[name] = 0;
    this.status = "starting";
    this.selected = "";
    this.tab = "objects";
    this._listeners = new Set();
    this._pending = null;
    this._changed = new Set();
    this.onOutOfStep = null; // called when a delta does not follow what we hold
    this.onSelect = null; // the host's hooks for selections and tab changes made in a view
    this.onTab = null;
  }

  // A keyframe: every row, numbered. Older than what we hold: ignored.
  loadKeyframe(frame) {
    if (!frame || frame.seq === undefined || frame.seq < this.seq) return;
    for (const [name, payload] of Object.entries(frame.sections || {})) {
      const map = this.sections[name];
      if (!map) continue;
      map.clear();
      for (const row of upsertedRows(payload)) map.set(rowKey(name, row), row);
      this._touch(name);
    }
    this.seq = frame.seq;
  }

  // A delta message; returns false if it does not follow our copy (then wait for a keyframe).
  applyDelta(msg) {
    if (msg.base !== this.seq) {
      if (msg.seq > this.seq && this.onOutOfStep) this.onOutOfStep();
      return false;
    }
    for (const [name, d] of Object.entries(msg.sections || {})) {
      const map = this.sections[name];
      if (!map) continue;
      if (d.reset) map.clear();
      for (const key of d.remove || []) map.delete(String(key));
      for (const row of upsertedRows(d)) map.set(rowKey(name, row), row);
      this._touch(name);
    }
    this.seq = msg.seq;
    return true;
  }

  set(field, value) {
    if (this[field] === value) return;
    this[field] = value;
    this._touch(field);
  }

  // A selection made in a view: kept here and told to the host (the widget syncs it).
  select(id) {
    this.set("selected", id || "");
    if (this.onSelect) this.onSelect(id || "");
  }

  showTab(tab) {
    this.set("tab", tab);
    if (this.onTab) this.onTab(tab);
  }

  rows(section) {
    return Array.from(this.sections[section].values());
  }

  totals() {
    return this.sections.summary.get("totals") || {};
  }

  graphMeta() {
    return this.sections.summary.get("graph") || {};
  }

  // Listeners get the set of changed sections, at most once per animation frame.
  subscribe(fn) {
    this._listeners.add(fn);
    return () => this._listeners.delete(fn);
  }

  _touch(name) {
    if (this.versions[name] !== undefined) this.versions[name] += 1;
    this._changed.add(name);
    if (this._pending !== null) return;
    const flush = () => {
      this._pending = null;
      const changed = this._changed;
      this._changed = new Set();
      for (const fn of this._listeners) {
        try {
          fn(changed);
        } catch (err) {
          console.error("memlab dashboard view failed", err);
        }
      }
    };
    this._pending = typeof requestAnimationFrame === "function"
      ? requestAnimationFrame(flush) : setTimeout(flush, 16);
  }
}
