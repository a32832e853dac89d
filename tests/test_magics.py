"""Level 1: the Jupyter layer's pieces, in-process and without a cluster —
namespace analysis, option parsing, output routing, remote traceback
rendering, what a cell hands back, %autoremote's transformer."""
import linecache
import types

import pytest
from IPython.core.error import UsageError
from IPython.core.ultratb import AutoFormattedTB, SyntaxTB

from shoal.exceptions import TaskError
from shoal.kernel.testing import strip_ansi
from shoal.magics import errors
from shoal.magics.analysis import analyze
from shoal.magics.autoremote import AutoRemote
from shoal.magics.options import parse_cell_line, split_line
from shoal.magics.output import OutputRouter
from shoal.magics.runner import Shown, Unavailable, _Carry, _carry
from shoal.protocol.serialization import deserialize, dumps


# ---------------------------------------------------------------------- analysis
def test_analysis_reads_writes_and_result():
    cell = analyze(
        "import numpy as np, os.path\nfrom m import a as b\nx = y + 1\n"
        "def f(q):\n    global g\n    g = q + z\n    return np.sum(q) + w\n"
        "class K:\n    attr = v\n    def m(self):\n        return u\n"
        "l = [i * k for i in r]\nlam = lambda t: t + s\nfor it in range(3):\n    pass\n"
        "with open(p) as fh:\n    pass\n(walrus := 5)\nx + 1\n")
    assert {"y", "z", "w", "v", "u", "k", "r", "s", "p", "np", "x"} <= cell.reads
    assert not {"q", "i", "t", "self", "attr"} & cell.reads          # locals of inner scopes
    assert cell.writes == ("np", "os", "b", "x", "f", "K", "l", "lam", "it", "fh", "walrus", "g")
    assert cell.imports == {"np", "os", "b"}
    assert cell.has_result and not cell.quiet


def test_analysis_deletes_semicolon_and_no_result():
    cell = analyze("del old\nnew = 1\nnew;  # quiet\n")
    assert cell.deletes == {"old"} and "old" in cell.reads and "old" not in cell.writes
    assert cell.has_result and cell.quiet
    assert not analyze("x = 1").has_result
    assert not analyze("").has_result
    with pytest.raises(SyntaxError):
        analyze("x = = 1")


# ---------------------------------------------------------------------- options
def test_cell_options():
    opts = parse_cell_line("--bg --num-cpus 2 --num-gpus 0.5 --resources '{\"mem\": 4}' "
                           "--retries 2 --timeout 1.5 --push a,b --pull x --name train")
    assert opts.bg and opts.num_cpus == 2 and opts.num_gpus == 0.5
    assert opts.resources == {"mem": 4} and opts.retries == 2 and opts.timeout == 1.5
    assert opts.push == ("a", "b") and opts.pull == ("x",) and opts.name == "train"
    assert parse_cell_line("").bg is False
    assert parse_cell_line("--on ns").on == "ns"


@pytest.mark.parametrize("line, message", [
    ("--frob", "unrecognized arguments: --frob"),
    ("--timeout -1", "must not be negative"),
    ("--push 1x", "not a Python name"),
    ("--resources [1]", "must be a JSON object"),
    ("--all --on n", "--all and --on cannot be combined"),
    ("--on n --retries 1", "--retries does not apply to --on"),
    ("--num-cpus", "expected one argument"),
])
def test_bad_cell_options_raise_usage_errors(line, message):
    with pytest.raises(UsageError) as info:
        parse_cell_line(line)
    assert str(info.value).startswith("usage: %%remote") and message in str(info.value)


def test_line_options_leave_the_statement_alone():
    opts, stmt = split_line("--on ns  x = f('a  b', \"c\")  # note")
    assert opts.on == "ns" and stmt == "x = f('a  b', \"c\")  # note"
    opts, stmt = split_line("--timeout=3 --bg y = 1")
    assert opts.timeout == 3 and opts.bg and stmt == "y = 1"
    assert split_line("print('it''s')")[1] == "print('it''s')"
    assert split_line("--all")[1] == ""


# ---------------------------------------------------------------------- output
class FakeSink:
    def __init__(self):
        self.events = []

    def current_parent(self):
        return {"header": {"msg_id": "now"}}

    def stream(self, parent, name, text):
        self.events.append(("stream", parent, name, text))

    def display(self, parent, data, metadata, transient=None, update=False):
        self.events.append(("display", parent, data, metadata, transient, update))

    def clear(self, parent, wait):
        self.events.append(("clear", parent, wait))


def out(text, stream="stdout", task="t1", data=None, origin=None):
    return types.SimpleNamespace(stream=stream, text=text, name="f", pid=7, task_id=task,
                                 data=data, origin=origin)


def test_router_remembers_the_cell_and_labels_lines():
    sink = FakeSink()
    router = OutputRouter(sink)
    plain = router.context()
    with router.labelled(""):
        cell = router.context()
    with router.labelled("[e1] "):
        engine = router.context()
    assert router.context() == plain == ({"header": {"msg_id": "now"}}, None, router.cell)
    router.handle(out("a\nb"), plain)                    # Ray's prefix, line by line
    router.handle(out("c\n"), plain)                     # continues the open line
    router.handle(out("x\n", "stderr", "t2"), cell)      # a %%remote cell: as it is
    router.handle(out("y\nz\n", task="t3"), engine)
    router.handle(out("n\n", task="t4", origin="t2"), cell)   # started by the cell's task
    texts = [(e[2], e[3]) for e in sink.events]
    assert texts == [("stdout", "(f pid=7) a\n(f pid=7) b"), ("stdout", "c\n"),
                     ("stderr", "x\n"), ("stdout", "[e1] y\n[e1] z\n"),
                     ("stdout", "(f pid=7) n\n")]


def test_router_turns_displays_back_into_messages():
    sink = FakeSink()
    router = OutputRouter(sink)
    parent = {"header": {"msg_id": "cell-3"}}
    router.handle(out("", "display", data={"data": {"text/plain": "1"}, "metadata": {"m": 1}}),
                  (parent, ""))
    router.handle(out("", "display", data={"data": {"text/plain": "2"}, "metadata": {
        "shoal.display": {"transient": {"display_id": "d"}, "update": True}}}), (parent, ""))
    router.handle(out("", "display", data={"data": {}, "metadata": {
        "shoal.display": {"clear": True}}}), (parent, ""))
    assert sink.events == [
        ("display", parent, {"text/plain": "1"}, {"m": 1}, None, False),
        ("display", parent, {"text/plain": "2"}, {}, {"display_id": "d"}, True),
        ("clear", parent, True)]


def test_router_attaches_and_detaches():
    client = types.SimpleNamespace(output_context=None, output_handler=None)
    router = OutputRouter(FakeSink())
    router.attach(client)
    assert router.attached(client) and client.output_context == router.context
    router.detach(client)
    assert not router.attached(client) and client.output_context is None


# ---------------------------------------------------------------------- errors
def fake_shell():
    return types.SimpleNamespace(InteractiveTB=AutoFormattedTB(mode="Context", theme_name="nocolor"),
                                 SyntaxTB=SyntaxTB(theme_name="nocolor"))


def test_remote_error_renders_the_cells_lines():
    source = "%%remote\ndef inv(x):\n    return 1 / x\ny = inv(0)\n"
    filename = "<remote-cell-test>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    err = TaskError("cell", [(filename, 4, "<module>", None), (filename, 3, "inv", None)],
                    "ZeroDivisionError: division by zero\n", ZeroDivisionError("division by zero"),
                    "t1", "engine e0").as_instanceof_cause()
    exc = errors.remote_exception(fake_shell(), err, header="[e0] failed")
    assert type(exc) is ZeroDivisionError and exc.__traceback__ is None
    text = strip_ansi("\n".join(exc._render_traceback_()))
    assert text.startswith("[e0] failed")
    assert "----> 4 y = inv(0)" in text and "----> 3     return 1 / x" in text
    assert "in inv" in text and text.rstrip().endswith("ZeroDivisionError: division by zero")


def test_error_without_an_original_class_shows_the_remote_text():
    err = TaskError("cell", [], "WeirdError: cannot ship\n", None, "t1")
    text = strip_ansi("\n".join(errors.remote_exception(fake_shell(), err)._render_traceback_()))
    assert "WeirdError: cannot ship" in text


def test_syntax_and_interrupt_renderings_are_short():
    try:
        compile("\nx = = 1", "<cell>", "exec")
    except SyntaxError as exc:
        shown = errors.syntax_error(fake_shell(), exc)
    assert type(shown).__name__ == "SyntaxError"
    assert "<cell>:2" in strip_ansi("".join(shown._render_traceback_()))
    ki = errors.interrupted(fake_shell(), "cell In[3] was cancelled")
    assert isinstance(ki, KeyboardInterrupt)
    assert strip_ansi("".join(ki._render_traceback_())).strip() == \
        "KeyboardInterrupt: cell In[3] was cancelled"


# ---------------------------------------------------------------------- what comes back
def test_values_that_cannot_travel_come_back_as_markers():
    import threading
    assert _carry(3) == 3                                    # simple values go as they are
    back = deserialize(dumps((_Carry([1, 2]), _Carry(threading.Lock()))))
    assert back[0] == [1, 2]
    assert isinstance(back[1], Unavailable) and back[1].kind == "unserializable"
    assert back[1].type_name == "lock" and "pickle" in back[1].reason
    numpy = pytest.importorskip("numpy")
    arr = deserialize(dumps(_Carry(numpy.arange(100_000))))
    assert arr.sum() == numpy.arange(100_000).sum()
    shown = Shown({"text/plain": "<gen>", "text/html": "<i>gen</i>"}, {})
    assert repr(shown) == "<gen>" and shown._repr_mimebundle_()[0]["text/html"] == "<i>gen</i>"


# ---------------------------------------------------------------------- %autoremote
def test_autoremote_transformer():
    shell = types.SimpleNamespace(input_transformers_cleanup=[])
    auto = AutoRemote(shell)
    auto.enable("--on ns")
    auto.enable("--on ns")
    assert shell.input_transformers_cleanup == [auto] and auto.enabled
    assert auto(["x = 1\n"]) == ["%%remote --on ns --_auto\n", "x = 1\n"]
    for local in (["%autoremote off\n"], ["!ls\n"], ["%%time\n", "x\n"], ["x?\n"], ["\n"]):
        assert auto(local) == local
    assert auto.has_side_effects          # IPython's completeness check skips it
    auto.disable()
    assert shell.input_transformers_cleanup == [] and not auto.enabled
    assert parse_cell_line("--on ns --_auto").auto


@pytest.mark.parametrize("source, reads, writes, deletes", [
    ("counter += 1", {"counter"}, ("counter",), set()),
    ("def f():\n    global g\n    g += 1", {"g"}, ("f", "g"), set()),
    ("try:\n    pass\nexcept E as e:\n    pass", {"E", "e"}, ("e",), {"e"}),
    ("if c:\n    del x", {"c", "x"}, (), {"x"}),
    ("[i for i in r]", {"r"}, (), set()),
    ("match v:\n    case [a, *rest]:\n        pass\n    case {**kw}:\n        pass",
     {"v"}, ("a", "rest", "kw"), set()),
    ("x: int = y", {"int", "y"}, ("x",), set()),
])
def test_analysis_of_names_symtable_does_not_tell(source, reads, writes, deletes):
    cell = analyze(source)
    assert cell.reads == reads and cell.writes == writes and cell.deletes == deletes


def test_analysis_notes_star_imports():
    assert analyze("from os.path import *\nfrom math import pi").star_imports == ("os.path",)


def test_router_cancels_only_the_interrupted_cells_plain_tasks():
    sent, contexts = [], {}

    class FakeClient:
        def pending_contexts(self):
            return list(contexts.items())

        def send(self, msg):
            sent.append(msg)

    router = OutputRouter(FakeSink())
    router.new_cell()
    earlier = router.context()
    router.new_cell()
    mine = router.context()
    with router.labelled(""):
        remote_cell = router.context()        # %%remote cancels its own, with a grace
    contexts.update(t1=earlier, t2=mine, t3=remote_cell, t4=None)
    assert router.cancel_cell(FakeClient()) == 1
    assert [(m.object_id, m.force, m.recursive) for m in sent] == [("t2/0", False, True)]
