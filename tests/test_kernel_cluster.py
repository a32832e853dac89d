"""Level 3: the shoal kernel's cluster and plain Ray-style code: `init()`
gets the kernel's cluster and refs of a stopped cluster fail at once (an
interrupt in `shoal.get` cancelling the cell's own tasks is in test_kernel.py,
on every backend)."""
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
