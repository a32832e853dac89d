"""Ray's getting-started walk-through (examples/ray/getting-started.ipynb), plain
Ray code, runs on shoal with only `import ray` replaced by `import shoal as ray`,
and unchanged on Ray where Ray is installed."""
from __future__ import annotations

import json
import os
import re

import pytest

from shoal.kernel.testing import KernelSession

from ray_env import ray_env, require_ray_python

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "examples", "ray", "getting-started.ipynb")
EXPECTED = ["[0, 1, 4, 9]", "\n10\n", "10000.0", "1000000.0", "[0.1] 1", "[5, 4, 3, 2, 1]",
            "caught ValueError: True", "in the driver: task None actor None",
            "same job: True | same node: True | a task id: True", "stable actor id: True",
            "CPUs: 2.0 | nodes: 1"]


def run(nb, tmp_path, python: str | None = None, env: dict | None = None):
    """Execute the notebook on a fresh kernel: this interpreter's, or `python`'s."""
    session = KernelSession("python3" if python is None else "ray-peers", env=env)
    if python is not None:
        spec = os.path.join(session.kernel_dirs[0], "ray-peers")
        os.makedirs(spec)
        with open(os.path.join(spec, "kernel.json"), "w") as f:
            json.dump({"argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                       "display_name": "Ray (peers venv)", "language": "python"}, f)
    km = session.kernel_manager()
    client = nbclient.NotebookClient(nb, km=km, timeout=120, startup_timeout=60,
                                     resources={"metadata": {"path": str(tmp_path)}})
    # Ray's init() joins a Ray already running on this machine (`ray start`, another
    # test's): "local" makes it start its own, so the test touches no one else's cluster.
    env = session.env if python is None else {**session.env, "RAY_ADDRESS": "local"}
    try:
        client.execute(env=env)
    finally:
        if km.has_kernel:
            km.shutdown_kernel(now=True)
        session.shutdown()
    return "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                   for out in cell.outputs)


def test_the_notebook_is_plain_ray_code():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert re.findall(r"^import (\w+)", source, re.M) == ["ray", "numpy", "time"]
    assert "shoal" not in source


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_runs_on_shoal_with_only_the_import_changed(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = re.sub(r"^import ray$", "import shoal as ray", cell.source, flags=re.M)
    text = run(nb, tmp_path)
    for expected in EXPECTED:
        assert expected in text, f"{expected!r} not in the notebook's output:\n{text}"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_runs_unchanged_on_ray(tmp_path):
    python = require_ray_python()
    text = run(nbformat.read(NOTEBOOK, as_version=4), tmp_path, python)
    for expected in EXPECTED:
        assert expected in text, f"{expected!r} not in the notebook's output on Ray:\n{text}"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_runs_on_shoals_ray_backend_with_only_the_import_changed(tmp_path):
    """`import shoal as ray` code on a real Ray: SHOAL_ADDRESS=ray:local makes the
    notebook's own `ray.init(num_cpus=2)` start a local Ray (shoal.backends.ray)."""
    python = require_ray_python("import ray, ipykernel, shoal")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = re.sub(r"^import ray$", "import shoal as ray", cell.source, flags=re.M)
    nb.cells.append(nbformat.v4.new_code_cell(
        "import sys\nprint('backend:', type(ray.get(ray.put(1)) and ray.put(1)).__module__)"))
    text = run(nb, tmp_path, python, env=ray_env(SHOAL_ADDRESS="ray:local"))
    for expected in EXPECTED + ["backend: ray"]:
        assert expected in text, f"{expected!r} not in the notebook's output:\n{text}"
