"""The live widgets' models on both backends: one scenario (widgets_scenario.py),
run on shoal's own scheduler and on a real two-node Ray cluster, must show the
same things: the progress bar's counts, the timeline's runs (names, statuses,
each in its worker's lane under its host), the cluster's hosts and CPUs, the
object store's rows and sizes, and the Chrome-trace and Parquet exports.

Each runs in a fresh interpreter (the Ray one from tests/ray_env.py for Ray:
shoal does not depend on Ray), which owns its cluster and stops it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ray_env import ray_env, require_ray_python

SCENARIO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "widgets_scenario.py")
ROOT = os.path.dirname(os.path.dirname(SCENARIO))
RAY_CHECK = "import ray, anywidget, pyarrow, ray.cluster_utils"

BACKENDS = [
    pytest.param("shoal", id="shoal", marks=pytest.mark.timeout(120)),
    pytest.param("ray", id="ray", marks=[pytest.mark.slow, pytest.mark.timeout(300)]),
]
NODES = {"shoal": 1, "ray": 2}          # the scenario's cluster: 2 CPUs on 1 host, or 2 nodes


def run_scenario(kind: str) -> dict:
    if kind == "ray":
        python, env = require_ray_python(RAY_CHECK), ray_env()
    else:
        python = sys.executable
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
        env.pop("SHOAL_ADDRESS", None)
    out = subprocess.run([python, SCENARIO, kind], capture_output=True, text=True, env=env,
                         timeout=240)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module", params=BACKENDS)
def shown(request):
    return request.param, run_scenario(request.param)


def test_progress_counts_every_ref_and_ends_failed(shown):
    kind, out = shown
    assert out["backend"] == kind
    assert out["bar_total"] == 21 and out["raised"] == "ValueError"
    assert out["bar"] == [20, 1, "failed"]


def test_the_timeline_has_a_run_per_task_in_its_workers_lane(shown):
    _, out = shown
    assert out["runs"] == 21
    assert out["run_names"] == ["fails", "square"]
    assert out["run_statuses"] == 1                  # one failed run
    assert out["runs_in_lanes"] and out["ordered"] and out["run_hosts_known"]


def test_the_cluster_widget_shows_the_hosts_and_their_cpus(shown):
    kind, out = shown
    c = out["cluster"]
    assert c["hosts"] == NODES[kind] and c["cpus"] == 2.0
    assert c["engines"] and c["store_limit"]
    assert c["kind"] == ("embedded local cluster" if kind == "shoal" else c["kind"])
    if kind == "ray":
        assert c["kind"].startswith("Ray ") and c["kind"].endswith(" cluster")
        assert out["scalable"] is False            # no autoscaler: the buttons are hidden
    else:
        assert out["scalable"] is True


def test_the_object_store_lists_a_put_with_its_size(shown):
    kind, out = shown
    assert out["object"] == {"size_at_least_big": True, "refs": True, "hosts": True}
    assert out["store_hosts"] == NODES[kind] and out["store_used"]


def test_chrome_trace_and_parquet_export_the_runs(shown):
    _, out = shown
    assert out["trace"] == {"events": 21, "names": ["fails", "square"]}
    assert out["parquet"] == 21


def test_no_widget_thread_outlives_the_cluster(shown):
    _, out = shown
    assert out["threads_left"] == []
