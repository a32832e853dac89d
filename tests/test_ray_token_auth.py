"""What docs/backends.md ("Security on the Ray path") and the deployment recipes say about
Ray Client and Ray's token authentication, checked on a real Ray: a cluster started with
RAY_AUTH_MODE=token and its token in a 0600 file (RAY_AUTH_TOKEN_PATH) takes
`shoal.init(address="ray://...")` from a notebook-side process holding the token, and refuses
one with another token or none.  Runs in the Ray interpreter (tests/ray_env.py).
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import textwrap

import pytest

from ray_env import CLIENT_PORT_TAKEN, owned_by_helper, ray_env, require_ray_python

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
CHECK = "import ray, grpc, ray.cluster_utils"

# A one-node cluster with a Ray Client server; it lives until the test closes its stdin.
CLUSTER = """
import socket, sys
from ray.cluster_utils import Cluster
s = socket.socket()
s.bind(("127.0.0.1", 0))
client_port = s.getsockname()[1]
s.close()
cluster = Cluster(initialize_head=True, head_node_args={
    "num_cpus": 1, "include_dashboard": False, "ray_client_server_port": client_port})
cluster.wait_for_nodes()
print(client_port, flush=True)
sys.stdin.read()
cluster.shutdown()
"""

DRIVER = """
import json, shoal
for tries in range(4):
    try:
        shoal.init(address="ray://127.0.0.1:{port}")
        refused = None
    except Exception as exc:
        refused = exc
        if tries < 3 and any(s in str(exc) for s in {port_taken!r}):
            continue            # Ray's client proxy picked a port another Ray here holds
    break
if refused is not None:
    print(json.dumps({{"refused": type(refused).__name__ + ": " + str(refused)[:300]}}))
else:
    @shoal.remote
    def square(x):
        return x * x
    print(json.dumps({{"result": shoal.get(square.remote(7))}}))
    shoal.shutdown()
"""


def token_file(directory, name: str) -> str:
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path


def auth_env(**settings: str) -> dict:
    env = ray_env(**settings)
    env.pop("RAY_AUTH_TOKEN", None)       # it would win over RAY_AUTH_TOKEN_PATH
    return env


@pytest.fixture(scope="module")
def python():
    return require_ray_python(CHECK)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ray-tokens")
    return token_file(directory, "cluster"), token_file(directory, "other")


@pytest.fixture(scope="module")
def cluster_port(python, tokens):
    env = auth_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=tokens[0])
    with owned_by_helper(python, CLUSTER, "the Ray cluster with token authentication",
                         env) as line:
        yield int(line[0])


def start_driver(python, port: int, **settings: str) -> subprocess.Popen:
    return subprocess.Popen([python, "-c", textwrap.dedent(DRIVER.format(port=port, port_taken=CLIENT_PORT_TAKEN))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=auth_env(**settings))


def outcome(driver: subprocess.Popen) -> dict:
    try:
        stdout, stderr = driver.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        driver.kill()
        driver.communicate()
        raise
    assert driver.returncode == 0, stderr[-4000:]
    return json.loads(stdout.strip().splitlines()[-1])


def test_a_notebook_holding_the_token_connects_through_ray_client(python, cluster_port, tokens):
    driver = start_driver(python, cluster_port, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=tokens[0])
    assert outcome(driver) == {"result": 49}


def test_another_token_or_none_is_refused(python, cluster_port, tokens):
    # Both at once: Ray Client gives up only after its retries (about 30 s in Ray 2.60), and
    # says "ConnectionError: ray client connection timeout", not that the token was wrong.
    drivers = {"another token": start_driver(python, cluster_port, RAY_AUTH_MODE="token",
                                             RAY_AUTH_TOKEN_PATH=tokens[1]),
               "no token": start_driver(python, cluster_port, RAY_AUTH_MODE="disabled")}
    try:
        outs = {case: outcome(driver) for case, driver in drivers.items()}
    finally:
        for driver in drivers.values():      # the other one, if the first failed
            if driver.poll() is None:
                driver.kill()
                driver.communicate()
    for case, out in outs.items():
        assert out.get("refused", "").startswith("ConnectionError"), (case, out)
