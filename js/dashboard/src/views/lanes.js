// The "lanes" layout for large ownership graphs: owners on the left, each beside a block of the
// objects it owns (grouped by the task that made them), tasks to the right level with what they
// made, nodes on the far right. Positions are computed in O(n log n) and handed to cytoscape as
// a preset layout: a force-directed layout of 1,000 nodes takes tens of seconds on a small
// machine, and piles structurally alike objects (a task's many results) onto one spot.

const GAP = 24;

const kindOf = (n) => n.data("kind");

export function lanesPositions(cy, width = 1100, height = 420) {
  const pos = {};
  const objects = cy.nodes().filter((n) => kindOf(n) === "object" || kindOf(n) === "group");
  const procs = cy.nodes().filter((n) => kindOf(n) === "process");
  const tasks = cy.nodes().filter((n) => kindOf(n) === "task");
  const stores = cy.nodes().filter((n) => kindOf(n) === "node");
  // Columns so the block of objects has about the canvas's shape.
  const cols = Math.max(1, Math.min(objects.length, Math.round(Math.sqrt((objects.length * width) / Math.max(height, 1)))));
  const byOwner = new Map();
  objects.forEach((o) => {
    const owns = o.incomers("edge").filter((e) => e.data("kind") === "owns");
    const owner = owns.length ? owns[0].source().id() : "";
    const made = o.outgoers("edge").filter((e) => e.data("kind") === "created_by");
    const task = made.length ? made[0].target().data("label") || "" : "";
    if (!byOwner.has(owner)) byOwner.set(owner, []);
    byOwner.get(owner).push([task, o.data("state") || "", o.id(), o]);
  });
  let y = 0;
  const owners = [...byOwner.keys()].sort();
  for (const owner of owners) {
    const list = byOwner.get(owner).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[2] < b[2] ? -1 : 1));
    const rows = Math.ceil(list.length / cols);
    list.forEach(([, , id], i) => { pos[id] = { x: 140 + (i % cols) * GAP, y: y + Math.floor(i / cols) * GAP }; });
    if (owner) pos[owner] = { x: 0, y: y + ((rows - 1) * GAP) / 2 };
    y += rows * GAP + 2 * GAP;
  }
  procs.forEach((p) => { if (!pos[p.id()]) { pos[p.id()] = { x: 0, y }; y += 2 * GAP; } });
  // Tasks level with the objects they made or read, spaced apart, in as many columns as needed.
  const right = 140 + cols * GAP + 100;
  const levels = tasks.map((t) => {
    const linked = t.connectedEdges().connectedNodes().filter((n) => n !== t && pos[n.id()]);
    const mean = linked.length ? linked.reduce((s, n) => s + pos[n.id()].y, 0) / linked.length : y;
    return [mean, t.id()];
  }).sort((a, b) => a[0] - b[0]);
  const perCol = Math.max(1, Math.floor(Math.max(y, GAP) / (GAP * 0.9)));
  let last = -Infinity;
  levels.forEach(([want, id], i) => {
    const col = Math.floor(i / perCol);
    const at = i % perCol === 0 ? want : Math.max(want, last + GAP * 0.9);
    last = at;
    pos[id] = { x: right + col * 90, y: at };
  });
  const taskCols = Math.max(1, Math.ceil(levels.length / perCol));
  const far = right + taskCols * 90 + 120;
  stores.forEach((s, i) => { pos[s.id()] = { x: far, y: ((i + 0.5) * Math.max(y, GAP)) / stores.length }; });
  return pos;
}
