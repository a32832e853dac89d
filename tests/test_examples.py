"""Level 4: every notebook in examples/ runs top to bottom with nbclient on the
shoal kernel, shrunk with SHOAL_EXAMPLE_SCALE, shows what it promises and
leaves no cluster behind; and the docs that point at the examples and the
magics stay true to them."""
import glob
import json
import os
import re
import subprocess
import sys

import pytest

from shoal.kernel.testing import KernelSession

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
NOTEBOOKS = sorted(glob.glob(os.path.join(EXAMPLES, "*.ipynb")))
SCALE = "0.1"                      # what the notebooks multiply their sizes by
WIDGET = "application/vnd.jupyter.widget-view+json"

# What each notebook's outputs must show (beyond running without an error).
EXPECTED = {
    "01-quickstart.ipynb": ["squared 10 numbers", "385", "ready,", "caught: ValueError",
                            "pi_estimate is ObjectRef"],
    "02-hyperparameter-search.ipynb": ["12 models in", "speed-up",
                                       "same result as the local run: True"],
    "03-actors.ipynb": ["distance to the true weights", "'gradients':", "updates: loss"],
    "04-big-data.ipynb": ["writeable: False", "assignment destination is read-only",
                          "Arrow allocated 0 bytes", "'sensor': 0"],
    "05-multi-host.ipynb": ["Started a shoal cluster", "Joined the shoal cluster",
                            "free CPU 1/1, second_host 1/1", "(connected): 2 host(s)",
                            "the second_host task ran on", "Stopped the shoal cluster at"],
}
# Cells whose output must be a live widget: (notebook, a line of the cell's source).
WIDGET_CELLS = {
    "01-quickstart.ipynb": ["ctx", "shoal.progress(refs)", "shoal.timeline()", "shoal.objects()"],
    "02-hyperparameter-search.ipynb": ["shoal.timeline()"],
    "03-actors.ipynb": ["shoal.timeline()"],
    "04-big-data.ipynb": ["shoal.objects()"],
    "05-multi-host.ipynb": ["shoal.timeline()"],
}


@pytest.fixture(scope="module")
def session():
    """Kernelspecs and Jupyter dirs in a temp dir of their own; one kernel per notebook."""
    s = KernelSession("shoal", env={"SHOAL_EXAMPLE_SCALE": SCALE})
    yield s
    s.shutdown()


def run_notebook(session: KernelSession, path: str, cwd: str):
    nb = nbformat.read(path, as_version=4)
    km = session.kernel_manager()              # ours, so that we shut it down ourselves
    client = nbclient.NotebookClient(
        nb, km=km, timeout=60, startup_timeout=60, extra_arguments=["--ShoalKernel.num_cpus=2"],
        resources={"metadata": {"path": cwd}})
    try:
        client.execute(env=session.env)
    finally:
        if km.has_kernel:
            km.shutdown_kernel()
    return nb


def clusters_left(session: KernelSession) -> list:
    """Clusters started with `shoal start` under the session's runtime dir, stopped here."""
    runtime = os.path.join(session.tmp, "runtime")
    left = []
    for path in glob.glob(os.path.join(runtime, "shoal-cluster-*.json")):
        with open(path) as f:
            address = json.load(f)["address"]
        left.append(address)
        subprocess.run([sys.executable, "-m", "shoal", "stop", "--address", address],
                       env=session.env, capture_output=True, timeout=30)
    return left


def code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def output_text(cell) -> str:
    parts = []
    for out in cell.outputs:
        if out.output_type == "stream":
            parts.append(out.text)
        elif "data" in out:
            parts.append(out["data"].get("text/plain", ""))
    return "".join(parts)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
@pytest.mark.timeout(120)
def test_example_runs_on_the_shoal_kernel(session, path, tmp_path):
    """2-6 s each at SCALE (kernel start included); mark one slow if it passes ~10 s."""
    name = os.path.basename(path)
    try:
        nb = run_notebook(session, path, str(tmp_path))
    except nbclient.exceptions.CellExecutionError as exc:
        pytest.fail(f"{name} failed:\n{exc}")
    finally:
        left = clusters_left(session)
    assert not left, f"{name} left clusters running: {left}"
    cells = code_cells(nb)
    assert all(c.execution_count for c in cells), f"{name}: not every cell ran"
    text = "\n".join(output_text(c) for c in cells)
    for expected in EXPECTED.get(name, []):
        assert expected in text, f"{name}: no {expected!r} in the outputs:\n{text}"
    for line in WIDGET_CELLS.get(name, []):
        found = [c for c in cells if line in c.source.splitlines()]
        assert len(found) == 1, f"{name}: expected one cell with the line {line!r}"
        kinds = {k for o in found[0].outputs for k in o.get("data", {})}
        assert WIDGET in kinds and "text/html" in kinds, \
            f"{name}: the cell {line!r} showed no widget (with its HTML snapshot): {kinds}"


def test_every_example_is_covered_here():
    names = {os.path.basename(p) for p in NOTEBOOKS}
    assert set(EXPECTED) <= names, set(EXPECTED) - names
    assert {"01-quickstart.ipynb", "remote_cells.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_example_is_clean_and_asks_for_the_shoal_kernel(path):
    """Committed without outputs, on the shoal kernel, links that resolve."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "shoal"
    assert nb.metadata["kernelspec"]["display_name"] == "Python 3 (shoal)"
    for cell in code_cells(nb):
        assert not cell.outputs and not cell.execution_count, \
            f"{os.path.basename(path)}: clear the outputs before committing"
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for target in re.findall(r"\]\(([^)#:]+\.ipynb)\)", cell.source):
                assert os.path.exists(os.path.join(EXAMPLES, target)), target


def test_docs_index_links_resolve():
    docs = os.path.join(ROOT, "docs")
    with open(os.path.join(docs, "README.md")) as f:
        index = f.read()
    targets = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", index)
    assert "user-guide.md" in targets and "magics.md" in targets
    for target in targets:
        assert os.path.exists(os.path.normpath(os.path.join(docs, target))), target


def test_magics_reference_names_every_option():
    """docs/magics.md documents every option the magics' parsers accept."""
    from shoal.magics.magics import _CLUSTER_PARSER
    from shoal.magics.options import CELL_PARSER
    with open(os.path.join(ROOT, "docs", "magics.md")) as f:
        doc = f.read()
    options = {s for a in CELL_PARSER._actions for s in a.option_strings
               if s.startswith("--") and a.help != "==SUPPRESS=="}
    [commands] = [a.choices for a in _CLUSTER_PARSER._actions if isinstance(a.choices, dict)]
    for name, sub in commands.items():
        assert f"%cluster {name}" in doc, name
        options |= {s for a in sub._actions for s in a.option_strings}
    missing = sorted(o for o in options if f"`{o}" not in doc and f" {o}" not in doc)
    assert not missing, f"docs/magics.md does not mention {missing}"
    for magic in ("%%remote", "%remote", "%autoremote", "%cluster"):
        assert f"`{magic}" in doc, magic
