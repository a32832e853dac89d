"""Level 5 for the widgets on the Ray backend: JupyterLab in headless Chromium runs
tests/browser/ray_widgets.ipynb in a kernel on a two-node Ray cluster the test owns.

Its own module: Playwright's sync API runs one instance per thread, and the native browser
tests' module-scoped Lab holds that thread's instance until its module ends.
"""
import os
import re

import pytest

from browser import lab as harness
from test_widgets_browser import JS_WIDGETS, shots_dir

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
RAY_NOTEBOOK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "browser",
                            "ray_widgets.ipynb")


def test_widgets_live_in_jupyterlab_on_a_ray_cluster(tmp_path):
    """The same widgets in a kernel on the Ray backend (tests/ray_env.py's interpreter)
    connected to a two-node Ray cluster this test owns."""
    from ray_env import ray_env, require_ray_python, two_node_cluster
    problems = harness.missing()
    if problems:
        if os.environ.get("SHOAL_REQUIRE_BROWSER_TESTS"):
            pytest.fail("; ".join(problems), pytrace=False)
        pytest.skip("browser tests need Chromium, playwright and jupyterlab: " + "; ".join(problems))
    python = require_ray_python("import ray, ipykernel, anywidget, ray.cluster_utils")
    with two_node_cluster(python) as address, \
            harness.Lab(tmp_path / "lab", kernel_python=python,
                        kernel_env={**{k: v for k, v in ray_env().items()
                                       if k.startswith("RAY_")},
                                    "SHOAL_ADDRESS": f"ray:{address}"}) as lab:
        page = lab.open(RAY_NOTEBOOK)
        lab.run_all(page, timeout=180)
        w = page.evaluate(JS_WIDGETS)
        assert not w["errors"], w["errors"]
        assert "ran 17 tasks" in w["text"]

        # Cluster widget: Ray's two nodes, and no + / - buttons (no autoscaler runs).
        lab.poll(page, "() => document.querySelector('.shoal-cluster')?.dataset.hosts === '2'",
                 30, "the cluster widget to show both nodes")
        assert page.locator(".shoal-cluster button[data-act=add]").count() == 0
        assert "Ray" in page.locator(".shoal-cluster").inner_text()

        # The automatic bar of the 17-ref wait ended at its total; the background bar too.
        lab.poll(page, "() => [...document.querySelectorAll('.shoal-progress')].some(p => "
                       "p.dataset.status === 'done' && p.querySelector('.shoal-progress-title')"
                       ".textContent === 'background fit')", 60, "the background bar to finish")
        w = page.evaluate(JS_WIDGETS)
        auto = next(p for p in w["progress"] if p["title"] == "shoal.wait: 17 refs")
        assert (auto["done"], auto["failed"], auto["total"]) == ("16", "1", "17")
        bg = next(p for p in w["progress"] if p["title"] == "background fit")
        assert (bg["done"], bg["total"]) == ("6", "6")

        # Timeline: a bar per task run (16 + 6 finished, 1 failed) in the workers' lanes.
        lab.poll(page, "() => { const d = document.querySelector('.shoal-timeline')?.dataset; "
                       "return d && d.finished === '22' && d.failed === '1' && d.running === '0'; }",
                 30, "the timeline to count 22 finished runs and 1 failed")
        assert int(page.evaluate(JS_WIDGETS)["timeline"]["lanes"]) >= 2

        # Object store: the puts are in the table.
        puts = re.search(r"PUT (.*)", w["text"]).group(1).split()
        lab.poll(page, "(ids) => { const rows = new Set([...document.querySelectorAll("
                       "'.shoal-object-row')].map(r => r.dataset.objectId));"
                       " return ids.every(i => rows.has(i)); }", 30,
                 "the puts in the object table", arg=puts)
        out = shots_dir(tmp_path)
        lab.screenshot(page, os.path.join(out, "ray-widgets.png"))
        bad = [m for kind, m in lab.console if kind == "pageerror" or
               (kind == "error" and re.search(r"shoal|anywidget", m, re.I))]
        assert not bad, bad
