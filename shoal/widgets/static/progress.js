// shoal progress bar: done / failed / running of a set of refs, rate and time left.
// State: model.get("view") (see shoal/widgets/progress.py ProgressModel.view).


function duration(s) {
  if (s === null || s === undefined || !isFinite(s)) return "—";
  s = Math.max(0, s);
  if (s < 1e-3) return `${Math.round(s * 1e6)} µs`;
  if (s < 1) return `${Math.round(s * 1e3)} ms`;
  if (s < 10) return `${s.toFixed(2)} s`;
  if (s < 60) return `${s.toFixed(1)} s`;
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  const pad = (x) => String(x).padStart(2, "0");
  return h ? `${h}:${pad(m)}:${pad(sec)}` : `${m}:${pad(sec)}`;
}

function rate(r) {
  if (!r) return "—";
  if (r >= 100) return `${fmt(r)}/s`;
  if (r >= 1) return `${r.toFixed(1)}/s`;
  return `${(r * 60).toFixed(1)}/min`;
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function render({ model, el: root }) {
  root.classList.add("shoal-widget", "shoal-progress");
  const row = el("div", "shoal-progress-row");
  const icon = el("span", "shoal-progress-icon");
  const title = el("span", "shoal-progress-title");
  const track = el("div", "shoal-progress-track");
  track.setAttribute("role", "progressbar");
  track.setAttribute("aria-valuemin", "0");
  const done = el("div", "shoal-progress-done");
  const failed = el("div", "shoal-progress-failed");
  const running = el("div", "shoal-progress-running");
  track.append(done, failed, running);
  const pct = el("span", "shoal-progress-pct");
  const text = el("span", "shoal-progress-text");
  row.append(icon, title, track, pct, text);
  root.append(row);

  function update() {
    const v = model.get("view") || {};
    const total = v.total || 0;
    const bad = (v.failed || 0) + (v.cancelled || 0);
    const status = v.status || "running";
    const frac = (x) => (total ? (100 * x) / total : 0);
    root.dataset.status = status;
    root.dataset.done = String(v.done || 0);
    root.dataset.failed = String(bad);
    root.dataset.total = String(total);
    icon.textContent = { done: "✔", failed: "✘", lost: "✘" }[status] || "⏳";
    title.textContent = v.title || "shoal";
    title.title = v.title || "";
    done.style.width = `${frac(v.done || 0)}%`;
    failed.style.width = `${frac(bad)}%`;
    running.style.width = status === "running" ? `${frac(Math.min(v.running || 0, total - (v.done || 0) - bad))}%` : "0%";
    track.setAttribute("aria-valuemax", String(total));
    track.setAttribute("aria-valuenow", String((v.done || 0) + bad));
    pct.textContent = total ? `${Math.floor(frac((v.done || 0) + bad))}%` : "";
    text.replaceChildren();
    const add = (node) => {
      if (text.childNodes.length) text.append(" · ");
      text.append(node);
    };
    const b = el("b", "shoal-progress-count", `${fmt(v.done || 0)} / ${fmt(total)}`);
    const first = el("span");
    first.append(b, " done");
    add(first);
    if (v.failed) add(el("span", "bad", `${fmt(v.failed)} failed`));
    if (v.cancelled) add(el("span", "bad", `${fmt(v.cancelled)} cancelled`));
    if (status === "running") {
      if (v.running) add(`${fmt(v.running)} running`);
      add(rate(v.rate));
      add(v.eta !== null && v.eta !== undefined ? `${duration(v.eta)} left` : "— left");
    } else {
      add(`in ${duration(v.elapsed)}`);
      if (v.rate) add(rate(v.rate));
    }
    if (status === "lost") add(el("span", "bad", `cluster lost${v.lost ? ": " + v.lost : ""}`));
  }
  update();
  model.on("change:view", update);
  return () => model.off("change:view", update);
}

export default { render };
