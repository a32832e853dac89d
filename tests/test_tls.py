"""Level 2: links that leave the host are TLS, authenticated by the key bound
to the channel; plaintext and wrong-key peers are refused with a log line."""
import os
import socket

import numpy as np
import pytest

import shoal
from shoal.launch.launcher import HostProcess, LocalCluster
from shoal.protocol import auth
from shoal.protocol.connection import Connection
from shoal.util.state import list_hosts

from conftest import wait_for


def outward_address():
    """An address of this machine that is not loopback (TLS applies there)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))           # TEST-NET: routes, sends nothing
            ip = s.getsockname()[0]
    except OSError:
        ip = ""
    if not ip or ip.startswith("127."):
        pytest.skip("this machine has no non-loopback address to test TLS on")
    return ip


@pytest.fixture
def head():
    shoal.shutdown()
    cluster = LocalCluster(num_cpus=1, host=outward_address())
    yield cluster
    shoal.shutdown()
    cluster.stop()


def scheduler_log(cluster) -> str:
    with open(os.path.join(cluster.session_dir, "logs", "scheduler.log")) as f:
        return f.read()


def test_tls_links_carry_tasks_and_objects_between_hosts(head, monkeypatch):
    monkeypatch.setenv("SHOAL_KEY", head.key.hex())
    shoal.init(address=head.address)                # a TCP driver: over TLS
    other = HostProcess(head.address, head.key, head.cluster_id, head.session_dir, num_cpus=1,
                        resources={"B": 1}, bind_host=head.address.split(":")[0])
    try:
        wait_for(lambda: len(list_hosts()) == 2, what="the second host")
        host = next(h for h in list_hosts() if h["resources"].get("B"))
        assert os.path.exists(os.path.join(head.session_dir, "tls", "objects-cert.pem"))

        @shoal.remote(resources={"B": 1})
        def make():
            return np.arange(4_000_000)

        assert shoal.get(make.remote())[-1] == 3_999_999     # fetched over TLS
        assert host["hostname"]
    finally:
        shoal.shutdown()
        other.stop()


def test_plaintext_and_wrong_key_peers_are_refused_with_a_log_line(head):
    host, port = head.address.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert s.recv(100) == b""
    wait_for(lambda: "no TLS handshake" in scheduler_log(head), what="the plaintext log line")
    with pytest.raises(auth.AuthenticationError):
        Connection.connect(head.address, b"not the key" * 3)
    wait_for(lambda: "wrong cluster key" in scheduler_log(head), what="the wrong-key log line")
    Connection.connect(head.address, head.key).close()        # the right key still gets in


def test_the_key_proof_is_bound_to_the_tls_channel():
    key, nonce = b"k" * 32, auth.new_nonce()
    proof, _ = auth.client_proof(key, nonce, binding=b"cert the client saw")
    with pytest.raises(auth.AuthenticationError):
        auth.check_client_proof(key, nonce, proof, binding=b"cert the server has")
