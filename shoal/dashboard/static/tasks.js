// shoal tasks: every task the cluster remembers, newest change first, with counts per state.
// State: model.get("view") (see shoal/dashboard/views.py TaskListModel.view).

const STATE_CLASS = { failed: "bad", crashed: "bad", cancelled: "muted", running: "busy", retried: "warn" };

function took(r, now) {
  if (r.start === null || r.start === undefined) return "—";
  const s = (r.end !== null && r.end !== undefined ? r.end : now) - r.start;
  return s < 1 ? `${(s * 1e3).toFixed(1)} ms` : `${s.toFixed(2)} s`;
}

function render({ model, el }) {
  el.classList.add("shoal-widget", "shoal-tasks");
  const card = h("div", "shoal-card");
  const head = h("div", "shoal-head");
  const dot = h("span", "shoal-dot live");
  const sub = h("span", "shoal-sub");
  const filter = h("input", "shoal-filter");
  filter.type = "search";
  filter.placeholder = "filter: name, state, engine…";
  head.append(dot, h("span", "shoal-title", "shoal tasks"), sub, h("span", "shoal-spacer"), filter);
  const tiles = h("div", "shoal-tiles");
  const wrap = h("div", "shoal-table-wrap");
  const table = h("table", "shoal-table");
  const thead = h("thead");
  const hr = h("tr");
  for (const [label, num] of [["task", false], ["name", false], ["state", false], ["engine", false], ["host", false], ["runs", true], ["took", true]])
    hr.append(h("th", num ? "num" : "", label));
  thead.append(hr);
  const tbody = h("tbody");
  table.append(thead, tbody);
  wrap.append(table);
  const banner = h("div", "shoal-banner");
  card.append(head, tiles, wrap, banner);
  el.append(card);

  function update() {
    const v = model.get("view") || {};
    const live = model.get("live") !== false;
    const counts = v.counts || {};
    dot.className = "shoal-dot" + (live ? " live" : "") + (live && counts.running ? " busy" : "");
    sub.textContent = `${fmt(v.total || 0)} tasks`;
    tiles.replaceChildren(...["running", "finished", "failed", "cancelled", "retried"].map((k) => {
      const t = h("div", "shoal-tile");
      t.dataset.tile = k;
      t.append(h("div", "label", k), h("div", "value", fmt(counts[k] || 0)));
      return t;
    }));
    const q = filter.value.trim().toLowerCase();
    const rows = (v.rows || []).filter((r) => !q || `${r.task_id} ${r.name} ${r.status} ${r.engine_id} ${r.host_id}`.toLowerCase().includes(q));
    tbody.replaceChildren(...rows.map((r) => {
      const tr = h("tr", "shoal-task-row");
      tr.dataset.taskId = r.task_id;
      tr.dataset.status = r.status;
      tr.append(h("td", "mono", r.task_id), h("td", "", r.name), h("td", STATE_CLASS[r.status] || "", r.status),
        h("td", "mono", r.engine_id || "—"), h("td", "mono", r.host_id || "—"), h("td", "num", String(r.runs || 0)),
        h("td", "num", took(r, v.now)));
      return tr;
    }));
    el.dataset.tasks = String(v.total || 0);
    el.dataset.running = String(counts.running || 0);
    banner.textContent = live ? "" : `Cluster stopped${model.get("closed_reason") ? ": " + model.get("closed_reason") : ""}.`;
  }
  filter.addEventListener("input", update);
  update();
  model.on("change:view", update);
  model.on("change:live", update);
  return () => { model.off("change:view", update); model.off("change:live", update); };
}

export default { render };
