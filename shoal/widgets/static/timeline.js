// shoal task timeline: a lane per engine grouped by host, a bar per task run, on a canvas.
//
// Data: rows arrive as binary columns in custom messages ({type: "reset" | "rows", seq, base,
// t0, n, ids} + buffers row, engine, name, status (int32), start, end (float64, seconds after
// t0; end NaN while running)).  They are kept per model (not per view) in a store, so a view
// rendered later draws everything at once.  A "rows" message whose base is not the store's
// seq means one was missed: the store asks Python for a reset ("hello").
// Small facts (engines, names, colours, counts, the server clock) come in the `meta` trait.
//
// Drawing: only the visible part of each lane is visited (rows sorted by start, binary search
// back by the lane's longest run); bars under ~2 px wide are merged per pixel, so 10,000+
// runs draw in a few milliseconds.  Failed and crashed runs are drawn last, in red, never
// merged away.

const STATUS = ["running", "finished", "failed", "cancelled", "retried", "crashed"];
const FAILED = "#d62728", FAILED_EDGE = "#8b1a1a", CANCELLED = "#a0a4a8", RETRIED = "#f28e2b";
const AUTO_SPAN = 60;            // seconds the follow window shows at most, unless zoomed
const GUTTER = 128, LANE_H = 18, HOST_H = 20, AXIS_H = 24, BAR_PAD = 3;
const STORES = (globalThis.__shoalTimelineStores = globalThis.__shoalTimelineStores || new Map());


function natural(a, b) {
  const pa = String(a).split(/(\d+)/), pb = String(b).split(/(\d+)/);
  for (let i = 0; i < Math.min(pa.length, pb.length); i++) {
    if (pa[i] === pb[i]) continue;
    const na = Number(pa[i]), nb = Number(pb[i]);
    if (i % 2 === 1 && !isNaN(na) && !isNaN(nb)) return na - nb;
    return pa[i] < pb[i] ? -1 : 1;
  }
  return pa.length - pb.length;
}

function duration(s) {
  if (s === null || s === undefined || !isFinite(s)) return "—";
  s = Math.max(0, s);
  if (s < 1e-3) return `${(s * 1e6).toFixed(0)} µs`;
  if (s < 1) return `${(s * 1e3).toFixed(s < 0.01 ? 2 : 1)} ms`;
  if (s < 60) return `${s.toFixed(s < 10 ? 3 : 2)} s`;
  const m = Math.floor(s / 60);
  return `${m} min ${(s - 60 * m).toFixed(1)} s`;
}

function typed(view, Kind) {
  // Buffers arrive as DataViews at any offset: copy to an aligned typed array.
  const bytes = view.buffer.slice(view.byteOffset, view.byteOffset + view.byteLength);
  return new Kind(bytes);
}

class Store {
  constructor() {
    this.seq = 0;
    this.t0 = null;
    this.views = new Set();
    this.lastHello = 0;
    this.clear(1024);
  }

  clear(cap) {
    this.cap = Math.max(1024, cap);
    this.n = 0;
    this.engine = new Int32Array(this.cap);
    this.name = new Int32Array(this.cap);
    this.status = new Int8Array(this.cap).fill(-1);
    this.start = new Float64Array(this.cap);
    this.end = new Float64Array(this.cap);
    this.ids = new Array(this.cap);
    this.lanes = new Map();            // engine index -> {rows: [row], sorted, maxDur}
    this.open = new Set();
    this.byName = [];
    this.finished = 0;
    this.failed = 0;
    this.minStart = Infinity;
    this.maxEnd = -Infinity;
  }

  grow(need) {
    let cap = this.cap;
    while (cap < need) cap *= 2;
    if (cap === this.cap) return;
    const copy = (a, Kind, fill) => {
      const b = new Kind(cap);
      if (fill !== undefined) b.fill(fill);
      b.set(a);
      return b;
    };
    this.engine = copy(this.engine, Int32Array);
    this.name = copy(this.name, Int32Array);
    this.status = copy(this.status, Int8Array, -1);
    this.start = copy(this.start, Float64Array);
    this.end = copy(this.end, Float64Array);
    this.ids.length = cap;
    this.cap = cap;
  }

  tally(r, sign) {
    const s = this.status[r];
    if (s === 1) this.finished += sign;
    if (s === 2 || s === 5) this.failed += sign;
  }

  apply(msg, buffers) {
    if (msg.type === "reset") {
      this.clear(msg.n);
    } else if (msg.base !== this.seq) {
      return false;                    // missed one: the caller asks for a reset
    }
    this.t0 = msg.t0 === null || msg.t0 === undefined ? this.t0 : msg.t0;
    const [row, engine, name, status] = buffers.slice(0, 4).map((b) => typed(b, Int32Array));
    const [start, end] = buffers.slice(4, 6).map((b) => typed(b, Float64Array));
    let maxRow = -1;
    for (let k = 0; k < msg.n; k++) maxRow = Math.max(maxRow, row[k]);
    this.grow(maxRow + 1);
    for (let k = 0; k < msg.n; k++) {
      const r = row[k];
      const fresh = this.status[r] === -1;
      if (!fresh) this.tally(r, -1);
      this.engine[r] = engine[k];
      this.name[r] = name[k];
      this.status[r] = status[k];
      this.start[r] = start[k];
      this.end[r] = end[k];
      this.ids[r] = msg.ids[k];
      this.tally(r, +1);
      if (fresh) {
        let lane = this.lanes.get(engine[k]);
        if (!lane) this.lanes.set(engine[k], (lane = { rows: [], sorted: true, maxDur: 0 }));
        const last = lane.rows.length ? lane.rows[lane.rows.length - 1] : -1;
        if (last >= 0 && this.start[last] > start[k]) lane.sorted = false;
        lane.rows.push(r);
        this.byName[name[k]] = (this.byName[name[k]] || 0) + 1;
        if (r >= this.n) this.n = r + 1;
        if (start[k] < this.minStart) this.minStart = start[k];
      }
      if (status[k] === 0) {
        this.open.add(r);
      } else {
        this.open.delete(r);
        const lane = this.lanes.get(engine[k]);
        const d = end[k] - start[k];
        if (d > lane.maxDur) lane.maxDur = d;
        if (end[k] > this.maxEnd) this.maxEnd = end[k];
      }
    }
    this.seq = msg.seq;
    return true;
  }

  laneRows(engine) {
    const lane = this.lanes.get(engine);
    if (!lane) return null;
    if (!lane.sorted) {
      const s = this.start;
      lane.rows.sort((a, b) => s[a] - s[b]);
      lane.sorted = true;
    }
    return lane;
  }
}

function hello(model, store) {
  const t = performance.now();
  if (t - store.lastHello < 1500) return;
  store.lastHello = t;
  model.send({ type: "hello", seq: store.seq });
}

function storeFor(model) {
  const uid = model.get("uid");
  let store = STORES.get(uid);
  if (!store) {
    store = new Store();
    STORES.set(uid, store);
    model.on("msg:custom", (msg, buffers) => {
      if (!msg || (msg.type !== "reset" && msg.type !== "rows")) return;
      if (!store.apply(msg, buffers || [])) {
        hello(model, store);
        return;
      }
      for (const v of store.views) v.dataChanged();
    });
    hello(model, store);
  }
  return store;
}

function initialize({ model }) {
  storeFor(model);
  const uid = model.get("uid");
  return () => STORES.delete(uid);                // the model is gone (widget closed)
}

function niceStep(span, px, minPx) {
  const raw = (span * minPx) / Math.max(1, px);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 5, 10]) if (raw <= m * mag) return m * mag;
  return 10 * mag;
}

function tickLabel(t, step) {
  const a = Math.abs(t) < step / 1e3 ? 0 : t;
  if (step >= 60 && Math.abs(a) >= 60) {
    const m = Math.floor(a / 60), s = a - 60 * m;
    return `${m}:${String(Math.round(s)).padStart(2, "0")}`;
  }
  if (step >= 1) return `${a.toFixed(0)} s`;
  if (step >= 0.1) return `${a.toFixed(1)} s`;
  if (step >= 0.001) return `${(a * 1e3).toFixed(0)} ms`;
  return `${(a * 1e6).toFixed(0)} µs`;
}

function clock(unixSeconds) {
  const d = new Date(unixSeconds * 1000);
  const pad = (x, n = 2) => String(x).padStart(n, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}


function render({ model, el }) {
  const store = storeFor(model);
  el.classList.add("shoal-widget", "shoal-timeline");
  const card = h("div", "shoal-card");
  const head = h("div", "shoal-head");
  const dot = h("span", "shoal-dot");
  const title = h("span", "shoal-title", model.get("title") || "shoal timeline");
  const stats = h("span", "shoal-tl-stats");
  const tools = h("span", "shoal-tl-tools");
  const btn = (label, act, tip) => {
    const b = h("button", "shoal-btn small", label);
    b.dataset.act = act;
    b.title = tip;
    tools.append(b);
    return b;
  };
  btn("−", "out", "zoom out");
  btn("+", "in", "zoom in");
  const fitBtn = btn("Fit", "fit", "show every run (double-click the chart)");
  const liveBtn = btn("● Live", "follow", "follow the present");
  head.append(dot, title, stats, h("span", "shoal-spacer"), tools);
  const frame = h("div", "shoal-tl-frame");
  const axis = h("canvas", "shoal-tl-axis");
  const scroll = h("div", "shoal-tl-scroll");
  const canvas = h("canvas", "shoal-tl-canvas");
  const tip = h("div", "shoal-tl-tip");
  tip.hidden = true;
  scroll.append(canvas);
  frame.append(axis, scroll);
  const foot = h("div", "shoal-tl-foot");
  const legend = h("div", "shoal-tl-legend");
  const hint = h("span", "shoal-tl-hint", "drag to pan · ctrl+wheel to zoom · hover for details");
  foot.append(legend, hint);
  card.append(head, frame, foot);
  el.append(card, tip);
  el.style.position = "relative";

  // view state: "follow" (the present, span auto or zoomed), "fit" (all data) or "manual"
  let mode = "follow", span = null, win = [0, 1];
  let metaAt = performance.now(), meta = model.get("meta") || {};
  let layout = [], height = AXIS_H, lastDraw = 0, frameReq = 0, disposed = false, drag = null;
  let view = [0, 1], scale = 1, colors = [];
  let theme = null;

  const view_ = {
    dataChanged() { relayout(); schedule(); },
  };
  store.views.add(view_);

  function live() { return model.get("live") !== false; }

  function nowRel() {
    if (meta.now === undefined || store.t0 === null) return store.n ? store.maxEnd : 0;
    return meta.now - store.t0 + (live() ? (performance.now() - metaAt) / 1000 : 0);
  }

  function dataRange(now) {
    if (!store.n) return [now - 10, now];
    let end = isFinite(store.maxEnd) ? store.maxEnd : store.minStart;
    if (store.open.size) end = Math.max(end, now);
    return [store.minStart, Math.max(end, store.minStart + 1e-3)];
  }

  function currentWindow() {
    const now = nowRel();
    const [d0, d1] = dataRange(now);
    if (mode === "manual") return win;
    if (mode === "fit") {
      const pad = (d1 - d0) * 0.02;
      return [d0 - pad, d1 + pad];
    }
    const end = store.open.size && live() ? now : d1;
    const s = span !== null ? span : Math.max(1e-3, Math.min(AUTO_SPAN, (end - d0) * 1.04));
    return [end - s, end + s * 0.03];
  }

  function relayout() {
    meta = model.get("meta") || {};
    colors = meta.colors || [];
    const engines = meta.engines || [];
    const shown = [];
    engines.forEach(([id, host, alive], i) => {
      if (alive || store.lanes.has(i)) shown.push({ i, id, host, alive });
    });
    for (const i of store.lanes.keys()) {
      if (!engines[i]) shown.push({ i, id: `engine ${i}`, host: "?", alive: true });
    }
    shown.sort((a, b) => natural(a.host, b.host) || natural(a.id, b.id));
    layout = [];
    let y = 0, host = null;
    for (const e of shown) {
      if (e.host !== host) {
        host = e.host;
        const n = shown.filter((x) => x.host === host).length;
        layout.push({ kind: "host", host, y, n });
        y += HOST_H;
      }
      layout.push({ kind: "lane", engine: e.i, label: e.id, alive: e.alive, y });
      y += LANE_H;
    }
    height = Math.max(y, LANE_H) + 4;
    updateText();
  }

  function updateText() {
    const c = meta.counts || {};
    stats.replaceChildren();
    const parts = [`${fmt(store.n)} runs`, `${fmt(store.finished)} finished`];
    stats.append(parts.join(" · "));
    if (store.failed) {
      stats.append(" · ");
      stats.append(h("span", "bad", `${fmt(store.failed)} failed`));
    }
    if (c.cancelled) stats.append(` · ${fmt(c.cancelled)} cancelled`);
    if (store.open.size) stats.append(` · ${fmt(store.open.size)} running`);
    const lanes = layout.filter((x) => x.kind === "lane").length;
    const hosts = layout.filter((x) => x.kind === "host").length;
    stats.append(` · ${lanes} engine${lanes === 1 ? "" : "s"} on ${hosts} host${hosts === 1 ? "" : "s"}`);
    el.dataset.runs = String(store.n);
    el.dataset.finished = String(store.finished);
    el.dataset.failed = String(store.failed);
    el.dataset.running = String(store.open.size);
    el.dataset.lanes = String(lanes);
    el.dataset.seq = String(store.seq);
    dot.className = "shoal-dot" + (live() ? " live" : "") + (live() && store.open.size ? " busy" : "");
    dot.title = live() ? "connected" : `stopped: ${model.get("closed_reason") || ""}`;
    liveBtn.classList.toggle("on", mode === "follow");
    fitBtn.classList.toggle("on", mode === "fit");
    legend.replaceChildren();
    const names = meta.names || [];
    const order = names.map((_, i) => i).filter((i) => store.byName[i]);
    order.sort((a, b) => store.byName[b] - store.byName[a]);
    for (const i of order.slice(0, 30)) {
      const item = h("span", "item");
      const sw = h("span", "sw");
      sw.style.background = colors[i] || "#888";
      item.append(sw, names[i], h("span", "n", `×${fmt(store.byName[i])}`));
      legend.append(item);
    }
    if (store.failed) {
      const item = h("span", "item");
      const sw = h("span", "sw");
      sw.style.background = FAILED;
      item.append(sw, "failed", h("span", "n", `×${fmt(store.failed)}`));
      legend.append(item);
    }
  }

  function readTheme() {
    const cs = getComputedStyle(el);
    const v = (name, fb) => (cs.getPropertyValue(name) || "").trim() || fb;
    theme = {
      fg: v("--jp-ui-font-color1", "#1f2328"),
      muted: v("--jp-ui-font-color2", "#656d76"),
      faint: v("--jp-ui-font-color3", "#8c959f"),
      band: v("--jp-layout-color2", "#f6f8fa"),
      grid: v("--jp-border-color2", "#d0d7de"),
      accent: "#0969da",
      font: v("--jp-ui-font-family", "-apple-system, BlinkMacSystemFont, 'Segoe UI', Helvetica, Arial, sans-serif"),
    };
  }

  function sizeCanvas(c, w, hgt) {
    const dpr = window.devicePixelRatio || 1;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(hgt * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(hgt * dpr);
      c.style.width = `${w}px`;
      c.style.height = `${hgt}px`;
    }
    const ctx = c.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    return ctx;
  }

  function draw() {
    frameReq = 0;
    if (disposed) return;
    const began = performance.now();
    readTheme();                                   // cheap; follows a theme switch
    const W = Math.max(320, scroll.clientWidth || el.clientWidth || 800);
    const plotW = W - GUTTER - 10;
    view = currentWindow();
    scale = plotW / Math.max(1e-9, view[1] - view[0]);
    const X = (t) => GUTTER + (t - view[0]) * scale;
    const now = nowRel();

    // axis
    const actx = sizeCanvas(axis, W, AXIS_H);
    actx.clearRect(0, 0, W, AXIS_H);
    actx.font = `11px ${theme.font}`;
    actx.textBaseline = "middle";
    const step = niceStep(view[1] - view[0], plotW, 90);
    const first = Math.ceil(view[0] / step) * step;
    const ticks = [];
    for (let t = first; t <= view[1]; t += step) ticks.push(t);
    actx.fillStyle = theme.muted;
    actx.fillText(store.t0 ? `t₀ ${clock(store.t0).slice(0, 8)}` : "", 8, AXIS_H / 2);
    for (const t of ticks) {
      const x = X(t);
      actx.fillStyle = theme.grid;
      actx.fillRect(Math.round(x), AXIS_H - 6, 1, 6);
      actx.fillStyle = theme.muted;
      actx.fillText(tickLabel(t, step), x + 3, AXIS_H / 2 - 1);
    }

    // lanes
    const ctx = sizeCanvas(canvas, W, height);
    ctx.clearRect(0, 0, W, height);
    ctx.font = `11px ${theme.font}`;
    ctx.textBaseline = "middle";
    for (const row of layout) {
      if (row.kind === "host") {
        ctx.fillStyle = theme.band;
        ctx.fillRect(0, row.y, W, HOST_H);
        ctx.fillStyle = theme.fg;
        ctx.font = `600 11px ${theme.font}`;
        ctx.fillText(`host ${row.host}`, 8, row.y + HOST_H / 2);
        ctx.font = `11px ${theme.font}`;
        ctx.fillStyle = theme.muted;
        ctx.fillText(`${row.n} engine${row.n === 1 ? "" : "s"}`, GUTTER, row.y + HOST_H / 2);
      } else {
        ctx.fillStyle = row.alive ? theme.muted : theme.faint;
        const label = row.label.length > 17 ? "…" + row.label.slice(-16) : row.label;
        ctx.fillText(label + (row.alive ? "" : " ✕"), 18, row.y + LANE_H / 2);
      }
    }
    ctx.fillStyle = theme.grid;
    for (const t of ticks) ctx.fillRect(Math.round(X(t)), 0, 1, height);

    ctx.save();
    ctx.beginPath();
    ctx.rect(GUTTER, 0, plotW, height);
    ctx.clip();
    let drawn = 0;
    const failures = [], retried = [];
    const barH = LANE_H - 2 * BAR_PAD;
    for (const row of layout) {
      if (row.kind !== "lane") continue;
      const lane = store.laneRows(row.engine);
      if (!lane) continue;
      const rows = lane.rows, y = row.y + BAR_PAD;
      // first row that may reach into the window: start >= view0 - longest run
      const from = view[0] - lane.maxDur;
      let lo = 0, hi = rows.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (store.start[rows[mid]] < from) lo = mid + 1; else hi = mid;
      }
      let mx0 = 0, mx1 = -1, mcol = null;
      const flush = () => {
        if (mcol !== null) {
          ctx.fillStyle = mcol;
          ctx.fillRect(mx0, y, Math.max(1, mx1 - mx0), barH);
          drawn++;
        }
        mcol = null;
      };
      for (let k = lo; k < rows.length; k++) {
        const r = rows[k];
        const s = store.start[r];
        if (s > view[1]) break;
        const st = store.status[r];
        if (st === 0) continue;                      // open runs: drawn below
        const e = store.end[r];
        if (e < view[0]) continue;
        const x0 = X(s), x1 = X(e);
        if (st === 2 || st === 5) { failures.push([x0, x1, y]); continue; }
        if (st === 4) retried.push([x0, x1, y]);
        const col = st === 3 ? CANCELLED : colors[store.name[r]] || "#888";
        if (x1 - x0 >= 3) {
          flush();
          ctx.fillStyle = col;
          const w = x1 - x0 > 5 ? x1 - x0 - 1 : x1 - x0;
          if (w > 8 && ctx.roundRect) {
            ctx.beginPath();
            ctx.roundRect(x0, y, w, barH, 2);
            ctx.fill();
          } else {
            ctx.fillRect(x0, y, w, barH);
          }
          drawn++;
        } else if (mcol === col && x0 <= mx1 + 1) {
          mx1 = Math.max(mx1, x1);
        } else {
          flush();
          mx0 = x0;
          mx1 = Math.max(x1, x0 + 1);
          mcol = col;
        }
      }
      flush();
    }
    // open runs grow to now
    const laneY = new Map();
    for (const row of layout) if (row.kind === "lane") laneY.set(row.engine, row.y + BAR_PAD);
    for (const r of store.open) {
      const y = laneY.get(store.engine[r]);
      if (y === undefined) continue;
      const x0 = X(store.start[r]), x1 = Math.max(x0 + 2, X(now));
      const col = colors[store.name[r]] || "#888";
      ctx.fillStyle = col;
      ctx.globalAlpha = 0.55;
      ctx.fillRect(x0, y, x1 - x0, barH);
      ctx.globalAlpha = 1;
      ctx.fillRect(Math.max(x0, x1 - 2), y, 2, barH);
      drawn++;
    }
    for (const [x0, x1, y] of retried) {
      ctx.strokeStyle = RETRIED;
      ctx.lineWidth = 1.5;
      ctx.strokeRect(x0 + 0.75, y + 0.75, Math.max(1, x1 - x0 - 1.5), barH - 1.5);
    }
    for (const [x0, x1, y] of failures) {
      const w = Math.max(2, x1 - x0);
      ctx.fillStyle = FAILED;
      ctx.fillRect(x0, y, w, barH);
      ctx.fillStyle = FAILED_EDGE;
      ctx.fillRect(x0, y, Math.min(2, w), barH);
      // a marker above the bar, so a failure stays visible when zoomed out
      ctx.beginPath();
      ctx.moveTo(x0 - 3, y - BAR_PAD + 0.5);
      ctx.lineTo(x0 + 3, y - BAR_PAD + 0.5);
      ctx.lineTo(x0, y + 2.5);
      ctx.closePath();
      ctx.fill();
      drawn++;
    }
    if (live() && store.open.size && now >= view[0] && now <= view[1]) {
      ctx.fillStyle = theme.accent;
      ctx.globalAlpha = 0.6;
      ctx.fillRect(Math.round(X(now)), 0, 1, height);
      ctx.globalAlpha = 1;
    }
    ctx.restore();
    el.dataset.drawn = String(drawn);
    el.dataset.drawMs = (performance.now() - began).toFixed(2);
    el.dataset.view = `${view[0].toFixed(3)},${view[1].toFixed(3)}`;
    lastDraw = performance.now();
    if (store.open.size && live() && mode !== "manual") schedule();
  }

  function schedule() {
    if (frameReq || disposed) return;
    const wait = Math.max(0, 50 - (performance.now() - lastDraw));   // 20 frames a second at most
    frameReq = setTimeout(() => requestAnimationFrame(draw), wait);
  }

  // ---------------------------------------------------------------- hover
  function hit(mx, my) {
    const row = layout.find((r) => r.kind === "lane" && my >= r.y && my < r.y + LANE_H);
    if (!row || mx < GUTTER) return null;
    const t = view[0] + (mx - GUTTER) / scale, tol = 3 / scale, now = nowRel();
    for (const r of store.open) {
      if (store.engine[r] === row.engine && store.start[r] - tol <= t && t <= now + tol) return r;
    }
    const lane = store.laneRows(row.engine);
    if (!lane) return null;
    const rows = lane.rows;
    let lo = 0, hi = rows.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (store.start[rows[mid]] <= t + tol) lo = mid + 1; else hi = mid;
    }
    let best = null, bestD = Infinity;
    for (let k = lo - 1; k >= 0; k--) {
      const r = rows[k], s = store.start[r];
      if (s < t - lane.maxDur - tol) break;
      const e = store.status[r] === 0 ? now : store.end[r];
      if (e + tol < t) continue;
      const d = t < s ? s - t : t > e ? t - e : 0;
      const failed = store.status[r] === 2 || store.status[r] === 5;
      if (d < bestD || (d === bestD && failed)) { best = r; bestD = d; }
      if (d === 0 && !failed) break;
    }
    return best;
  }

  function showTip(r, ev) {
    if (r === null) { tip.hidden = true; return; }
    const names = meta.names || [], engines = meta.engines || [];
    const st = STATUS[store.status[r]] || "?";
    const e = engines[store.engine[r]] || ["?", "?"];
    const end = store.status[r] === 0 ? nowRel() : store.end[r];
    tip.replaceChildren();
    const name = h("div", "name");
    const sw = h("span", "sw");
    sw.style.background = colors[store.name[r]] || "#888";
    name.append(sw, names[store.name[r]] || "?");
    tip.append(name);
    const line = (k, v, cls) => {
      const d = h("div");
      d.append(h("span", "k", k), h("span", cls || "", v));
      tip.append(d);
    };
    line("task", store.ids[r] || "?");
    line("status", st, st);
    line("duration", duration(end - store.start[r]) + (st === "running" ? " so far" : ""));
    line("engine", `${e[0]} on ${e[1]}`);
    if (store.t0 !== null) line("started", clock(store.t0 + store.start[r]));
    tip.hidden = false;
    const box = el.getBoundingClientRect();
    let x = ev.clientX - box.left + 14, y = ev.clientY - box.top + 14;
    if (x + tip.offsetWidth > box.width) x = Math.max(0, ev.clientX - box.left - tip.offsetWidth - 10);
    tip.style.left = `${x}px`;
    tip.style.top = `${y}px`;
    tip.dataset.task = store.ids[r] || "";
  }

  function local(ev) {
    const b = canvas.getBoundingClientRect();
    return [ev.clientX - b.left, ev.clientY - b.top];
  }

  // ---------------------------------------------------------------- zoom and pan
  function zoom(factor, anchorX) {
    const v = currentWindow();
    const s = (v[1] - v[0]) * factor;
    if (mode === "follow") {
      span = Math.max(1e-4, s / 1.03);
    } else {
      const at = anchorX === undefined ? (v[0] + v[1]) / 2 : v[0] + (anchorX - GUTTER) / scale;
      const f = (at - v[0]) / (v[1] - v[0]);
      win = [at - f * s, at - f * s + Math.max(1e-4, s)];
      mode = "manual";
    }
    updateText();
    schedule();
  }

  function pan(dt) {
    const v = currentWindow();
    win = [v[0] + dt, v[1] + dt];
    mode = "manual";
    updateText();
    schedule();
  }

  const onMove = (ev) => {
    const [mx, my] = local(ev);
    if (drag) {
      const dt = (drag.x - mx) / scale;
      win = [drag.win[0] + dt, drag.win[1] + dt];
      mode = "manual";
      tip.hidden = true;
      updateText();
      schedule();
      return;
    }
    showTip(hit(mx, my), ev);
  };
  const onDown = (ev) => {
    if (ev.button !== 0) return;
    const [mx] = local(ev);
    drag = { x: mx, win: currentWindow() };
    canvas.classList.add("dragging");
    ev.preventDefault();
  };
  const onUp = () => {
    drag = null;
    canvas.classList.remove("dragging");
  };
  const onLeave = () => { tip.hidden = true; };
  const onWheel = (ev) => {
    const [mx] = local(ev);
    if (ev.ctrlKey || ev.metaKey) {
      ev.preventDefault();
      zoom(Math.exp(ev.deltaY * 0.0025), mx);
    } else if (ev.shiftKey || Math.abs(ev.deltaX) > Math.abs(ev.deltaY)) {
      ev.preventDefault();
      pan(((ev.shiftKey ? ev.deltaY : ev.deltaX) / scale) * 0.8);
    }
  };
  const onDbl = () => { mode = "fit"; updateText(); schedule(); };
  const onTool = (ev) => {
    const act = ev.target && ev.target.dataset ? ev.target.dataset.act : null;
    if (act === "in") zoom(0.5);
    else if (act === "out") zoom(2);
    else if (act === "fit") { mode = "fit"; updateText(); schedule(); }
    else if (act === "follow") { mode = "follow"; span = null; updateText(); schedule(); }
  };
  canvas.addEventListener("mousemove", onMove);
  canvas.addEventListener("mousedown", onDown);
  window.addEventListener("mouseup", onUp);
  canvas.addEventListener("mouseleave", onLeave);
  canvas.addEventListener("wheel", onWheel, { passive: false });
  canvas.addEventListener("dblclick", onDbl);
  tools.addEventListener("click", onTool);

  const onMeta = () => { metaAt = performance.now(); relayout(); schedule(); };
  const onLive = () => {
    if (!live() && mode === "follow") mode = "fit";
    updateText();
    schedule();
  };
  model.on("change:meta", onMeta);
  model.on("change:live", onLive);
  const ro = new ResizeObserver(() => schedule());
  ro.observe(el);

  relayout();
  if (!live()) mode = "fit";
  schedule();
  if (!store.seq) setTimeout(() => { if (!store.seq && !disposed) hello(model, store); }, 1600);

  return () => {
    disposed = true;
    store.views.delete(view_);
    clearTimeout(frameReq);
    ro.disconnect();
    window.removeEventListener("mouseup", onUp);
    model.off("change:meta", onMeta);
    model.off("change:live", onLive);
  };
}

export default { initialize, render };
