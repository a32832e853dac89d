"""Level 2: every shoal process has an owner that notices its death and acts.

Engines are restarted by their agent (tests/test_reliability.py); here: a host
agent by its owner (the embedded cluster's driver, or the supervisor process
of `shoal start`), and a lost scheduler failing every waiting call at once.
Each test prints the time from the kill to the cluster being whole again."""
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import shoal
from shoal.core import runtime
from shoal.launch.launcher import HostProcess
from shoal.exceptions import ClusterLostError
from shoal.util.state import list_hosts

from conftest import alive, wait_for


def _engines_on(host_id: str) -> list:
    return [e for e in runtime.current().client.status()["engines"]
            if e["host_id"] == host_id and not e.get("actor_id")]


def test_a_killed_agent_is_restarted_and_nothing_is_lost(fresh_cluster):
    fresh_cluster()
    rt = runtime.current()

    @shoal.remote(max_retries=3)
    def slow(i):
        time.sleep(0.5)
        return i

    @shoal.remote
    def big(i):
        return np.full(300_000, i)                     # 2.4 MB: in the host store

    @shoal.remote(max_restarts=1, max_task_retries=1)
    class Counter:
        def __init__(self):
            self.n = 0

        def add(self):
            self.n += 1
            return self.n

    counter = Counter.remote()
    assert shoal.get(counter.add.remote()) == 1
    put = shoal.put(np.arange(1_000_000))
    made = big.remote(5)
    shoal.wait([made])
    running = [slow.remote(i) for i in range(4)]
    wait_for(lambda: any(e["task_id"] for e in _engines_on(rt.cluster.host_id)),
             what="a task to be running")
    old_agent, old_engines = rt.cluster.processes[1].pid, {e["pid"] for e in
                                                           _engines_on(rt.cluster.host_id)}
    os.kill(old_agent, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: rt.cluster.processes[1].pid != old_agent, timeout=1.0,
             what="the driver to restart the agent within 1 s")
    restarted = time.monotonic() - killed
    wait_for(lambda: len(_engines_on(rt.cluster.host_id)) == 2, timeout=30,
             what="the new agent's engines")
    whole = time.monotonic() - killed
    assert not any(alive(p) for p in old_engines)
    assert shoal.get(running, timeout=30) == [0, 1, 2, 3]        # retried elsewhere
    assert shoal.get(put)[-1] == 999_999 and shoal.get(made)[0] == 5   # the store kept them
    assert shoal.get(counter.add.remote(), timeout=30) == 1      # restarted: fresh state
    assert [h["host_id"] for h in list_hosts()] == [rt.cluster.host_id]
    print(f"\nagent SIGKILL: restarted after {restarted * 1e3:.0f} ms, engines back after "
          f"{whole:.2f} s, running tasks done {time.monotonic() - killed:.2f} s after the kill")


@pytest.mark.slow
def test_an_agent_that_keeps_dying_is_given_up_and_its_host_lost(fresh_cluster, monkeypatch):
    from shoal.launch import supervisor
    monkeypatch.setattr(supervisor, "MAX_RESTARTS", 1)
    fresh_cluster(num_cpus=1)
    rt = runtime.current()
    first = rt.cluster.processes[1].pid
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: rt.cluster.processes[1].pid != first, what="the first restart")
    os.kill(rt.cluster.processes[1].pid, signal.SIGKILL)
    rt.cluster.agent.join(timeout=10)
    assert rt.cluster.processes[1].poll() is not None          # not restarted a second time
    wait_for(lambda: not list_hosts(), timeout=15,
             what="the scheduler to give the host up after its heartbeat timeout")


def test_a_joined_hosts_agent_is_restarted_by_its_supervisor_process(fresh_cluster):
    """`shoal start --address` leaves a supervisor process behind, which restarts the
    agent; the host keeps its id and its store."""
    fresh_cluster(num_cpus=1)
    rt = runtime.current()
    host = HostProcess(rt.address, rt.cluster.key, rt.client.cluster_id, rt.client.session_dir,
                       num_cpus=1, resources={"B": 1}, owned=False)
    try:
        wait_for(lambda: len(_engines_on(host.host_id)) == 1, timeout=30,
                 what="the joined host's engine")

        @shoal.remote(resources={"B": 1})
        def on_b():
            return np.ones(200_000)

        ref = on_b.remote()
        shoal.wait([ref])
        agent = next(h["pid"] for h in list_hosts() if h["host_id"] == host.host_id)
        os.kill(agent, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: next((h["pid"] for h in list_hosts() if h["host_id"] == host.host_id),
                              agent) != agent, timeout=10, what="a new agent for the host")
        wait_for(lambda: len(_engines_on(host.host_id)) == 1, timeout=30, what="its engine")
        print(f"\njoined host's agent SIGKILL: whole again after "
              f"{time.monotonic() - killed:.2f} s")
        assert shoal.get(ref).sum() == 200_000                 # its store kept the result
        assert shoal.get(on_b.remote(), timeout=30).sum() == 200_000
        assert host.process.poll() is None                      # the supervisor is still there
    finally:
        host.stop()
    wait_for(lambda: host.host_id not in {h["host_id"] for h in list_hosts()}, timeout=15,
             what="the host to leave once stopped")


def test_scheduler_loss_fails_every_waiting_call_at_once(fresh_cluster):
    fresh_cluster()
    rt = runtime.current()

    @shoal.remote
    def forever():
        time.sleep(600)

    pending = [forever.remote(), forever.remote()]
    other = shoal.core.client.Client.connect(rt.cluster.local_address, rt.cluster.key)
    raised = {}

    def waiting(name, call):
        try:
            call()
        except ClusterLostError:
            raised[name] = time.monotonic()

    calls = {"get": lambda: shoal.get(pending[0]),
             "wait": lambda: shoal.wait(pending, num_returns=2),
             # an object that exists, not yet ready: the scheduler holds the subscription
             # (an unknown id would be answered at once, lost, and the call return)
             "other client": lambda: other.wait_entries([pending[1].id], 1, None, False)}
    threads = [threading.Thread(target=waiting, args=item) for item in calls.items()]
    for t in threads:
        t.start()
    wait_for(lambda: len(rt.client._waiters) >= 2 and other._waiters, what="the calls to wait")
    rt.cluster.scheduler.kill()
    killed = time.monotonic()
    for t in threads:
        t.join(timeout=10)
    other.close()
    assert set(raised) == set(calls)
    slowest = max(raised.values()) - killed
    assert slowest < 1.0
    print(f"\nscheduler SIGKILL: all {len(raised)} waiting calls raised within "
          f"{slowest * 1e3:.0f} ms")


NOTEBOOK_SCRIPT = textwrap.dedent("""
    import ipykernel, os, signal, sys, time
    from IPython.core.interactiveshell import InteractiveShell
    InteractiveShell.instance()                    # what a kernel has: get_ipython() works
    import shoal
    from shoal.core import runtime
    shoal.init(num_cpus=1)

    @shoal.remote
    def one():
        return 1

    assert shoal.get(one.remote()) == 1
    first = runtime.current()
    first.cluster.scheduler.kill()
    try:
        shoal.get(one.remote())
    except shoal.exceptions.ClusterLostError:
        pass                                       # the cell that was running when it died
    wait = time.monotonic() + 10
    while not first.client.lost and time.monotonic() < wait:
        time.sleep(0.01)
    print("next cell:", shoal.get(one.remote(), timeout=60), flush=True)
    assert runtime.current() is not first and runtime.current().cluster is not None
    shoal.shutdown()
""")


@pytest.mark.slow
def test_in_a_notebook_the_next_cell_starts_a_fresh_cluster_and_says_so():
    proc = subprocess.run([sys.executable, "-c", NOTEBOOK_SCRIPT], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "next cell: 1" in proc.stdout
    assert "started a fresh local cluster" in proc.stderr


def test_outside_a_notebook_a_lost_cluster_keeps_raising(fresh_cluster):
    fresh_cluster(num_cpus=1)
    rt = runtime.current()
    rt.cluster.scheduler.kill()
    wait_for(lambda: rt.client.lost, what="the loss to be noticed")
    with pytest.raises(ClusterLostError):
        shoal.put(1)
    assert runtime.current() is rt


def _children(pid: int) -> list:
    """Child pids of a process (each thread lists those it started)."""
    children = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children += [int(p) for p in f.read().split()]
        except OSError:
            pass
    return [p for p in children if alive(p)]


@pytest.mark.slow
def test_a_head_started_with_restart_scheduler_gets_a_new_scheduler(tmp_path):
    """`shoal start --head --restart-scheduler`: a killed scheduler is replaced at
    the same address; the hosts rejoin; drivers connect again and run work."""
    import json
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path)}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "shoal", *args], capture_output=True,
                              text=True, timeout=60, env=env)

    assert cli("start", "--head", "--restart-scheduler", "--num-cpus", "1").returncode == 0
    info = json.loads(next(tmp_path.glob("shoal-cluster-*.json")).read_text())
    try:
        supervisor = info["pid"]
        scheduler = _children(supervisor)[0]
        os.kill(scheduler, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: _children(supervisor) and _children(supervisor)[0] != scheduler,
                 what="a new scheduler")

        def rejoined():
            status = cli("status", "--json")
            return status.returncode == 0 and json.loads(status.stdout)["engines"]

        wait_for(rejoined, timeout=30, interval=0.1, what="the host to rejoin with its engine")
        whole = time.monotonic() - killed
        driver = subprocess.run(
            [sys.executable, "-c", "import shoal; shoal.init(address='auto'); "
                                   "print(shoal.get(shoal.remote(lambda: 42).remote()))"],
            capture_output=True, text=True, timeout=60, env=env)
        assert driver.stdout.strip() == "42", driver.stderr
        print(f"\nhead scheduler SIGKILL: new scheduler with its host rejoined {whole:.2f} s "
              f"after the kill")
    finally:
        assert cli("stop").returncode == 0
    wait_for(lambda: not alive(info["pid"]) and not alive(info["agent_pid"]),
             what="the supervisors to exit")
