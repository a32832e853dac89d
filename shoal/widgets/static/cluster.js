// shoal cluster: hosts, engines, CPUs, GPUs, memory and task counts, live; buttons to add or
// remove an engine on a host (only where model.get("scalable"): Ray without an autoscaler
// cannot) and to stop the cluster (two clicks: arm, then confirm).
// State: model.get("view") (see shoal/widgets/cluster.py ClusterModel.view).

const num = (x) => (Number.isInteger(x) ? String(x) : x.toFixed(1));



function render({ model, el }) {
  el.classList.add("shoal-widget", "shoal-cluster");
  const card = h("div", "shoal-card");
  const head = h("div", "shoal-head");
  const dot = h("span", "shoal-dot live");
  const title = h("span", "shoal-title", "shoal cluster");
  const sub = h("span", "shoal-sub");
  head.append(dot, title, sub);
  const tiles = h("div", "shoal-tiles");
  const taskTiles = h("div", "shoal-tiles tasks");
  const wrap = h("div", "shoal-table-wrap");
  const table = h("table", "shoal-table");
  const thead = h("thead");
  const tbody = h("tbody");
  const hr = h("tr");
  for (const [label, isNum] of [["host", false], ["engines", true], ["CPUs", true], ["GPUs", true],
    ["object store", false], ["", false]]) hr.append(h("th", isNum ? "num" : "", label));
  thead.append(hr);
  table.append(thead, tbody);
  wrap.append(table);
  const actions = h("div", "actions");
  const stop = h("button", "shoal-btn danger");
  const note = h("span", "shoal-sub");
  actions.append(stop, note);
  const banner = h("div", "shoal-banner");
  card.append(head, tiles, taskTiles, wrap, actions, banner);
  el.append(card);

  let armed = null, pending = "";

  function tile(label, value, small, cls) {
    const t = h("div", "shoal-tile");
    t.dataset.tile = label;
    const v = h("div", "value");
    const main = h("span", cls || "", value);
    v.append(main, h("small", "", small || ""));
    t.append(h("div", "label", label), v);
    return t;
  }

  function send(msg, text) {
    pending = text;
    model.send(msg);
    update();
  }

  function update() {
    const v = model.get("view") || {};
    const live = model.get("live") !== false;
    const owned = model.get("owned") !== false;
    const scalable = model.get("scalable") !== false;
    const t = v.tasks || {}, tot = v.totals || {};
    el.classList.toggle("stopped", !live);
    dot.className = "shoal-dot" + (live ? " live" : "") + (live && t.running ? " busy" : "");
    sub.textContent = [v.address, v.kind].filter(Boolean).join(" · ");
    tiles.replaceChildren(
      tile("hosts", fmt((v.hosts || []).length)),
      tile("engines", fmt(tot.engines || 0), `${fmt(tot.busy || 0)} busy`),
      tile("CPUs", num(tot.cpus || 0), `${num(tot.cpus_free || 0)} free`),
      tile("GPUs", num(tot.gpus || 0), tot.gpus ? `${num(tot.gpus_free || 0)} free` : ""),
      tile("object store", bytes(tot.mem_used || 0), `of ${bytes(tot.mem_limit || 0)}`),
    );
    taskTiles.replaceChildren(
      tile("tasks queued", fmt(t.queued || 0)),
      tile("running", fmt(t.running || 0)),
      tile("done", fmt(t.done || 0)),
      tile("failed", fmt(t.failed || 0), t.cancelled ? `${fmt(t.cancelled)} cancelled` : "", t.failed ? "bad" : ""),
    );
    el.dataset.engines = String(tot.engines || 0);
    el.dataset.hosts = String((v.hosts || []).length);
    el.dataset.done = String(t.done || 0);
    el.dataset.live = String(live);
    tbody.replaceChildren();
    for (const x of v.hosts || []) {
      const row = h("tr");
      row.dataset.host = x.host_id;
      const host = h("td");
      host.append(h("b", "", x.host_id), " ", h("span", "shoal-sub", x.hostname || ""));
      const eng = h("td", "num", `${x.engines}`);
      eng.append(" ", h("span", "shoal-sub", `(${x.busy} busy)`));
      const mem = h("td");
      const meter = h("div", "shoal-meter");
      const used = h("div", "used");
      used.style.width = `${x.mem_limit ? Math.min(100, (100 * x.mem_used) / x.mem_limit) : 0}%`;
      meter.append(used);
      mem.append(meter, `${bytes(x.mem_used)} / ${bytes(x.mem_limit)}`);
      const act = h("td");
      const minus = h("button", "shoal-btn small", "−");
      minus.title = "remove an engine from this host";
      minus.dataset.act = "remove";
      minus.disabled = !live || x.cpus <= 1;
      minus.addEventListener("click", () => send({ type: "scale", host_id: x.host_id, delta: -1 }, `removing an engine from ${x.host_id}…`));
      const plus = h("button", "shoal-btn small", "+");
      plus.title = "add an engine to this host";
      plus.dataset.act = "add";
      plus.disabled = !live;
      plus.addEventListener("click", () => send({ type: "scale", host_id: x.host_id, delta: +1 }, `adding an engine to ${x.host_id}…`));
      if (scalable) act.append(minus, " ", plus, " ", h("span", "shoal-sub", "engine"));
      row.append(host, eng, h("td", "num", num(x.cpus)), h("td", "num", num(x.gpus)), mem, act);
      tbody.append(row);
    }
    stop.disabled = !live;
    stop.dataset.act = "stop";
    stop.textContent = armed ? (owned ? "Click again to stop the cluster" : "Click again to disconnect")
      : owned ? "Stop cluster" : "Disconnect";
    stop.classList.toggle("armed", !!armed);
    note.textContent = live ? pending : "";
    banner.textContent = live ? "" : `Cluster stopped${model.get("closed_reason") ? ": " + model.get("closed_reason") : ""}.`;
  }

  stop.addEventListener("click", () => {
    if (!armed) {
      armed = setTimeout(() => { armed = null; update(); }, 4000);
      update();
      return;
    }
    clearTimeout(armed);
    armed = null;
    send({ type: "stop" }, "stopping…");
  });

  const onView = () => { pending = ""; update(); };
  update();
  model.on("change:view", onView);
  model.on("change:live", update);
  model.on("change:scalable", update);
  return () => {
    clearTimeout(armed);
    model.off("change:view", onView);
    model.off("change:live", update);
    model.off("change:scalable", update);
  };
}

export default { render };
