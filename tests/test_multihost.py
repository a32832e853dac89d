"""Level 6: a head and hosts in network namespaces, joined with
`shoal start --address` and with the SSH launcher."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import shoal
from shoal.core import runtime
from shoal.util.state import list_hosts

from conftest import alive, wait_for
from netns import FakeHosts, why_unavailable

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def net():
    reason = why_unavailable()
    if reason:
        pytest.skip(reason)
    hosts = FakeHosts(2, sshd=os.path.exists("/usr/sbin/sshd"))
    yield hosts
    hosts.close()


@shoal.remote
def where(seconds=0):
    time.sleep(seconds)
    return runtime.current().client.host_id


def join(net, k, address, key, **env):
    """`shoal start --address` inside host k, the key in the environment."""
    return subprocess.run(
        net.exec_argv(k, sys.executable, "-m", "shoal", "start", "--address", address,
                      "--num-cpus", "1", "--resources", json.dumps({f"host{k}": 1})),
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "SHOAL_KEY": key.hex(), **env})


def test_hosts_join_run_tasks_move_objects_and_survive_a_cut(net, monkeypatch):
    monkeypatch.setenv("SHOAL_HEARTBEAT_TIMEOUT", "3")
    shoal.shutdown()
    from shoal.launch.launcher import LocalCluster
    head = LocalCluster(num_cpus=1, host=net.head_ip, heartbeat_timeout=3)
    monkeypatch.setenv("SHOAL_KEY", head.key.hex())
    try:
        shoal.init(address=head.address)
        for k in (1, 2):
            r = join(net, k, head.address, head.key)
            assert r.returncode == 0, r.stderr
        wait_for(lambda: len(list_hosts()) == 3, what="both hosts to join")
        ids = {h["resources"].get("host1") and "host1" or h["resources"].get("host2") and "host2"
               or "head": h["host_id"] for h in list_hosts()}
        assert {shoal.get(where.options(resources={f"host{k}": 1}).remote())
                for k in (1, 2)} == {ids["host1"], ids["host2"]}

        @shoal.remote(resources={"host1": 1})
        def make():
            return np.ones(25_000_000)                        # 200 MB on host1

        @shoal.remote(resources={"host2": 1})
        def total(a):
            return float(a.sum())

        ref = make.remote()
        shoal.wait([ref])
        t = time.perf_counter()
        assert shoal.get(total.remote(ref), timeout=120) == 25_000_000.0   # host1 -> host2
        print(f"\n200 MB host1 -> host2 and summed in {time.perf_counter() - t:.2f} s (TLS)")
        assert shoal.get(ref, timeout=120).sum() == 25_000_000.0           # host1 -> head

        @shoal.remote(max_retries=5)
        def work(i):
            time.sleep(0.05)
            return i * i

        refs = [work.remote(i) for i in range(200)]
        shoal.wait(refs, num_returns=10, timeout=60)         # mid-workload
        cut = time.monotonic()
        net.partition(1)
        wait_for(lambda: len(list_hosts()) == 2, timeout=15, what="the cut host to be lost")
        detected = time.monotonic() - cut
        assert shoal.get(refs, timeout=120) == [i * i for i in range(200)]
        print(f"lost host detected {detected:.1f} s after the cut (timeout 3 s)")
        assert detected < 10
    finally:
        shoal.shutdown()
        head.stop()
        net.heal(1)


def test_ssh_launcher_starts_and_stops_hosts(net, monkeypatch):
    if not net.sshd_pids:
        pytest.skip("sshd is not installed (scripts/ci-deps.sh installs it)")
    monkeypatch.setenv("SHOAL_SSH_OPTIONS", f"-F {net.ssh_config}")
    shoal.shutdown()
    ctx = shoal.init(num_cpus=1, hosts=[f"{net.ns(1)}:1", f"{net.ns(2)}:1"])
    try:
        wait_for(lambda: len(list_hosts()) == 3, timeout=60, what="the SSH hosts to join")
        agents = [h["pid"] for h in list_hosts() if h["host_id"] != runtime.current().client.host_id]
        # Each host has one CPU: six half-second tasks must use all three hosts.
        ran = set(shoal.get([where.remote(0.5) for _ in range(6)], timeout=60))
        assert len(ran) == 3
        logs = os.listdir(os.path.join(ctx.session_dir, "logs"))
        assert any(f.startswith("ssh-") for f in logs)
        # The SSH session to host 2 drops: that host stops and leaves.
        session = next(int(p) for p in os.listdir("/proc") if p.isdigit() and _cmdline(p)
                       .startswith("ssh") and net.ns(2) in _cmdline(p))
        os.kill(session, 9)
        wait_for(lambda: len(list_hosts()) == 2, timeout=20, what="host 2 to leave")
    finally:
        shoal.shutdown()
    wait_for(lambda: not any(alive(p) for p in agents), timeout=20,
             what="the remote agents to stop with the cluster")


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_cluster_magic_starts_ssh_hosts(net, monkeypatch, ipython):
    if not net.sshd_pids:
        pytest.skip("sshd is not installed (scripts/ci-deps.sh installs it)")
    monkeypatch.setenv("SHOAL_SSH_OPTIONS", f"-F {net.ssh_config}")
    shoal.shutdown()
    ip = ipython
    ip.run_line_magic("load_ext", "shoal")
    try:
        ip.run_line_magic("cluster", f"start -n 1 --ssh {net.ns(1)}:1")
        wait_for(lambda: len(list_hosts()) == 2, timeout=60, what="the SSH host to join")
    finally:
        ip.run_line_magic("cluster", "stop")
        ip.run_line_magic("unload_ext", "shoal")
