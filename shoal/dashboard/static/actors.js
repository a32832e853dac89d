// shoal actors: class, name, state, engine, restarts and pending calls of every actor.
// State: model.get("view") = {actors: [scheduler's actor_info], updated}.

function render({ model, el }) {
  el.classList.add("shoal-widget", "shoal-actors");
  const card = h("div", "shoal-card");
  const head = h("div", "shoal-head");
  const dot = h("span", "shoal-dot live");
  const sub = h("span", "shoal-sub");
  head.append(dot, h("span", "shoal-title", "shoal actors"), sub);
  const wrap = h("div", "shoal-table-wrap");
  const table = h("table", "shoal-table");
  const hr = h("tr");
  for (const [label, num] of [["actor", false], ["class", false], ["name", false], ["state", false], ["engine", false], ["host", false], ["pid", true], ["restarts", true], ["pending calls", true], ["death cause", false]])
    hr.append(h("th", num ? "num" : "", label));
  const thead = h("thead");
  thead.append(hr);
  const tbody = h("tbody");
  table.append(thead, tbody);
  wrap.append(table);
  const banner = h("div", "shoal-banner");
  card.append(head, wrap, banner);
  el.append(card);

  function update() {
    const v = model.get("view") || {};
    const live = model.get("live") !== false;
    const actors = v.actors || [];
    dot.className = "shoal-dot" + (live ? " live" : "");
    sub.textContent = `${fmt(actors.filter((a) => a.state !== "DEAD").length)} alive of ${fmt(actors.length)}`;
    tbody.replaceChildren(...(actors.length ? actors.map((a) => {
      const tr = h("tr", "shoal-actor-row");
      tr.dataset.actorId = a.actor_id;
      tr.dataset.state = a.state;
      tr.append(h("td", "mono", a.actor_id), h("td", "", a.class_name || ""), h("td", "", a.name || ""),
        h("td", a.state === "DEAD" ? "bad" : "", a.state), h("td", "mono", a.engine_id || "—"),
        h("td", "mono", a.host_id || "—"), h("td", "num", a.pid ? String(a.pid) : "—"),
        h("td", "num", String(a.restarts || 0)), h("td", "num", String(a.pending_calls || 0)),
        h("td", "", a.death_cause || ""));
      return tr;
    }) : [(() => { const tr = h("tr"); const td = h("td", "shoal-sub", "No actors."); td.colSpan = 10; tr.append(td); return tr; })()]));
    el.dataset.actors = String(actors.length);
    banner.textContent = live ? "" : `Cluster stopped${model.get("closed_reason") ? ": " + model.get("closed_reason") : ""}.`;
  }
  update();
  model.on("change:view", update);
  model.on("change:live", update);
  return () => { model.off("change:view", update); model.off("change:live", update); };
}

export default { render };
