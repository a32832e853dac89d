import os
import time

import pytest

# An illegal task or engine transition in any scheduler the tests start (in this
# process or a child) raises instead of only being logged (scheduler/lifecycle.py).
os.environ["SHOAL_STRICT_STATES"] = "1"

import shoal


def wait_for(condition, timeout=10.0, interval=0.02, what="condition"):
    """Poll until condition() is truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"      # a zombie is as good as gone
    except (OSError, IndexError):      # gone, or going while we read
        return False


def cluster_pids(engines: int = 2) -> list:
    """Scheduler, agent and engine pids of the current embedded cluster, once
    its `engines` engines have joined."""
    from shoal.core import runtime
    rt = runtime.current()

    def joined():
        status = rt.client.status()
        return status if len(status["engines"]) >= engines else None

    status = wait_for(joined, what=f"{engines} engines")
    return [p.pid for p in rt.cluster.processes] + [e["pid"] for e in status["engines"]]


def init_with_defaults(*switches, **kwargs):
    """shoal.init with the named SHOAL_* switches at their defaults (on),
    whatever the environment running the tests says."""
    saved = {k: os.environ.pop(k, None) for k in switches}
    try:
        return shoal.init(**kwargs)
    finally:
        os.environ.update({k: v for k, v in saved.items() if v is not None})


def cluster_with_defaults(*switches):
    """A module's autouse 2-CPU cluster with the named SHOAL_* switches on."""
    @pytest.fixture(scope="module", autouse=True)
    def cluster():
        shoal.shutdown()
        yield init_with_defaults(*switches, num_cpus=2)
        shoal.shutdown()
    return cluster


@pytest.fixture(scope="module")
def cluster():
    """One embedded 2-CPU cluster shared by a module's tests."""
    shoal.shutdown()
    ctx = shoal.init(num_cpus=2)
    yield ctx
    shoal.shutdown()


@pytest.fixture
def fresh_cluster():
    """A cluster of the test's own (for tests that break things)."""
    shoal.shutdown()
    yield lambda **kw: shoal.init(**{"num_cpus": 2, **kw})
    shoal.shutdown()


@pytest.fixture
def ipython():
    """IPython's test shell, for in-process magics tests.  It is a process-wide
    singleton: afterwards it is unregistered again, so later tests see no
    IPython (get_ipython() is None) and run as outside a notebook, as they would alone."""
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.testing.globalipapp import get_ipython
    ip = get_ipython()
    for cls in type(ip).mro():               # registered again after an earlier test's teardown
        if isinstance(cls, type) and issubclass(cls, InteractiveShell):
            cls._instance = ip
    yield ip
    type(ip).clear_instance()


def ok(run):
    """A kernel execution (shoal.kernel.testing) that must have succeeded."""
    assert run.reply["status"] == "ok", run
    return run


# The Ray interpreter and the two-node Ray cluster, one for the whole session:
# shared by the %%remote suite over backends and tests/test_backend_ray.py.
from remote_kernels import ray_cluster, ray_python  # noqa: E402,F401
