// The anywidget entry: one Store per widget model (shared by all its views in the page), fed
// by the model's keyframe trait and its custom "delta" messages; views mount the dashboard.
import { mountDashboard } from "./app.js";
import { Store } from "./store.js";

export { mountDashboard, Store };

const stores = new WeakMap();

function storeFor(model) {
  let store = stores.get(model);
  if (store) return store;
  store = new Store();
  stores.set(model, store);
  store.loadKeyframe(model.get("keyframe"));
  store.status = model.get("status");
  store.selected = model.get("selected");
  store.tab = model.get("tab");
  let asked = 0;
  store.onOutOfStep = () => {
    // We missed a delta (this view opened while the kernel was busy): ask for a keyframe,
    // at most once a second; the kernel also sends one now and then by itself.
    const now = Date.now();
    if (now - asked > 1000) { asked = now; model.send({ type: "resync" }); }
  };
  store.onSelect = (id) => { model.set("selected", id); model.save_changes(); };
  store.onTab = (tab) => { model.set("tab", tab); model.save_changes(); };
  model.on("change:keyframe", () => store.loadKeyframe(model.get("keyframe")));
  model.on("change:status", () => store.set("status", model.get("status")));
  model.on("change:selected", () => store.set("selected", model.get("selected")));
  model.on("change:tab", () => store.set("tab", model.get("tab")));
  model.on("msg:custom", (msg) => { if (msg && msg.type === "delta") store.applyDelta(msg); });
  model.send({ type: "hello" });
  return store;
}

export default {
  initialize({ model }) {
    storeFor(model);
  },
  render({ model, el }) {
    return mountDashboard(el, storeFor(model));
  },
};
