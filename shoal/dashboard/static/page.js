// shoal dashboard pages: a notebook widget's own module, rendered full-page, fed over a websocket.
//
// PageModel is the part of anywidget's model a shoal widget uses (get, on/off "change:<trait>"
// and "msg:custom", send), backed by the page's socket instead of a kernel comm; the server
// side is shoal/dashboard/bridge.py.  Frames from the server are binary: uint32 n, n bytes of
// JSON {msg_type, data, lengths}, then the buffers.  The first is "comm_open" with the
// widget's whole state; then "comm_msg" (data.method "update": traits, "custom": a message).

const decoder = new TextDecoder();

function unpack(buf) {
  const dv = new DataView(buf);
  const n = dv.getUint32(0, true);
  const head = JSON.parse(decoder.decode(new Uint8Array(buf, 4, n)));
  const buffers = [];
  let at = 4 + n;
  for (const len of head.lengths || []) {
    buffers.push(new DataView(buf, at, len));
    at += len;
  }
  return { type: head.msg_type, data: head.data || {}, buffers };
}

class PageModel {
  constructor(ws) {
    this.ws = ws;
    this.state = {};
    this.handlers = new Map();
  }
  get(name) { return this.state[name]; }
  set(name, value) { this.state[name] = value; this.emit(`change:${name}`); }
  save_changes() {}                         // a page sets no trait on the server
  on(event, fn) {
    if (!this.handlers.has(event)) this.handlers.set(event, new Set());
    this.handlers.get(event).add(fn);
  }
  off(event, fn) {
    if (!event) { this.handlers.clear(); return; }
    const set = this.handlers.get(event);
    if (set) fn ? set.delete(fn) : set.clear();
  }
  emit(event, ...args) {
    for (const fn of [...(this.handlers.get(event) || [])]) {
      try { fn(...args); } catch (e) { console.error("shoal page:", event, e); }
    }
  }
  send(content) {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ method: "custom", content }));
  }
  update(state) {
    Object.assign(this.state, state);
    for (const k of Object.keys(state)) this.emit(`change:${k}`);
  }
}

function wsUrl(path) {
  const u = new URL(path, window.location.href);
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  return u.href;
}

function banner(el, text) {
  let b = document.querySelector(".shoal-page-banner");
  if (!b) {
    b = document.createElement("div");
    b.className = "shoal-page-banner";
    el.before(b);
  }
  b.textContent = text;
  b.hidden = !text;
}

// Render config.module's widget in `el`, live until the socket closes.
export async function mountView(el, config) {
  const mod = (await import(config.module)).default;
  const ws = new WebSocket(wsUrl(config.ws));
  ws.binaryType = "arraybuffer";
  const model = new PageModel(ws);
  let cleanup = [];
  document.body.dataset.state = "connecting";
  ws.onmessage = async (event) => {
    if (typeof event.data === "string") return;
    const msg = unpack(event.data);
    if (msg.type === "comm_open") {
      model.update(msg.data.state || {});
      const widget = document.createElement("div");
      widget.className = "shoal-page-widget";
      el.replaceChildren(widget);
      if (mod.initialize) cleanup.push(await mod.initialize({ model }));
      cleanup.push(await mod.render({ model, el: widget }));
      document.body.dataset.state = "live";
    } else if (msg.type === "comm_msg") {
      if (msg.data.method === "update") model.update(msg.data.state || {});
      else if (msg.data.method === "custom") model.emit("msg:custom", msg.data.content, msg.buffers);
    } else if (msg.type === "comm_close") {
      model.update({ live: false });
    } else if (msg.type === "error") {
      banner(el, `shoal: ${msg.data.message}`);
    }
  };
  ws.onclose = () => {
    document.body.dataset.state = "closed";
    if (model.get("live") !== false) banner(el, "Disconnected from the server; reload the page to reconnect.");
    for (const fn of cleanup) if (typeof fn === "function") fn();
    cleanup = [];
  };
  return model;
}

export { PageModel, unpack };
export { mountIndex } from "./index.js";
