"""Level 2: authentication, hostile peers, and where the key may (not) appear."""
import glob
import os
import pickle
import socket
import stat
import struct

import pytest

import shoal
from shoal.core import runtime
from shoal.core.client import Client
from shoal.protocol import auth
from shoal.protocol.connection import Connection, parse_address
from shoal.protocol.framing import encode_frame

from conftest import cluster_pids, wait_for

pytestmark = pytest.mark.usefixtures("cluster")


@shoal.remote
def echo(x):
    return x


def scheduler_log() -> str:
    path = os.path.join(runtime.current().client.session_dir, "logs", "scheduler.log")
    with open(path) as f:
        return f.read()


def raw_socket() -> socket.socket:
    sock = socket.create_connection(parse_address(runtime.current().address), timeout=10)
    sock.recv(auth.NONCE_SIZE)
    return sock


def closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True


def authenticated_socket() -> socket.socket:
    conn = Connection.connect(runtime.current().address, runtime.current().cluster.key)
    return conn.sock


def test_wrong_key_is_refused_and_logged():
    with pytest.raises(auth.AuthenticationError):
        Client.connect(runtime.current().address, b"wrong key" * 4, timeout=5)
    wait_for(lambda: "wrong cluster key" in scheduler_log(), what="a log line")
    assert shoal.get(echo.remote(1)) == 1


def test_random_bytes_close_the_connection():
    sock = raw_socket()
    sock.sendall(os.urandom(4096))
    assert closed_by_peer(sock)
    assert shoal.get(echo.remote(2)) == 2


def test_silent_peer_does_not_block_others():
    sock = raw_socket()          # connects, never authenticates
    try:
        assert shoal.get(echo.remote(3)) == 3
    finally:
        sock.close()


def test_malformed_frames_after_authentication_close_only_that_connection():
    for payload in (b"\xff" * 16,                                  # absurd lengths
                    b"".join(encode_frame(b"not a pickle")),       # undecodable header
                    b"".join(encode_frame(pickle.dumps((10**6, "x")))),   # unknown type
                    b"".join(encode_frame(pickle.dumps(("x",)))),
                    struct.pack("<II", 100, 0) + b"short"):       # truncated, then EOF
        sock = authenticated_socket()
        sock.sendall(payload)
        if payload.endswith(b"short"):
            sock.shutdown(socket.SHUT_WR)
        assert closed_by_peer(sock)
        sock.close()
    assert "closing connection" in scheduler_log()
    assert shoal.get(echo.remote(4)) == 4


def test_messages_out_of_order_close_the_connection():
    from shoal.protocol import codec
    from shoal.protocol import messages as m
    sock = authenticated_socket()
    sock.sendall(b"".join(bytes(c) for c in codec.encode(m.Subscribe(object_ids=["x"]))))
    assert closed_by_peer(sock)
    assert shoal.get(echo.remote(5)) == 5


def test_key_never_on_command_lines_or_in_logs():
    key = runtime.current().cluster.key.hex()
    for pid in cluster_pids():
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert key.encode() not in f.read()
        with open(f"/proc/{pid}/environ", "rb") as f:
            assert key.encode() not in f.read()
    for path in glob.glob(os.path.join(runtime.current().client.session_dir, "logs", "*")):
        with open(path, errors="replace") as f:
            assert key not in f.read()


def test_connection_file_is_private_and_the_scheduler_listens_on_loopback():
    cluster = runtime.current().cluster
    mode = stat.S_IMODE(os.stat(cluster.connection_file).st_mode)
    assert mode == 0o600
    host, _ = parse_address(cluster.address)
    assert host == "127.0.0.1"


def test_a_peer_that_does_not_read_is_not_read_from():
    """Back-pressure: requests from a peer that never reads its answers stop
    being processed once its answers pile up, instead of growing a buffer."""
    from shoal.protocol import codec
    from shoal.protocol import messages as m
    big = shoal.put(b"x" * 90_000)                 # inline: each answer carries 90 KB
    sock = authenticated_socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hello = m.ClientHello(client_id="slow", kind="driver", pid=1, hostname="x")
    sock.sendall(b"".join(bytes(c) for c in codec.encode(hello)))
    ask = b"".join(bytes(c) for c in codec.encode(m.Subscribe(object_ids=[big.id])))
    sock.setblocking(False)
    scheduler = runtime.current().cluster.processes[0].pid
    before = _rss(scheduler)
    blocked = False
    for _ in range(1_000_000):                     # 90 GB of answers if all were made
        try:
            sock.send(ask)
        except BlockingIOError:
            blocked = True                         # the scheduler stopped reading us: good
            break
    assert blocked
    assert _rss(scheduler) - before < 300 << 20
    assert shoal.get(echo.remote(6)) == 6          # and everyone else is still served
    sock.close()


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))
