"""A Python with a real Ray for the tests of the Ray backend and the Ray notebook.

Ray is never a dependency of shoal: `benchmarks/setup-peers.sh` (run by
.ci/run) makes benchmarks/.venv-peers with Ray and shoal's own runtime
dependencies, and these tests run shoal from this source tree there
(PYTHONPATH).  SHOAL_RAY_PYTHON names another interpreter.  Without one the
tests skip, saying why, unless SHOAL_REQUIRE_RAY_TESTS=1 (CI), where they fail.
"""
from __future__ import annotations

import contextlib
import functools
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What Ray's client proxy says when the port it picked for a client's server (23000 on,
# machine-wide) is taken by another Ray here: the server dies at once, and the proxy
# reports the failed start or trips over the dead process.  Connecting again moves on.
CLIENT_PORT_TAKEN = ("Starting Ray client server failed", "ZombieProcess")


@functools.lru_cache(maxsize=None)
def ray_python(check: str = "import ray, ipykernel") -> str | None:
    """The first candidate interpreter where `check` runs (with shoal on its path)."""
    candidates = [os.environ.get("SHOAL_RAY_PYTHON"),
                  os.path.join(ROOT, "benchmarks", ".venv-peers", "bin", "python")]
    for python in filter(None, candidates):
        if os.path.exists(python) and subprocess.run(
                [python, "-c", check], capture_output=True, env=ray_env(),
                timeout=120).returncode == 0:
            return python
    return None


def ray_env(**extra: str) -> dict:
    """The environment for shoal from this tree in the Ray interpreter."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    env.pop("SHOAL_ADDRESS", None)
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.update(extra)
    return env


def require_ray_python(check: str = "import ray, ipykernel") -> str:
    """The Ray interpreter, or skip (fail where SHOAL_REQUIRE_RAY_TESTS is set)."""
    python = ray_python(check)
    if python is None:
        if os.environ.get("SHOAL_REQUIRE_RAY_TESTS"):
            pytest.fail(f"no Python where `{check}` works: run benchmarks/setup-peers.sh")
        pytest.skip("Ray is not installed here (shoal does not depend on it; "
                    "benchmarks/setup-peers.sh installs it in a separate venv)")
    return python


CLUSTER = """
import sys
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
print(cluster.address, flush=True)
sys.stdin.read()            # the test closes our stdin: stop the cluster
cluster.shutdown()
"""


@contextlib.contextmanager
def owned_by_helper(python: str, code: str, what: str, env: dict | None = None):
    """Run `code` (it prints one line once what it started is up, then reads its
    stdin until EOF and stops it) in a helper process; yield that line, split.
    On exit the helper's stdin closes and it is waited for (killed after 60 s)."""
    proc = subprocess.Popen([python, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env or ray_env())
    try:
        line = proc.stdout.readline().split()
        assert line, f"{what} did not start"
        yield line
    finally:
        proc.stdin.close()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def two_node_cluster(python: str):
    """A two-node Ray cluster (1 CPU each) owned by a helper process: yields its address;
    stopped (the helper waited for) on exit."""
    with owned_by_helper(python, CLUSTER, "the Ray cluster") as line:
        yield line[0]
