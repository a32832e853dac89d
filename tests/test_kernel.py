"""Level 3: the `shoal` kernel driven through jupyter_client, cells with
magics executed, iopub read.  One kernel per backend (tests/remote_kernels.py:
shoal's own 2-engine cluster, a local Ray, a two-node Ray cluster) serves the
whole module, and every test runs on each; tests that break things have their
own in test_kernel_lifecycle.py."""
import time

import pytest

from conftest import ok
from remote_kernels import BACKENDS, on_ray, remote_kernel


@pytest.fixture(scope="module", params=BACKENDS)
def k(request):
    with remote_kernel(request) as session:
        yield session


def test_namespace_round_trip(k):
    ok(k.execute("import os\na = 20\ndef double(x):\n    return 2 * x"))
    run = ok(k.execute("%%remote\nimport math, os\nb = double(a) + 1\nroot = math.sqrt(b * b)\n"
                       "where = os.getpid()\nb + 1"))
    assert run.result == "42"
    check = ok(k.execute("print(b, root, math.pi > 3, where != os.getpid())"))
    assert check.stdout == "41 41.0 True True\n"


def test_refs_travel_by_reference_and_large_values_by_the_store(k):
    ok(k.execute("import shoal, numpy\nref = shoal.put(7)\nbig = numpy.ones(1_000_000)"))
    run = ok(k.execute("%%remote\nkind = type(ref).__name__\nvalue = shoal.get(ref)\n"
                       "total = big.sum()\n(kind, value, total)"))
    assert run.result == "('ObjectRef', 7, np.float64(1000000.0))"


def test_top_level_await_and_builtin_display(k):
    run = ok(k.execute("%%remote\nimport asyncio\nawait asyncio.sleep(0.01)\n"
                       "display('shown')\nawait asyncio.sleep(0, result=3)"))
    assert run.result == "3" and run.displays[0]["data"]["text/plain"] == "'shown'"


def test_resources_retries_and_name(k, tmp_path):
    flag = str(tmp_path / "failed-once")
    ok(k.execute(f"flag = {flag!r}"))
    cpus = k.worker_cpus                  # all of one engine's (node's) CPUs
    run = ok(k.execute(f"%%remote --retries 1 --num-cpus {cpus}\nimport os\n"
                       "if not os.path.exists(flag):\n    open(flag, 'w').close()\n"
                       "    raise RuntimeError('flaky')\n'second try'", timeout=60))
    assert run.result == "'second try'"
    once = k.execute(f"%%remote --num-cpus {cpus}\nraise RuntimeError('no retries')")
    assert once.error["ename"] == "RuntimeError"
    bg = ok(k.execute("%%remote --bg --name training\nimport time\ntime.sleep(0.2)"))
    assert "training" in bg.displays[0]["data"]["text/plain"]
    k.pump_until(lambda: any("done" in d["data"]["text/plain"] for d in bg.displays), 20)


def test_a_value_that_cannot_be_sent_is_left_out_with_a_warning(k):
    ok(k.execute("import threading\nhandle = threading.Lock()"))
    run = ok(k.execute("%%remote\ntry:\n    handle\nexcept NameError:\n    missing = True"))
    assert "not sending 'handle' (lock)" in run.stderr
    assert ok(k.execute("missing")).result == "True"


def test_last_expression_semicolon_and_none_show_nothing(k):
    assert ok(k.execute("%%remote\nv = 5\nv;")).result is None
    assert ok(k.execute("%%remote\nprint('x')")).result is None
    assert ok(k.execute("%%remote\nv")).result == "5"
    gen = ok(k.execute("%%remote\n(i for i in range(3))"))     # cannot travel: its repr does
    assert gen.result.startswith("<generator object <genexpr>")


def test_line_magic_assigns_and_returns(k):
    ok(k.execute("base = 10"))
    run = ok(k.execute("%remote total = base * 3\ny = %remote total + 1\nprint(total, y)"))
    assert run.stdout == "30 31\n"


@pytest.mark.slow
def test_remote_print_streams_live_into_its_cell(k):
    run = k.submit("%%remote\nimport time\nfor i in range(3):\n    print('tick', i)\n"
                   "    time.sleep(1)")
    k.wait(run, timeout=30)
    streams = run.of_type("stream")
    assert streams[0]["content"]["text"].startswith("tick 0")
    assert run.stdout == "tick 0\ntick 1\ntick 2\n"
    # the first line came while the cell was still running, not with its end
    assert streams[0]["received"] < run.idle_at - 1.0, (streams[0]["received"], run.idle_at)
    assert all(m["parent_header"]["msg_id"] == run.msg_id for m in streams)


def test_stderr_and_rich_display_land_in_the_cell(k):
    run = ok(k.execute("%%remote\nimport sys\nfrom IPython.display import display, HTML\n"
                       "print('out')\nprint('err', file=sys.stderr)\n"
                       "display(HTML('<b>bold</b>'))\ndisplay({'a': 1})"))
    assert run.stdout == "out\n" and run.stderr == "err\n"
    datas = [d["data"] for d in run.displays]
    assert {"text/html": "<b>bold</b>"}.items() <= datas[0].items()
    assert datas[1]["text/plain"] == "{'a': 1}"
    kinds = [m["msg_type"] for m in run.messages if m["msg_type"] in ("stream", "display_data")]
    assert kinds == ["stream", "stream", "display_data", "display_data"]   # order kept


def test_matplotlib_figure_made_remotely_is_shown(k):
    if ok(k.execute("%%remote\nimport importlib.util\n"
                    "importlib.util.find_spec('matplotlib')")).result is None:
        pytest.skip("matplotlib is not installed in this kernel's Python")
    run = ok(k.execute("%%remote\nimport matplotlib.pyplot as plt\nfig, ax = plt.subplots()\n"
                       "ax.plot([1, 3, 2]);", timeout=60))
    pngs = [d for d in run.displays if "image/png" in d["data"]]
    assert len(pngs) == 1
    assert ok(k.execute("type(fig).__name__")).result == "'Figure'"


def test_background_cell_output_lands_under_its_own_cell(k):
    bg = ok(k.execute("%%remote --bg\nimport time\ntime.sleep(1)\nprint('bg finished')\n"
                      "answer = 6 * 7\nanswer + 1", timeout=10))
    assert "running" in bg.displays[0]["data"]["text/plain"]
    assert ok(k.execute("type(answer).__name__")).result == "'ObjectRef'"
    other = ok(k.execute("print('meanwhile')"))
    k.pump_until(lambda: "bg finished" in bg.stdout, 20, "the background cell's print")
    printed = [m for m in bg.of_type("stream") if "bg finished" in m["content"]["text"]][0]
    assert bg.idle_at < other.idle_at < printed["received"]      # the kernel was free at once
    k.pump_until(lambda: any(d["data"].get("text/plain") == "43" for d in bg.displays), 10)
    assert other.stdout == "meanwhile\n" and "bg finished" not in other.stdout
    updates = bg.of_type("update_display_data")
    assert updates and "done" in updates[-1]["content"]["data"]["text/plain"]
    assert ok(k.execute("import shoal\nshoal.get(answer)")).result == "42"
    # a later cell that reads `answer` waits for it and gets its value
    assert ok(k.execute("%%remote\nanswer * 2")).result == "84"


def test_background_cell_error_shows_under_its_cell(k):
    bg = ok(k.execute("%%remote --bg\nimport time\ntime.sleep(0.3)\nboom = 1 / 0"))
    k.pump_until(lambda: bg.error, 20, "the background error")
    assert bg.error["ename"] == "ZeroDivisionError"
    assert "boom = 1 / 0" in bg.error["traceback_text"]


def test_remote_exception_shows_the_cells_lines(k):
    run = k.execute("%%remote\ndef inverse(x):\n    return 1 / x\n\nvalue = inverse(0)")
    assert run.reply["status"] == "error"
    err = run.error
    assert err["ename"] == "ZeroDivisionError" and err["evalue"] == "division by zero"
    tb = err["traceback_text"]
    assert "line 5" in tb and "value = inverse(0)" in tb       # the cell's own numbering
    assert "line 3" in tb and "return 1 / x" in tb and "in inverse" in tb
    assert "shoal" not in tb.replace("%%remote", "")            # no shoal frames
    assert "run_cell_magic" not in tb


def test_syntax_error_in_remote_cell(k):
    run = k.execute("%%remote\nx = 1\ny = = 2")
    assert run.reply["status"] == "error"
    tb = run.error["traceback_text"]
    assert "SyntaxError" in tb and "line 3" in tb and "y = = 2" in tb


def test_interrupt_cancels_the_remote_cell(k):
    run = k.submit("%%remote\nimport time\nprint('started', flush=True)\ntime.sleep(120)")
    k.pump_until(lambda: "started" in run.stdout, 30, "the remote cell to start")
    t0 = time.monotonic()
    k.interrupt()
    k.wait(run, timeout=10)
    # Ray cannot interrupt a sleep in C: the cell's worker is stopped after the grace.
    assert run.idle_at - t0 < (3.0 if on_ray(k) else 2.0)
    assert run.error["ename"] == "KeyboardInterrupt"
    assert "cancelled" in run.error["traceback_text"]
    assert len(run.error["traceback"]) == 1                      # short
    # the cluster is usable, and both engines are free again (the sleep stopped)
    again = ok(k.execute("%%remote --all --timeout 20\n'free'", timeout=30))
    assert again.result == repr(["free"] * k.copies)


def test_interrupting_get_cancels_only_this_cells_tasks(k, tmp_path):
    ok(k.execute(f"import shoal, time, os\nmarks = {str(tmp_path)!r}\n"
                 "@shoal.remote\ndef slow(name, seconds):\n"
                 "    open(os.path.join(marks, name), 'w').close()\n"
                 "    end = time.monotonic() + seconds\n"
                 "    while time.monotonic() < end:     # Ray interrupts between sleeps\n"
                 "        time.sleep(0.05)\n"
                 "    return name"))
    ok(k.execute("other = slow.remote('other', 4)"))              # another cell's task
    run = k.submit("mine = [slow.remote('mine', 60), slow.remote('queued', 60)]\n"
                   "open(os.path.join(marks, 'bound'), 'w').close()\n"
                   "shoal.get(mine)")
    # the interrupt must come while the cell waits, after it has bound `mine`
    k.pump_until(lambda: (tmp_path / "mine").exists() and (tmp_path / "bound").exists(), 30,
                 "the cell's task to start")
    t0 = time.monotonic()
    k.interrupt()
    k.wait(run, timeout=10)
    assert run.error["ename"] == "KeyboardInterrupt"
    # 1 s is the aim (0.28-0.87 s measured at load average 8 on 2 cores); 2 s allows for worse,
    # as the %%remote interrupt tests do
    assert run.idle_at - t0 < 2.0, run.idle_at - t0
    assert "cancelled this cell's tasks" in run.stderr
    check = ok(k.execute("from shoal.exceptions import TaskCancelledError\ndef fate(r):\n"
                         "    try:\n        return shoal.get(r, timeout=20)\n"
                         "    except TaskCancelledError:\n        return 'cancelled'\n"
                         "[fate(r) for r in [other, *mine]]", timeout=30))
    assert check.result == "['other', 'cancelled', 'cancelled']"
    assert not (tmp_path / "queued").exists()                     # never started
    # the engines (nodes) are free again
    assert ok(k.execute("shoal.get([slow.remote(n, 0) for n in 'ab'], timeout=20)",
                        timeout=30)).result == "['a', 'b']"


def test_interrupt_in_a_namespace_keeps_its_state(k):
    ok(k.execute("%%remote --on keeper\nkept = 'still here'"))
    # Ray interrupts a namespace's cell (an actor call) between bytecodes, as its
    # own tasks: a sleep in C would end first.
    wait = "for _ in range(2400):\n    time.sleep(0.05)" if on_ray(k) else "time.sleep(120)"
    run = k.submit(f"%%remote --on keeper\nimport time\nprint('go', flush=True)\n{wait}")
    k.pump_until(lambda: "go" in run.stdout, 30, "the namespace cell to start")
    t0 = time.monotonic()
    k.interrupt()
    k.wait(run, timeout=10)
    assert run.idle_at - t0 < 2.0 and run.error["ename"] == "KeyboardInterrupt"
    assert ok(k.execute("%%remote --on keeper\nkept")).result == "'still here'"


def test_timeout_cancels(k):
    run = k.execute("%%remote --timeout 0.5\nimport time\ntime.sleep(60)", timeout=15)
    assert run.reply["status"] == "error"
    assert run.error["ename"] == "GetTimeoutError" and "0.5 s" in run.error["evalue"]


def test_all_runs_on_every_engine(k):
    run = ok(k.execute("%%remote --all\nimport os\npid = os.getpid()\nprint('hello')"))
    lines = sorted(run.stdout.splitlines())
    if on_ray(k):           # one copy per node, labelled by the node's id
        labels = {ln.split("] ")[0] for ln in lines}
        assert len(labels) == k.copies and all(ln.endswith("] hello") for ln in lines)
    else:
        assert lines == ["[e0] hello", "[e1] hello"]
    check = ok(k.execute("print(len(pid), len(set(pid)), os.getpid() not in pid, "
                         "type(os).__name__)"))
    assert check.stdout == f"{k.copies} {k.copies} True module\n"


def test_on_keeps_a_namespace_between_cells(k):
    first = ok(k.execute("%%remote --on state\nimport threading\ncount = 1\n"
                         "lock = threading.Lock()"))
    assert "'lock' (lock) stays in namespace 'state'" in first.stderr
    run = ok(k.execute("%%remote --on state\ncount += 1\nwith lock:\n    n = count\nn"))
    assert run.result == "2"
    assert ok(k.execute("print(count, n, 'lock' in dir())")).stdout == "2 2 False\n"
    # another namespace is another namespace
    other = k.execute("%%remote --on elsewhere\nlock")
    assert other.error["ename"] == "NameError"


def test_push_and_pull_override_the_analysis(k):
    ok(k.execute("p1 = 1\np2 = 2"))
    run = ok(k.execute("%%remote --push p1 --pull r1\nr1 = globals().get('p1')\n"
                       "r2 = globals().get('p2')"))
    assert ok(k.execute("print(r1, 'r2' in dir())")).stdout == "1 False\n"
    bad = k.execute("%%remote --push nosuchname\n1")
    assert "nosuchname" in bad.stderr and run.reply["status"] == "ok"


def test_bad_options_give_a_usage_message(k):
    for line, message in (("--nope", "unrecognized arguments: --nope"),
                          ("--retries many", "argument --retries: invalid int value"),
                          ("--resources {bad", "argument --resources: not valid JSON"),
                          ("--all --on x", "--all and --on cannot be combined")):
        run = k.execute(f"%%remote {line}\n1")
        assert run.reply["status"] == "error", line
        assert "usage: %%remote" in run.stderr and message in run.stderr, run.stderr
    assert "usage:" in k.execute("%cluster frobnicate").stderr
    assert "expected on or off" in k.execute("%autoremote maybe").stderr


def test_autoremote(k):
    ok(k.execute("import os\nkernel_pid = os.getpid()"))
    assert "autoremote is on" in ok(k.execute("%autoremote on")).stdout
    run = ok(k.execute("import os\nauto_pid = os.getpid()\nauto_pid != kernel_pid"))
    assert run.result == "True"
    local = ok(k.execute("%autoremote off"))
    assert "off" in local.stdout
    assert ok(k.execute("os.getpid() == kernel_pid")).result == "True"


def test_cluster_magic_shows_and_scales(k):
    run = ok(k.execute("%cluster"))
    shown = run.of_type("execute_result")[0]["content"]["data"]
    if on_ray(k):           # Ray's nodes; Ray scales through its autoscaler, not %cluster
        assert "ray cluster at ray:" in shown["text/plain"]
        assert f"{k.copies} node(s)" in shown["text/plain"]
        return
    assert "2 engine(s)" in shown["text/plain"] and "<table" in shown["text/html"]
    assert "already running" in k.execute("%cluster start").stderr
    engines = "from shoal.util import state\n" \
              "sum(e['state'] in ('idle', 'busy') for e in state.list_engines())"
    assert "Scaling to 3" in ok(k.execute("%cluster scale 3")).stdout
    k.pump_until(lambda: ok(k.execute(engines)).result == "3", 30, "a third engine")
    ok(k.execute("%cluster scale 2"))
    k.pump_until(lambda: ok(k.execute(engines)).result == "2", 30, "back to two engines")
