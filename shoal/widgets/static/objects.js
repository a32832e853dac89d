// shoal object store: memory per host (used / limit / spilled) and a sortable table of objects.
// State: model.get("view") (see shoal/widgets/objects.py ObjectStoreModel.view).




const COLUMNS = [
  { key: "object_id", label: "object", cls: "mono" },
  { key: "type", label: "type" },
  { key: "size", label: "size", num: true, show: bytes },
  { key: "reference_count", label: "refs", num: true, show: fmt },
  { key: "hosts", label: "hosts", cls: "mono" },
  { key: "spilled", label: "spilled", num: true, show: (x) => (x ? "yes" : "") },
  { key: "where", label: "stored" },
  { key: "created_by", label: "created by" },
];

function render({ model, el }) {
  el.classList.add("shoal-widget", "shoal-objects");
  const card = h("div", "shoal-card");
  const head = h("div", "shoal-head");
  const dot = h("span", "shoal-dot live");
  const title = h("span", "shoal-title", "shoal object store");
  const sub = h("span", "shoal-sub");
  const filter = h("input", "shoal-filter");
  filter.type = "search";
  filter.placeholder = "filter: id, type, creator…";
  head.append(dot, title, sub, h("span", "shoal-spacer"), filter);
  const hosts = h("div", "shoal-hosts");
  const wrap = h("div", "shoal-table-wrap");
  const table = h("table", "shoal-table");
  const thead = h("thead");
  const tbody = h("tbody");
  table.append(thead, tbody);
  wrap.append(table);
  const more = h("div", "shoal-more");
  const banner = h("div", "shoal-banner");
  card.append(head, hosts, wrap, more, banner);
  el.append(card);

  let sortKey = "size", sortDir = -1;

  const tr = h("tr");
  const ths = COLUMNS.map((c) => {
    const th = h("th", c.num ? "num" : "", c.label);
    th.dataset.key = c.key;
    th.title = `sort by ${c.label}`;
    th.addEventListener("click", () => {
      if (sortKey === c.key) sortDir = -sortDir;
      else { sortKey = c.key; sortDir = c.num ? -1 : 1; }
      drawTable();
    });
    tr.append(th);
    return th;
  });
  thead.append(tr);

  function drawHosts(v) {
    hosts.replaceChildren();
    for (const x of v.hosts || []) {
      const name = h("span", "host");
      name.append("host ", h("b", "", x.host_id), " ", h("span", "shoal-sub", x.hostname || ""));
      const meter = h("div", "shoal-meter");
      const used = h("div", "used");
      const spilled = h("div", "spilled");
      const frac = x.limit ? x.used / x.limit : 0;
      used.style.width = `${Math.min(100, 100 * frac)}%`;
      if (frac > 0.9) used.classList.add("hot");
      spilled.style.width = `${x.limit ? Math.min(100 - 100 * frac, (100 * x.spilled) / x.limit) : 0}%`;
      meter.append(used, spilled);
      meter.title = `${bytes(x.used)} of ${bytes(x.limit)} in shared memory; ${bytes(x.spilled)} spilled to disk`;
      const nums = h("span", "nums",
        `${bytes(x.used)} / ${bytes(x.limit)} used · ${bytes(x.spilled)} spilled · ${fmt(x.objects)} objects`);
      hosts.append(name, meter, nums);
    }
  }

  function drawTable() {
    const v = model.get("view") || {};
    const q = filter.value.trim().toLowerCase();
    let rows = (v.rows || []).slice();
    if (q) {
      rows = rows.filter((r) =>
        [r.object_id, r.type, r.created_by, r.hosts, r.where].some((s) => String(s).toLowerCase().includes(q)));
    }
    const col = COLUMNS.find((c) => c.key === sortKey);
    rows.sort((a, b) => {
      const x = a[sortKey], y = b[sortKey];
      const d = col && col.num ? x - y : String(x).localeCompare(String(y));
      return d * sortDir || String(a.object_id).localeCompare(String(b.object_id));
    });
    ths.forEach((th) => {
      th.querySelector(".arrow")?.remove();
      if (th.dataset.key === sortKey) th.append(h("span", "arrow", sortDir < 0 ? "▼" : "▲"));
    });
    const frag = document.createDocumentFragment();
    for (const r of rows) {
      const row = h("tr", "shoal-object-row");
      row.dataset.objectId = r.object_id;
      for (const c of COLUMNS) {
        const td = h("td", [c.num ? "num" : "", c.cls || ""].join(" ").trim());
        if (c.key === "where") {
          const kind = r.spilled ? " spilled" : r.state === "error" ? " error" : r.where === "shared memory" ? " shm" : "";
          const tag = h("span", "shoal-tag" + kind,
            r.state === "error" ? "error" : r.where);
          td.append(tag);
        } else {
          td.textContent = c.show ? c.show(r[c.key]) : String(r[c.key] ?? "");
        }
        if (c.key === "object_id" || c.key === "created_by") td.title = String(r[c.key] ?? "");
        row.append(td);
      }
      frag.append(row);
    }
    tbody.replaceChildren(frag);
    if (!(v.rows || []).length) {
      const row = h("tr");
      const td = h("td", "", v.updated ? "No objects in the store." : "Loading…");
      td.colSpan = COLUMNS.length;
      td.style.color = "var(--shoal-muted)";
      row.append(td);
      tbody.append(row);
    }
    const hidden = (v.count || 0) - (v.shown || 0);
    more.textContent = hidden > 0 ? `showing the ${fmt(v.shown)} largest of ${fmt(v.count)} objects` : "";
    el.dataset.objects = String(v.count || 0);
    el.dataset.rows = String(rows.length);
  }

  function update() {
    const v = model.get("view") || {};
    sub.textContent = `${fmt(v.count || 0)} objects · ${bytes(v.bytes || 0)}`;
    drawHosts(v);
    drawTable();
    const live = model.get("live") !== false;
    dot.className = "shoal-dot" + (live ? " live" : "");
    banner.textContent = live ? "" : `Not live: ${model.get("closed_reason") || "the cluster is gone"}.`;
  }

  filter.addEventListener("input", drawTable);
  update();
  model.on("change:view", update);
  model.on("change:live", update);
  return () => {
    model.off("change:view", update);
    model.off("change:live", update);
  };
}

export default { render };
