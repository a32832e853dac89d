"""Level 5 for the widgets: JupyterLab in headless Chromium runs tests/browser/widgets.ipynb.

Asserted from the DOM: the cluster widget shows the engines and its "+" button adds one; the
timeline has a bar per task run (finished and failed counted apart, 10,098 in all, merged
per pixel when drawn), follows the present while tasks run and answers hover, zoom and fit; the automatic progress bar of a long `shoal.wait` ends at its total; a
background `shoal.progress` bar reaches its total while the kernel is idle; the object
table lists every object the notebook put.  A second notebook is executed, saved and
reopened in JupyterLab once its kernel is gone and without a kernel (nbconvert's HTML in
Chromium): its bar is saved finished and its timeline with its runs.  Screenshots go to $SHOAL_SCREENSHOTS (or the
test's tmp dir).

Needs Chromium, playwright and jupyterlab (scripts/system-deps.sh and the test extra install
them); without them the test is skipped with the reason, or fails when
SHOAL_REQUIRE_BROWSER_TESTS=1 (for CI, which must run it).
"""
import os
import re

import pytest

from browser import lab as harness

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
NOTEBOOK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "browser", "widgets.ipynb")

# What the widgets show, read from their DOM (data-* attributes set by the widgets' JS).
JS_WIDGETS = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  const ds = (e) => e ? {...e.dataset} : null;
  const text = [...panel.querySelectorAll('.jp-OutputArea')].map(o => o.innerText).join('\\n');
  return {
    progress: [...panel.querySelectorAll('.shoal-progress')].map(p => ({
      title: p.querySelector('.shoal-progress-title').textContent, ...p.dataset})),
    timeline: ds(panel.querySelector('.shoal-timeline')),
    cluster: ds(panel.querySelector('.shoal-cluster')),
    objects: ds(panel.querySelector('.shoal-objects')),
    object_ids: [...panel.querySelectorAll('.shoal-object-row')].map(r => r.dataset.objectId),
    prompts: [...panel.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')].map(e => e.innerText.trim()),
    errors: (text.match(/Error displaying widget[^\\n]*|Failed to load model class[^\\n]*/g) || []),
    text,
  };
}"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    problems = harness.missing()
    if problems:
        msg = ("browser tests need Chromium, playwright and jupyterlab: " + "; ".join(problems)
               + f" (install them with: {harness.INSTALL_HINT})")
        if os.environ.get("SHOAL_REQUIRE_BROWSER_TESTS"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    with harness.Lab(tmp_path_factory.mktemp("lab")) as lab:
        yield lab


def shots_dir(tmp_path):
    d = os.environ.get("SHOAL_SCREENSHOTS") or str(tmp_path)
    os.makedirs(d, exist_ok=True)
    return d


def test_widgets_live_in_jupyterlab(lab, tmp_path):
    page = lab.open(NOTEBOOK)
    lab.run_all(page, timeout=150)
    at_idle = page.evaluate(JS_WIDGETS)
    assert not at_idle["errors"], at_idle["errors"]
    out = shots_dir(tmp_path)
    if at_idle["timeline"]["running"] != "0":     # the window follows the present
        view = page.locator(".shoal-timeline").get_attribute("data-view")
        lab.poll(page, "(v) => document.querySelector('.shoal-timeline').dataset.view !== v", 10,
                 "the follow window to move", arg=view)
    page.locator(".shoal-timeline").first.screenshot(path=os.path.join(out, "timeline-live.png"))
    page.locator(".shoal-progress").last.screenshot(path=os.path.join(out, "progress-live.png"))

    # The background bar fills after the last cell ended, with the kernel idle.
    def background():
        w = page.evaluate(JS_WIDGETS)
        bar = next((p for p in w["progress"] if p["title"] == "background fit"), None)
        return w if bar and bar["status"] == "done" else None
    w = lab.poll(page, "() => [...document.querySelectorAll('.shoal-progress')].some(p => "
                       "p.dataset.status === 'done' && p.querySelector('.shoal-progress-title')"
                       ".textContent === 'background fit')", 60, "the background bar to finish")
    w = background()
    assert lab.kernel_idle(page) and all(re.fullmatch(r"\[\d+\]:", p) for p in w["prompts"])
    bg = next(p for p in w["progress"] if p["title"] == "background fit")
    assert (bg["done"], bg["failed"], bg["total"]) == ("40", "0", "40")
    bg_then = next(p for p in at_idle["progress"] if p["title"] == "background fit")
    print("background bar when the notebook went idle:", bg_then)

    # The automatic bar of the 58-ref wait (over 2 s) ended at its total: 56 done, 2 failed.
    print("progress bars:", [(p["title"], p["status"], p["done"]) for p in w["progress"]])
    auto = next(p for p in w["progress"] if p["title"] == "shoal.wait: 58 refs")
    assert (auto["done"], auto["failed"], auto["total"], auto["status"]) == ("56", "2", "58", "failed")

    # Timeline: one bar per run; every task ran once (no retries): 56 + 10,000 + 40 finished,
    # 2 failed.  Bars under a pixel wide are merged: far fewer rectangles than runs.
    lab.poll(page, "() => document.querySelector('.shoal-timeline')?.dataset.finished === '10096'",
             30, "the timeline to count 10,096 finished runs")
    page.locator(".shoal-timeline button[data-act=fit]").click()
    lab.poll(page, "() => document.querySelector('.shoal-timeline').dataset.running === '0'", 10,
             "no open run")
    tl = page.evaluate(JS_WIDGETS)["timeline"]
    assert (tl["runs"], tl["finished"], tl["failed"], tl["running"]) == ("10098", "10096", "2", "0")
    assert tl["lanes"] == "2" and 0 < int(tl["drawn"]) < 10_098
    print(f"timeline: 10,098 runs drawn as {tl['drawn']} rectangles in {tl['drawMs']} ms")

    # Object store: every put is in the table.
    puts = re.search(r"PUT (.*)", w["text"]).group(1).split()
    lab.poll(page, "(ids) => { const rows = new Set([...document.querySelectorAll("
                   "'.shoal-object-row')].map(r => r.dataset.objectId));"
                   " return ids.every(i => rows.has(i)); }", 30, "the puts in the object table",
             arg=puts)
    assert len(puts) == 5

    # Hover: a tooltip with the task's name, id, engine, duration and status.
    canvas = page.locator(".shoal-timeline canvas.shoal-tl-canvas")
    box = canvas.bounding_box()
    tip = page.locator(".shoal-tl-tip")
    found = None
    for x in range(135, int(box["width"]) - 12, 5):
        page.mouse.move(box["x"] + x, box["y"] + 20 + 9)       # first lane, under the host row
        if tip.is_visible():
            found = tip.inner_text()
            break
    assert found and all(k in found for k in ("task", "status", "duration", "engine")), found

    # Zoom in, then fit: the visible window changes.
    timeline = page.locator(".shoal-timeline")
    before = timeline.get_attribute("data-view")
    page.locator(".shoal-timeline button[data-act=in]").click()
    lab.poll(page, "(v) => document.querySelector('.shoal-timeline').dataset.view !== v", 10,
             "zoom in", arg=before)
    page.locator(".shoal-timeline button[data-act=fit]").click()
    page.mouse.move(0, 0)

    # Cluster widget: 2 engines; its "+" button adds a third (the kernel is idle).
    lab.poll(page, "() => document.querySelector('.shoal-cluster')?.dataset.engines === '2'", 30,
             "the cluster widget to show 2 engines")
    page.locator(".shoal-cluster button[data-act=add]").first.click()
    lab.poll(page, "() => document.querySelector('.shoal-cluster').dataset.engines === '3'", 60,
             "the + button to add an engine")

    lab.screenshot(page, os.path.join(out, "widgets.png"))
    for name in ("cluster", "timeline", "objects"):
        page.locator(f".shoal-{name}").first.screenshot(path=os.path.join(out, f"{name}.png"))
    page.locator(".shoal-progress").first.screenshot(path=os.path.join(out, "progress.png"))
    bad = [m for kind, m in lab.console if kind == "pageerror" or
           (kind == "error" and re.search(r"shoal|anywidget", m, re.I))]
    assert not bad, bad


SNAPSHOTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "browser", "snapshots.ipynb")


def test_saved_notebook_shows_each_widgets_last_state(lab, tmp_path):
    """Execute in JupyterLab, save, reopen the saved file in JupyterLab once its kernel is
    gone, and without a kernel (nbconvert's HTML in Chromium, as GitHub or a static viewer
    shows it): the bar is saved finished, the timeline with its runs."""
    import nbformat
    from nbconvert import HTMLExporter
    page = lab.open(SNAPSHOTS)
    lab.run_all(page, timeout=120)
    lab.poll(page, "() => [...document.querySelectorAll('.shoal-progress')].some(p => "
                   "p.dataset.status === 'done' && p.dataset.done === '6')", 30,
             "the live bar to finish")
    saved = os.path.join(lab.root, os.path.basename(SNAPSHOTS))

    def saved_outputs():
        page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
        page.wait_for_timeout(300)
        nb = nbformat.read(saved, as_version=4)
        html = [o.get("data", {}).get("text/html", "") for c in nb.cells for o in c.outputs]
        bar = next((x for x in html if "shoal-progress-static" in x), "")
        timeline = next((x for x in html if "shoal-timeline-static" in x), "")
        return (nb if 'data-done="6" data-total="6"' in bar and 'data-runs="0"' not in timeline
                and "<svg" in timeline else None)
    nb = _poll(saved_outputs, 30, "the saved snapshots to be final")
    lab.api("DELETE", f"/api/sessions/{lab.api('GET', '/api/sessions')[0]['id']}")

    # JupyterLab again, the kernel that made the widgets gone: ipywidgets says the model
    # is not found and shows the saved fallback beside it, which must be the last state.
    reopened = page.context.new_page()
    reopened.goto(f"{lab.base}/lab/tree/{os.path.basename(SNAPSHOTS)}?reset&token={lab.token}")
    reopened.wait_for_selector(".jp-NotebookPanel", timeout=60_000)
    in_lab = _poll(lambda: reopened.evaluate("""() => {
        const bar = document.querySelector('.jp-OutputArea-output .shoal-progress-static');
        const timeline = document.querySelector('.jp-OutputArea-output .shoal-timeline-static');
        return bar && timeline && {bar: {...bar.dataset}, runs: timeline.dataset.runs};
    }"""), 60, "the saved fallbacks in JupyterLab")
    assert in_lab["bar"]["status"] == "done" and in_lab["bar"]["done"] == "6", in_lab
    assert int(in_lab["runs"]) >= 6, in_lab
    reopened.screenshot(path=os.path.join(shots_dir(tmp_path), "reopened-in-lab.png"), full_page=True)
    reopened.close()

    body, _ = HTMLExporter().from_notebook_node(nb)
    static = os.path.join(str(tmp_path), "saved.html")
    with open(static, "w", encoding="utf-8") as f:
        f.write(body)
    viewer = page.context.new_page()
    viewer.goto("file://" + static)
    state = viewer.evaluate("""() => ({
        bar: {...document.querySelector('.shoal-progress-static').dataset},
        bar_text: document.querySelector('.shoal-progress-static').innerText,
        runs: document.querySelector('.shoal-timeline-static').dataset.runs,
        empty: document.body.innerText.includes('No tasks have run yet'),
    })""")
    assert state["bar"]["status"] == "done" and state["bar"]["done"] == "6", state
    assert "6 / 6 done" in state["bar_text"] and " in " in state["bar_text"], state
    assert int(state["runs"]) >= 6 and not state["empty"], state
    viewer.screenshot(path=os.path.join(shots_dir(tmp_path), "saved-snapshots.png"), full_page=True)
    viewer.close()


def _poll(condition, timeout: float, what: str):
    import time
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
