"""Level 3: the shoal kernel's cluster and plain Ray-style code: `init()`
gets the kernel's cluster, an interrupt in `shoal.get` cancels the cell's
own tasks, and refs of a stopped cluster fail at once."""
import time

import pytest

from shoal.kernel.testing import KernelSession

from conftest import ok


@pytest.fixture(scope="module")
def k():
    session = KernelSession("shoal", extra_arguments=["--ShoalKernel.num_cpus=2"])
    try:
        session.start()
        ok(session.execute("%%remote\n1", timeout=60))
        yield session
    finally:
        session.shutdown()


def test_init_returns_the_kernels_cluster(k):
    run = ok(k.execute("import shoal\nctx = shoal.init()\n"
                       "(ctx.address == shoal.init(num_cpus=2).address, shoal.is_initialized())"))
    assert run.result == "(True, True)"
    assert ok(k.execute("shoal.get(shoal.put(3))")).result == "3"


@pytest.mark.parametrize("call, advice", [
    ("shoal.init(num_cpus=3)", "`%cluster start -n 3`"),
    ("shoal.init(address='127.0.0.1:9')", "`%cluster connect 127.0.0.1:9`"),
    ("shoal.init(num_gpus=1)", "`%cluster stop`"),
])
def test_init_that_does_not_fit_the_kernels_cluster_says_how_to_switch(k, call, advice):
    run = k.execute(f"import shoal\n{call}")
    assert run.error["ename"] == "RuntimeError" and advice in run.error["evalue"], run.error
    assert "this shoal kernel" in run.error["evalue"]


def test_interrupting_get_cancels_only_this_cells_tasks(k, tmp_path):
    ok(k.execute(f"import shoal, time, os\nmarks = {str(tmp_path)!r}\n"
                 "@shoal.remote\ndef slow(name, seconds):\n"
                 "    open(os.path.join(marks, name), 'w').close()\n"
                 "    time.sleep(seconds)\n    return name"))
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
    # both engines are free again
    assert ok(k.execute("shoal.get([slow.remote(n, 0) for n in 'ab'], timeout=20)",
                        timeout=30)).result == "['a', 'b']"


@pytest.mark.slow
def test_ray_style_notebook_and_refs_of_a_stopped_cluster():
    session = KernelSession("shoal", extra_arguments=["--ShoalKernel.num_cpus=1"])
    try:
        session.start()
        ok(session.execute("import shoal\nshoal.init(num_cpus=1)\nold = shoal.put(41)", timeout=60))
        ok(session.execute("%%remote\nnew = shoal.get(old) + 1"))
        assert ok(session.execute("shoal.init() is not None\nnew")).result == "42"
        ok(session.execute("%cluster stop\n%cluster start -n 1", timeout=60))
        t0 = time.monotonic()
        run = session.execute("shoal.get(old)", timeout=20)
        assert time.monotonic() - t0 < 5
        assert run.error["ename"] == "ObjectFromOtherClusterError"
        assert "has left" in run.error["evalue"] and "compute the value again" in \
            run.error["evalue"]
        assert ok(session.execute("from shoal.exceptions import ObjectLostError\n"
                                  "try:\n    shoal.wait([old])\nexcept ObjectLostError:\n"
                                  "    print('lost')")).stdout == "lost\n"
        passed = session.execute("@shoal.remote\ndef inc(x):\n    return x + 1\ninc.remote(old)")
        assert passed.error["ename"] == "ObjectFromOtherClusterError"
    finally:
        session.shutdown()
