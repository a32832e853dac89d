"""The kernels of the `%%remote` suite, one per backend (issue 17, item 5).

The kernel-level tests of `%%remote` (test_kernel.py, test_kernel_output.py,
test_remote_semantics.py) take their kernel from a module-scoped fixture
parametrised with BACKENDS, so every test body runs on each:

    shoal        shoal's own embedded cluster, 2 engines (always)
    ray-local    a local Ray that the kernel starts for itself (address "ray:local", 2 CPUs)
    ray-cluster  a two-node ray.cluster_utils.Cluster (1 CPU a node) that a helper
                 process owns for the whole session (`ray_cluster`)

The Ray ones are slow and need a Python with Ray (tests/ray_env.py): they
skip without one, and fail instead where SHOAL_REQUIRE_RAY_TESTS=1.

A kernel made here carries what tests need to know of its cluster:
`backend` (the name above), `copies` (how many copies `%%remote --all` runs:
engines on shoal, nodes on Ray) and `worker_cpus` (CPUs of one engine or node).
"""
from __future__ import annotations

import contextlib
import os

import pytest

from shoal.kernel.kernelspec import write_kernel_spec
from shoal.kernel.testing import KernelSession

from ray_env import owned_by_helper, ray_env, require_ray_python

RAY_CHECK = "import ray, ipykernel, shoal.magics, shoal.kernel, ray.cluster_utils"
BACKENDS = ["shoal",
            pytest.param("ray-local", marks=pytest.mark.slow),
            pytest.param("ray-cluster", marks=pytest.mark.slow)]

CLUSTER = """
import socket, sys
from ray.cluster_utils import Cluster
import importlib.util
head = {"num_cpus": 1, "include_dashboard": False}
client_port = 0
if importlib.util.find_spec("grpc"):        # ray[client]: a Ray Client server too
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    client_port = s.getsockname()[1]
    s.close()
    head["ray_client_server_port"] = client_port
cluster = Cluster(initialize_head=True, head_node_args=head)
cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
print(cluster.address, client_port, flush=True)
sys.stdin.read()            # the test closes our stdin: stop the cluster
cluster.shutdown()
"""


@pytest.fixture(scope="session")
def ray_python():
    return require_ray_python(RAY_CHECK)


@pytest.fixture(scope="session")
def ray_cluster(ray_python):
    """A two-node Ray cluster (1 CPU each) for the session: (its address, the
    port of its Ray Client server, or 0 without ray[client]).  Its helper
    process owns it: closing the helper's stdin stops it."""
    with owned_by_helper(ray_python, CLUSTER, "the Ray cluster") as line:
        yield line[0], int(line[1])


@contextlib.contextmanager
def remote_kernel(request, *setup: str):
    """A started kernel on the backend `request.param` names, `%%remote` used
    once (its cluster is up) and `setup` cells run; shut down on exit."""
    backend = request.param
    if backend == "shoal":
        session = KernelSession("shoal", extra_arguments=["--ShoalKernel.num_cpus=2"])
        session.copies, session.worker_cpus = 2, 1
    else:
        python = request.getfixturevalue("ray_python")
        if backend == "ray-local":
            arguments = ["--ShoalKernel.address=ray:local", "--ShoalKernel.num_cpus=2"]
            session_copies, cpus = 1, 2
        else:
            address = request.getfixturevalue("ray_cluster")[0]
            arguments = [f"--ShoalKernel.address=ray:{address}"]
            session_copies, cpus = 2, 1
        session = KernelSession("shoal-ray", extra_arguments=arguments, env=ray_env(),
                                startup_timeout=90)
        write_kernel_spec(os.path.join(session.kernel_dirs[0], "shoal-ray"), python=python)
        session.copies, session.worker_cpus = session_copies, cpus
    session.backend = backend
    try:
        session.start()
        first = session.execute("%%remote\n1", timeout=120)      # the cluster starts here
        assert first.result == "1", first
        for code in setup:
            run = session.execute(code, timeout=60)
            assert run.reply["status"] == "ok", run
        yield session
    finally:
        session.shutdown()


def on_ray(k) -> bool:
    return k.backend.startswith("ray")
