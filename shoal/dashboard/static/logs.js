// shoal logs: the cluster's log files, followed live (tail -f).  Text arrives as custom
// messages {type: "lines", file, text} after the page says "hello"; `files` lists the logs.

const MAX_CHARS = 400000;         // per file kept in the page

function render({ model, el }) {
  el.classList.add("shoal-widget", "shoal-logs");
  const card = h("div", "shoal-card");
  const head = h("div", "shoal-head");
  const dot = h("span", "shoal-dot live");
  const pick = h("select", "shoal-log-pick");
  const follow = h("label", "shoal-sub");
  const box = h("input");
  box.type = "checkbox"; box.checked = true;
  follow.append(box, " follow");
  const dir = h("span", "shoal-sub");
  head.append(dot, h("span", "shoal-title", "shoal logs"), pick, follow, h("span", "shoal-spacer"), dir);
  const pre = h("pre", "shoal-log");
  const banner = h("div", "shoal-banner");
  card.append(head, pre, banner);
  el.append(card);
  const texts = new Map();
  let current = "";

  function show() {
    pre.textContent = texts.get(current) || "";
    pre.dataset.file = current;
    if (box.checked) pre.scrollTop = pre.scrollHeight;
  }

  function files() {
    const names = model.get("files") || [];
    const live = model.get("live") !== false;
    dot.className = "shoal-dot" + (live ? " live" : "");
    dir.textContent = model.get("logs_dir") || "";
    if (!current || !names.includes(current)) current = names.find((n) => n.startsWith("scheduler")) || names[0] || "";
    pick.replaceChildren(...names.map((n) => { const o = h("option", "", n); o.value = n; o.selected = n === current; return o; }));
    el.dataset.files = String(names.length);
    banner.textContent = live ? "" : `Cluster stopped${model.get("closed_reason") ? ": " + model.get("closed_reason") : ""}.`;
    show();
  }

  const onMsg = (msg) => {
    if (!msg || msg.type !== "lines") return;
    let t = (texts.get(msg.file) || "") + msg.text;
    if (t.length > MAX_CHARS) t = t.slice(t.length - MAX_CHARS);
    texts.set(msg.file, t);
    if (msg.file === current) show();
  };
  pick.addEventListener("change", () => { current = pick.value; show(); });
  model.on("msg:custom", onMsg);
  model.on("change:files", files);
  model.on("change:live", files);
  files();
  model.send({ type: "hello" });
  return () => { model.off("msg:custom", onMsg); model.off("change:files", files); model.off("change:live", files); };
}

export default { render };
