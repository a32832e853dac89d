"""Level 5 for the dashboard: JupyterLab in headless Chromium with shoal's server extension
(enabled by the config file pip installs) and this checkout's build of the labextension.

One walk through what a user does, asserted from the DOM: Lab loads the built extension; the
launcher has the "shoal dashboard" card, which opens the index in a tab; a notebook's kernel
starts a cluster and the sidebar lists it as that notebook's; the sidebar starts a `shoal
start` cluster, scales it, and opens its timeline in a Lab tab, which draws the tasks of a
driver while they run, and its other views (tasks, cluster, objects, actors, logs) show them;
the sidebar stops it.  Screenshots go to $SHOAL_SCREENSHOTS (or the
test's tmp dir).  Needs Chromium, playwright, jupyterlab and the built labextension
(scripts/build-labextension.sh; `make test` runs it); without them the test skips with the
reason, or fails when SHOAL_REQUIRE_BROWSER_TESTS=1 (CI).
"""
import json
import os
import threading
import time

import pytest

from browser import lab as harness

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

NOTEBOOK = {"cells": [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                       "source": "import shoal\nctx = shoal.init(num_cpus=1)\nctx"}],
            "metadata": {}, "nbformat": 4, "nbformat_minor": 5}

JS_CARDS = """() => [...document.querySelectorAll('.jp-Launcher:not(.lm-mod-hidden) .jp-LauncherCard')]
    .map(c => ({label: c.innerText.trim(), category: c.dataset.category || ''}))"""
JS_SIDEBAR = """() => {
  const root = document.querySelector('#shoal-sidebar .shoal-index');
  if (!root || root.dataset.clusters === undefined) return null;
  return {count: Number(root.dataset.clusters), note: root.querySelector('.shoal-index-note').innerText,
          cards: [...root.querySelectorAll('.shoal-cluster-card')].map(c => ({
            id: c.dataset.cluster, kind: c.dataset.kind, mine: c.classList.contains('mine'),
            text: c.innerText}))};
}"""
JS_FEDERATED = """() => JSON.parse(document.getElementById('jupyter-config-data').textContent)
    .federated_extensions"""


def shots(tmp_path):
    d = os.environ.get("SHOAL_SCREENSHOTS") or str(tmp_path)
    os.makedirs(d, exist_ok=True)
    return d


def frame_of(page, src_part):
    """The Playwright frame of the Lab tab whose iframe shows `src_part`."""
    for f in page.frames:
        if src_part in f.url:
            return f
    return None


def test_dashboard_in_jupyterlab(tmp_path, monkeypatch):
    problems = harness.missing()
    if not os.path.isfile(os.path.join(harness.LABEXTENSION, "package.json")):
        problems.append("the labextension is not built (bash scripts/build-labextension.sh)")
    if problems:
        msg = ("the dashboard's browser test needs: " + "; ".join(problems)
               + f" (install with: {harness.INSTALL_HINT})")
        if os.environ.get("SHOAL_REQUIRE_BROWSER_TESTS"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    import shoal
    from shoal.dashboard import clusters
    out = shots(tmp_path)
    lab = harness.Lab(tmp_path, viewport=(1400, 900))
    # this process (the driver below, and cleanup) finds the clusters where the server does
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", lab.runtime_dir)
    with lab:
        with open(os.path.join(lab.root, "mine.ipynb"), "w") as f:
            json.dump(NOTEBOOK, f)
        try:
            walk(lab, out, shoal)
        finally:
            for c in clusters.visible_clusters():
                if c.kind == "started":
                    clusters.run_cli(["stop", "--address", c.address])


def walk(lab, out, shoal):
    from shoal.dashboard import clusters
    page = lab.open(os.path.join(lab.root, "mine.ipynb"))

    # the built extension is the one Lab loaded
    with open(os.path.join(harness.LABEXTENSION, "package.json")) as f:
        built = json.load(f)["jupyterlab"]["_build"]
    [ext] = [e for e in page.evaluate(JS_FEDERATED) if e["name"] == "shoal"] or [None]
    assert ext and ext["load"] == built["load"], (ext, built)

    # a notebook's kernel starts a cluster: the sidebar lists it as this notebook's
    lab.run_all(page, timeout=120)
    page.locator('.jp-SideBar [data-id="shoal-sidebar"]').click()
    side = lab.poll(page, f"() => {{ const s = ({JS_SIDEBAR})(); "
                          "return s && s.cards.some(c => c.mine) ? s : null; }", 60,
                    "the notebook's cluster in the sidebar")
    [mine] = [c for c in side["cards"] if c["mine"]]
    assert mine["kind"] == "embedded" and "kernel of mine.ipynb" in mine["text"], mine

    # the sidebar starts a `shoal start` cluster with 2 CPUs, then adds an engine
    page.locator("#shoal-sidebar .shoal-cpus").fill("2")
    page.locator('#shoal-sidebar [data-act="start"]').click()
    side = lab.poll(page, f"() => {{ const s = ({JS_SIDEBAR})(); return s && s.cards.some(c => "
                          "c.kind === 'started' && / 2 engines/.test(c.text)) ? s : null; }", 90,
                    "the started cluster in the sidebar")
    [started] = [c for c in side["cards"] if c["kind"] == "started"]
    card = f'#shoal-sidebar .shoal-cluster-card[data-cluster="{started["id"]}"]'
    page.locator(f'{card} [data-act="add"]').click()
    lab.poll(page, f"() => / 3 engines/.test(document.querySelector('{card}')?.innerText)", 60,
             "a third engine")
    page.locator("#shoal-sidebar").screenshot(path=os.path.join(out, "dashboard-sidebar.png"))

    # tasks run while the timeline is open in a Lab tab
    info = next(c for c in clusters.visible_clusters() if c.cluster_id == started["id"])
    done = threading.Event()
    errors = []

    def driver():
        try:
            shoal.init(address=info.address)

            @shoal.remote
            def work(i):
                time.sleep(0.15 + (i % 5) * 0.05)
                return i

            assert shoal.get([work.remote(i) for i in range(90)]) == list(range(90))
        except BaseException as exc:           # reported by the test thread
            errors.append(exc)
        finally:
            shoal.shutdown()
            done.set()

    thread = threading.Thread(target=driver, name="dashboard-test-driver")
    thread.start()
    try:
        page.locator(f'{card} .shoal-link[data-view="timeline"]').click()
        page.wait_for_selector('.jp-MainAreaWidget.shoal-tab iframe', timeout=30_000)
        frame = None
        deadline = time.monotonic() + 30
        while frame is None:
            frame = frame_of(page, f"/shoal/cluster/{started['id']}/timeline")
            assert time.monotonic() < deadline, [f.url for f in page.frames]
            page.wait_for_timeout(100)
        frame.wait_for_selector(".shoal-timeline[data-runs]", timeout=30_000)
        mid = None
        deadline = time.monotonic() + 60
        while not done.is_set() and time.monotonic() < deadline:
            d = frame.evaluate("() => ({...document.querySelector('.shoal-timeline').dataset})")
            if int(d.get("running", 0)) > 0 and int(d.get("runs", 0)) > 10:
                mid = d
                break
            page.wait_for_timeout(100)
        assert mid, "the timeline never showed tasks running"
        assert int(mid["lanes"]) == 3, mid
        page.screenshot(path=os.path.join(out, "dashboard-timeline-live.png"))
    finally:
        thread.join(120)
    assert not errors, errors
    final = None
    deadline = time.monotonic() + 30
    while True:
        final = frame.evaluate("() => ({...document.querySelector('.shoal-timeline').dataset})")
        if final.get("finished") == "90" and final.get("running") == "0":
            break
        assert time.monotonic() < deadline, final
        page.wait_for_timeout(100)
    assert final["failed"] == "0", final

    # the other full-page views of that cluster, through the page's own links
    for view, ready in (
            ("tasks", "() => document.querySelector('.shoal-tasks')?.dataset.tasks === '90' && "
                      "document.querySelectorAll('.shoal-task-row[data-status=finished]').length"
                      " === 90"),
            ("cluster", "() => document.querySelector('.shoal-cluster')?.dataset.engines === '3'"),
            ("objects", "() => !!document.querySelector('.shoal-objects .shoal-table')"),
            ("actors", "() => document.querySelector('.shoal-actors')?.dataset.actors === '0'"),
            ("logs", "() => (document.querySelector('.shoal-log')?.textContent || '')"
                     ".includes('scheduler')")):
        with frame.expect_navigation():
            frame.click(f'.shoal-nav a[data-view="{view}"]')
        deadline = time.monotonic() + 30
        while not frame.evaluate(ready):
            assert time.monotonic() < deadline, (view, frame.url, frame.content()[:3000])
            page.wait_for_timeout(100)
        assert frame.evaluate("() => document.body.dataset.state") == "live", view
        if view in ("tasks", "logs"):
            page.screenshot(path=os.path.join(out, f"dashboard-{view}.png"))
    lab.poll(page, "(t) => [...document.querySelectorAll('.lm-TabBar-tabLabel')]"
                   ".some(e => e.innerText === t)", 10, "the tab titled after its page",
             arg=f"shoal logs · {started['id']}")

    # the launcher card opens the index page in a tab
    page.evaluate("() => window.jupyterapp.commands.execute('launcher:create')")
    cards = lab.poll(page, JS_CARDS, 30, "the launcher")
    assert {"label": "shoal dashboard", "category": "Other"} in cards, cards
    page.screenshot(path=os.path.join(out, "dashboard-launcher.png"))
    page.locator(".jp-Launcher:not(.lm-mod-hidden) .jp-LauncherCard",
                 has_text="shoal dashboard").first.click()
    deadline = time.monotonic() + 30
    while True:
        index = next((f for f in page.frames if f.url.rstrip("/").endswith("/shoal")), None)
        if index is not None and index.evaluate(
                "() => document.querySelectorAll('.shoal-cluster-card').length") == 2:
            break
        assert time.monotonic() < deadline, [f.url for f in page.frames]
        page.wait_for_timeout(100)
    page.screenshot(path=os.path.join(out, "dashboard-index.png"))

    # the sidebar stops the started cluster (two clicks); the kernel's stays
    stop = page.locator(f'{card} [data-act="stop"]')
    stop.click()
    stop.click()
    try:
        side = lab.poll(page, f"() => {{ const s = ({JS_SIDEBAR})(); return s && s.count === 1 "
                              f"&& s.cards[0].id !== '{started['id']}' ? s : null; }}", 60,
                        "the stopped cluster gone")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nsidebar: {page.evaluate(JS_SIDEBAR)}\nAPI: "
                             f"{lab.api('GET', '/shoal/api/clusters')}") from None
    assert [c.cluster_id for c in clusters.visible_clusters()] == [mine["id"]]
    page.evaluate("() => window.jupyterapp.shell.activateById("
                  "window.jupyterapp.shell.widgets('main').next().value.id)")
    lab.poll(page, f"() => {{ const s = ({JS_SIDEBAR})(); return s && s.cards[0].mine; }}", 20,
             "the notebook's cluster marked as the notebook's")
    page.screenshot(path=os.path.join(out, "dashboard-after-stop.png"))
    errors = [m for m in lab.console if m[0] in ("error", "pageerror") and "shoal" in m[1]]
    assert not errors, errors
