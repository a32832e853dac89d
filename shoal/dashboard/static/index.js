// The list of shoal clusters with start / stop / scale and links to the live views.  One
// implementation for two places: the dashboard's index page and JupyterLab's sidebar (the
// labextension imports this module from the server), which passes `open` to show the views in
// Lab tabs and `currentKernel` to mark the clusters of the notebook in front.

const VIEWS = ["cluster", "timeline", "tasks", "actors", "objects", "logs"];

function count(n, noun) { return `${n} ${noun}${n === 1 ? "" : "s"}`; }

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function xsrf() {
  const m = document.cookie.match(/(?:^|;\s*)_xsrf=([^;]*)/);
  return m ? decodeURIComponent(m[1]) : "";
}

export function api(base, path, body) {
  const init = { credentials: "same-origin", headers: { "X-XSRFToken": xsrf() } };
  if (body !== undefined) {
    init.method = "POST";
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  return fetch(`${base}shoal/api/${path}`, init).then(async (r) => {
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(data.message || data.reason || `${r.status} ${r.statusText}`);
    return data;
  });
}

function viewUrl(base, id, view) { return `${base}shoal/cluster/${encodeURIComponent(id)}/${view}`; }

export function mountIndex(root, config) {
  const base = config.base;
  const interval = config.interval || 2000;
  root.classList.add("shoal-widget", "shoal-index");
  const head = el("div", "shoal-index-head");
  const startBtn = el("button", "shoal-btn", "Start a cluster");
  startBtn.dataset.act = "start";
  const cpus = el("input", "shoal-cpus");
  cpus.type = "number"; cpus.min = "1"; cpus.value = String(config.defaultCpus || 2);
  cpus.title = "engines (CPUs) of the new cluster";
  head.append(startBtn, " with ", cpus, " CPUs");
  const note = el("div", "shoal-sub shoal-index-note");
  const list = el("div", "shoal-index-list");
  root.replaceChildren(head, note, list);
  let timer = 0, disposed = false, busy = "";

  function say(text) { note.textContent = text; }

  async function act(what, fn) {
    busy = what; say(what + "…");
    try { const r = await fn(); say(r && r.message ? r.message.split("\n")[0] : ""); }
    catch (e) { say(`${what} failed: ${e.message}`); }
    busy = "";
    refresh();
  }

  startBtn.addEventListener("click", () => {
    const n = parseInt(cpus.value, 10);
    act("starting a cluster", () => api(base, "clusters", { num_cpus: Number.isFinite(n) ? n : null }));
  });

  function card(c) {
    const mine = config.currentKernel && c.kernel && c.kernel.id === config.currentKernel();
    const box = el("div", "shoal-card shoal-cluster-card" + (mine ? " mine" : ""));
    box.dataset.cluster = c.cluster_id;
    box.dataset.kind = c.kind;
    const top = el("div", "shoal-head");
    top.append(el("span", "shoal-dot" + (c.error ? "" : " live")), el("span", "shoal-title", c.cluster_id));
    const who = c.kind === "started" ? "shoal start"
      : c.kernel ? `kernel of ${c.kernel.path || c.kernel.name}` : "embedded (a script or another server's kernel)";
    top.append(el("span", "shoal-sub", who + (mine ? " · this notebook" : "")));
    const facts = el("div", "shoal-sub shoal-facts");
    if (c.error) facts.textContent = `${c.address} · not answering: ${c.error}`;
    else {
      const t = c.tasks || {};
      const running = (t.running || 0) + (t.assigned || 0);
      facts.textContent = `${c.address} · ${count(c.engines, "engine")} on ${count(c.hosts, "host")}, `
        + `${count(c.cpus, "CPU")} · ${running} running, ${t.finished || 0} finished, `
        + `${t.failed || 0} failed · ${count(c.actors, "actor")}`;
    }
    const links = el("div", "shoal-links");
    for (const v of VIEWS) {
      const a = el("a", "shoal-link", v);
      a.href = viewUrl(base, c.cluster_id, v);
      a.dataset.view = v;
      if (config.open) a.addEventListener("click", (e) => { e.preventDefault(); config.open(c, v); });
      else a.target = "_self";
      links.append(a);
    }
    const actions = el("div", "actions");
    const minus = el("button", "shoal-btn small", "−");
    minus.title = "remove an engine (head host)"; minus.dataset.act = "remove";
    const plus = el("button", "shoal-btn small", "+");
    plus.title = "add an engine (head host)"; plus.dataset.act = "add";
    const stop = el("button", "shoal-btn small danger", "Stop");
    stop.dataset.act = "stop";
    stop.title = c.kind === "started" ? "shoal stop" : "stop this kernel's cluster (its kernel loses it)";
    minus.disabled = plus.disabled = stop.disabled = !!busy;
    const id = encodeURIComponent(c.cluster_id);
    minus.addEventListener("click", () => act(`removing an engine from ${c.cluster_id}`, () => api(base, `clusters/${id}/scale`, { delta: -1 })));
    plus.addEventListener("click", () => act(`adding an engine to ${c.cluster_id}`, () => api(base, `clusters/${id}/scale`, { delta: 1 })));
    let armed = 0;
    stop.addEventListener("click", () => {
      if (!armed) {
        stop.textContent = "Click again to stop";
        stop.classList.add("armed");
        armed = setTimeout(() => { armed = 0; stop.textContent = "Stop"; stop.classList.remove("armed"); }, 4000);
        return;
      }
      clearTimeout(armed);
      stop.classList.remove("armed");
      stop.disabled = true;
      act(`stopping ${c.cluster_id}`, () => api(base, `clusters/${id}/stop`, {}));
    });
    actions.append(minus, " ", plus, " engine ", stop);
    box.append(top, facts, links, actions);
    return box;
  }

  async function refresh() {
    clearTimeout(timer);
    if (disposed) return;
    try {
      const data = await api(base, "clusters");
      const cs = data.clusters || [];
      if (config.currentKernel) {          // this notebook's clusters first
        const k = config.currentKernel();
        cs.sort((a, b) => (b.kernel && b.kernel.id === k) - (a.kernel && a.kernel.id === k));
      }
      if (!list.querySelector(".shoal-btn.armed")) {        // keep a half-done stop
        list.replaceChildren(...(cs.length ? cs.map(card) : [el("div", "shoal-sub", "No shoal cluster is running. Start one here, with shoal.init() in a notebook, or with `shoal start --head`.")]));
      }
      root.dataset.clusters = String(cs.length);
    } catch (e) {
      if (!busy) say(`could not list the clusters: ${e.message}`);
    }
    if (!disposed) timer = setTimeout(refresh, interval);
  }

  refresh();
  return { refresh, dispose() { disposed = true; clearTimeout(timer); } };
}
