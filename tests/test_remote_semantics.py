"""Level 3: a `%%remote` cell behaves like the same cell run locally.

Property (hypothesis): for generated cells over picklable values
(tests/cellgen.py), running a cell locally and with `%%remote` (and
`%%remote --on`) from the same notebook namespace leaves the same namespace
and prints the same output and result.  Through a real shoal kernel, on each
backend (tests/remote_kernels.py)."""
import pytest
from hypothesis import HealthCheck, given, settings

from cellgen import cells
from remote_kernels import BACKENDS, remote_kernel

SETUP = """
import types as _types
_baseline = set(globals()) | {"_baseline", "_reset", "_dump", "_types"}
def _reset(values):
    for name in [n for n in globals() if not n.startswith("_") and n not in _baseline]:
        del globals()[name]
    globals().update(values)
def _dump():
    out = {}
    for name, value in list(globals().items()):
        if name.startswith("_") or name in _baseline:
            continue
        if isinstance(value, _types.ModuleType):
            value = "module " + value.__name__
        elif isinstance(value, type):
            value = "class " + value.__name__
        elif callable(value):
            value = "callable " + getattr(value, "__name__", "?")
        out[name] = repr(value)
    return sorted(out.items())
"""


@pytest.fixture(scope="module", params=BACKENDS)
def k(request):
    with remote_kernel(request, SETUP) as session:
        yield session


def run_cell(k, initial: dict, source: str) -> tuple:
    assert k.execute(f"_reset({initial!r})").reply["status"] == "ok"
    run = k.execute(source)
    error = run.error and run.error["ename"]
    namespace = k.execute("_dump()")
    assert namespace.reply["status"] == "ok", namespace
    return namespace.result, run.stdout, run.result, error


def same_as_local(k, initial: dict, source: str, line: str = "%%remote") -> None:
    local = run_cell(k, initial, source)
    remote = run_cell(k, initial, f"{line}\n{source}")
    assert remote == local, f"cell:\n{source}\nlocal:  {local}\nremote: {remote}"


@pytest.mark.slow
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(cells())
def test_generated_cells_leave_the_same_namespace_and_output(k, example):
    initial, source = example
    same_as_local(k, initial, source)


@pytest.mark.slow
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(cells())
def test_generated_cells_in_a_namespace_match_too(k, example):
    initial, source = example
    same_as_local(k, initial, source, "%%remote --on semantics")


@pytest.mark.parametrize("source", [
    "counter += 1",
    "try:\n    raise ValueError(1)\nexcept ValueError as counter:\n    pass",
    "try:\n    pass\nexcept ValueError as counter:\n    pass",
    "if counter > 100:\n    del counter",
    "for i in range(2):\n    del counter\n    counter = i",
    "def bump():\n    global counter\n    counter += 1\nbump()",
    "from operator import *\ncounter = add(counter, 1)",
    "max = counter\n[max for max in range(2)]",
    "match {'k': counter}:\n    case {'k': int(got)}:\n        counter = got * 2",
])
def test_cells_that_read_what_they_bind(k, source):
    same_as_local(k, {"counter": 5}, source)


def test_augmented_assignment_in_a_namespace_uses_the_notebook_value(k):
    assert k.execute("_reset({'counter': 1})").reply["status"] == "ok"
    for expected in ("2", "12"):
        assert k.execute("%%remote --on counting\ncounter += 1").reply["status"] == "ok"
        assert k.execute("counter").result == expected
        k.execute("counter += 9")            # changed locally: the namespace must see it


@pytest.mark.parametrize("initial", [{}, {"a": 1}])
def test_a_namespace_gives_back_only_what_the_cell_bound(k, initial):
    """The namespace still holds `a = 0` from an earlier cell; a cell that may bind
    `a` but does not leaves the notebook's `a` as it is (or absent), as locally;
    one that binds it to the very object it held gives it back."""
    assert k.execute("_reset({})").reply["status"] == "ok"
    assert k.execute("%%remote --on stale\na = 0").reply["status"] == "ok"
    same_as_local(k, initial, "if False:\n    a = 1", "%%remote --on stale")
    same_as_local(k, initial, "a = 0", "%%remote --on stale")      # the same object as before


# ---------------------------------------------------------------------- magics in %%remote
def test_a_cell_magic_on_the_first_line_runs_on_the_engine(k, tmp_path):
    assert k.execute("_reset({'a': 20})").reply["status"] == "ok"
    run = k.execute("%%remote\n%%time\nimport os\nx = a + 1\nwhere = os.getpid()\nx")
    assert run.reply["status"] == "ok", run
    assert run.result == "21" and "Wall time" in run.stdout
    assert k.execute("x, where != __import__('os').getpid()").result == "(21, True)"
    timed = k.execute("%%remote\n%%timeit -n 2 -r 1\ny = a * 2")
    assert "per loop" in timed.stdout and k.execute("'y' in globals()").result == "False"
    captured = k.execute("%%remote\n%%capture cap\nprint('hidden')\na")
    assert captured.reply["status"] == "ok" and captured.stdout == "", captured
    assert k.execute("cap.stdout").result == "'hidden\\n'"
    target = tmp_path / "w.txt"
    k.execute(f"%%remote\n%%writefile {target}\nhello")
    assert target.read_text() == "hello\n"


def test_line_magics_and_shell_commands_in_a_remote_cell(k):
    assert k.execute("_reset({'a': 2})").reply["status"] == "ok"
    run = k.execute("%%remote\nb = 1\n%time c = b + a\nhome = %env HOME\n"
                    "listing = !echo from-the-engine\nlisting")
    assert run.reply["status"] == "ok", run
    assert run.result == "['from-the-engine']" and "Wall time" in run.stdout
    assert k.execute("(b, c, isinstance(home, str))").result == "(1, 3, True)"


@pytest.mark.parametrize("cell, named", [
    ("%cluster", "%cluster cannot run on the cluster"),
    ("x = 1\n%history", "%history cannot run on the cluster"),
    ("%%remote --all\nx = 1", "%%remote cannot run on the cluster"),
])
def test_magics_that_cannot_run_remotely_are_named(k, cell, named):
    run = k.execute(f"%%remote\n{cell}")
    assert run.reply["status"] == "error" and f"UsageError: %%remote: error: {named}" in run.stderr
