"""Level 3: output and display of any task land under the cell that caused
it — nested tasks, actor calls, tasks an actor submits — in the shoal kernel
on each backend (tests/remote_kernels.py) and with `%load_ext shoal` in a
plain IPython kernel."""
import pytest

from shoal.kernel.testing import KernelSession

from conftest import ok
from remote_kernels import BACKENDS, remote_kernel

DEFINE = """
import shoal
from IPython.display import display, HTML

@shoal.remote
def leaf(i):
    print("leaf", i)
    display(HTML(f"<b>leaf {i}</b>"))
    return i

@shoal.remote
def mid(n):
    print("mid")
    return sum(shoal.get([leaf.remote(i) for i in range(n)]))

@shoal.remote
class Boss:
    def __init__(self):
        print("hired")

    def delegate(self):
        print("boss")
        return shoal.get(mid.remote(2))
"""


def start(kernel: str, *setup: str):
    session = KernelSession(kernel, extra_arguments=["--ShoalKernel.num_cpus=2"]
                            if kernel == "shoal" else [])
    session.start()
    for code in setup:
        run = session.execute(code, timeout=60)
        assert run.reply["status"] == "ok", run
    return session


@pytest.fixture(scope="module", params=BACKENDS)
def k(request):
    with remote_kernel(request, DEFINE) as session:
        yield session


def lines(run) -> list:
    return sorted(run.stdout.splitlines())


def test_nested_task_output_lands_under_the_cell_with_ray_prefixes(k):
    run = ok(k.execute("shoal.get(mid.remote(2))"))
    assert run.result == "1"
    assert sorted(ln.split(") ", 1)[1] for ln in lines(run)) == ["leaf 0", "leaf 1", "mid"]
    assert all(ln.startswith(("(mid pid=", "(leaf pid=")) for ln in lines(run))
    htmls = [d["data"]["text/html"] for d in run.displays]
    assert sorted(htmls) == ["<b>leaf 0</b>", "<b>leaf 1</b>"]
    leaf0 = [m for m in run.messages if m["msg_type"] in ("stream", "display_data")
             and "leaf 0" in str(m["content"])]
    assert [m["msg_type"] for m in leaf0] == ["stream", "display_data"]   # in order per task


def test_an_actor_and_the_tasks_it_submits_print_under_the_calling_cell(k):
    made = ok(k.execute("boss = Boss.remote()\nshoal.get(boss.delegate.remote()) and None"))
    assert sorted(ln.split(") ", 1)[1] for ln in lines(made) if ln.startswith("(Boss")) == \
        ["boss", "hired"]                        # its constructor's too, under the creating cell
    run = ok(k.execute("shoal.get(boss.delegate.remote())"))
    assert run.result == "1"
    texts = [ln.split(") ", 1)[1] for ln in lines(run)]
    assert sorted(texts) == ["boss", "leaf 0", "leaf 1", "mid"]
    assert len(run.displays) == 2


def test_remote_functions_called_in_a_remote_cell_print_under_it(k):
    run = ok(k.execute("%%remote\nprint('cell')\ntotal = shoal.get(mid.remote(1))\ntotal"))
    assert run.result == "0"
    assert "cell" in run.stdout.splitlines()                     # the cell's own: no prefix
    assert any(ln.startswith("(leaf pid=") and ln.endswith("leaf 0") for ln in lines(run))
    assert [d["data"]["text/html"] for d in run.displays] == ["<b>leaf 0</b>"]


def test_output_lands_under_its_cell_after_other_cells_ran(k):
    first = ok(k.execute("import time\n@shoal.remote\ndef slow():\n    time.sleep(0.5)\n"
                         "    return leaf.remote(7)\ninner = slow.remote()"))
    second = ok(k.execute("x = 1"))
    ok(k.execute("shoal.get(shoal.get(inner))", timeout=30))
    k.pump_until(lambda: "leaf 7" in first.stdout, 20, "the nested print")
    assert "leaf" not in second.stdout


def test_rich_display_and_figures_from_a_plain_task(k):
    if ok(k.execute("%%remote\nimport importlib.util\n"
                    "importlib.util.find_spec('matplotlib')")).result is None:
        pytest.skip("matplotlib is not installed in this kernel's Python")
    run = ok(k.execute("@shoal.remote\ndef plot():\n    import matplotlib.pyplot as plt\n"
                       "    plt.plot([1, 3, 2])\n    display({'a': 1})\n    return 'drawn'\n"
                       "shoal.get(plot.remote())", timeout=60))
    assert run.result == "'drawn'"
    kinds = [sorted(d["data"]) for d in run.displays]
    assert ["text/plain"] in kinds and any("image/png" in kind for kind in kinds)


@pytest.mark.slow
def test_load_ext_in_a_plain_kernel_routes_nested_output_and_displays():
    session = start("python3", "%load_ext shoal", "import shoal\nshoal.init(num_cpus=2)",
                    DEFINE)
    try:
        run = ok(session.execute("shoal.get(mid.remote(2))", timeout=60))
        assert run.result == "1"
        assert sorted(ln.split(") ", 1)[1] for ln in lines(run)) == ["leaf 0", "leaf 1", "mid"]
        assert sorted(d["data"]["text/html"] for d in run.displays) == \
            ["<b>leaf 0</b>", "<b>leaf 1</b>"]
        ok(session.execute("shoal.shutdown()"))
    finally:
        session.shutdown()
