"""Level 2: the fault matrix (docs/reliability.md is its table).

Each row kills (SIGKILL) or hangs (SIGSTOP) one process kind at a random
moment of a mixed workload -- a tree of dependent tasks, an actor with state
and restarts, large objects in the store -- and checks what the user sees,
that every result is right, and how long recovery takes (printed, never
asserted as a speed).  Rows covered elsewhere: scheduler SIGKILL and agent
SIGKILL with measurements (test_supervision.py), engine SIGKILL chaos and a
killed driver (test_reliability.py), kernel SIGKILL (test_kernel_lifecycle.py),
a host cut off in a network namespace (test_multihost.py), a full store
(test_objects.py)."""
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import shoal
from shoal.core import runtime
from shoal.exceptions import GetTimeoutError, TaskCancelledError
from shoal.util.state import list_engines, list_hosts

from conftest import alive, cluster_pids, wait_for

HEARTBEAT = "2"      # seconds: a hung agent or scheduler is noticed quickly in these tests


@shoal.remote(max_retries=-1)
def leaf(i):
    time.sleep(0.02)
    return i


@shoal.remote(max_retries=-1)
def combine(a, b):
    return a + b


@shoal.remote(max_retries=-1)
def big(i):
    return np.full(200_000, i, dtype=np.int64)          # 1.6 MB: in the store


@shoal.remote(max_retries=-1)
def total(a):
    return int(a.sum())


@shoal.remote(max_restarts=-1, max_task_retries=-1)
class Tally:
    def __init__(self):
        self.n = 0

    def add(self, k):
        self.n += k
        return self.n


class Workload:
    """The mixed workload, submitted at once; check() waits and verifies."""

    def __init__(self, leaves: int = 64, bigs: int = 8, adds: int = 20) -> None:
        self.leaves = leaves
        level = [leaf.remote(i) for i in range(leaves)]
        while len(level) > 1:
            level = [combine.remote(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)] \
                + (level[-1:] if len(level) % 2 else [])
        self.root = level[0]
        self.bigs = [total.remote(big.remote(i)) for i in range(bigs)]
        self.tally = Tally.remote()
        self.adds = [self.tally.add.remote(1) for _ in range(adds)]

    def check(self, timeout: float = 120) -> None:
        assert shoal.get(self.root, timeout=timeout) == sum(range(self.leaves))
        assert shoal.get(self.bigs, timeout=timeout) == [200_000 * i for i in range(len(self.bigs))]
        counts = shoal.get(self.adds, timeout=timeout)
        # An actor restarted mid-way starts again from 0 (Ray's contract): counts rise
        # by one between restarts, and every call returns.
        assert len(counts) == len(self.adds) and all(c >= 1 for c in counts)
        assert all(c in (1, before + 1) for before, c in zip(counts, counts[1:])), counts
        # The actor still answers: with the state of its last call, or from 0 if the
        # fault came after that call and restarted it (a fault after the burst is likely:
        # its calls go straight to the actor and finish within milliseconds).
        assert shoal.get(self.tally.add.remote(0), timeout=timeout) in (0, counts[-1])


def _random_moment(seed: int) -> None:
    time.sleep(random.Random(seed).uniform(0.05, 0.5))


@pytest.fixture
def quick_heartbeats(monkeypatch):
    monkeypatch.setenv("SHOAL_HEARTBEAT_TIMEOUT", HEARTBEAT)


def test_engine_sigkill_at_a_random_moment(fresh_cluster):
    fresh_cluster()
    cluster_pids()                  # its engines have joined
    work = Workload()
    _random_moment(1)
    victim = random.Random(1).choice([e for e in list_engines() if e["pid"]])
    os.kill(victim["pid"], signal.SIGKILL)
    t = time.monotonic()
    work.check()
    print(f"\nengine SIGKILL: workload right, done {time.monotonic() - t:.2f} s after the kill")


@pytest.mark.slow
def test_engine_sigstop_hangs_its_task_until_force_cancelled(fresh_cluster):
    """A hung engine is not detected (as in Ray): its task waits, and so may the
    one task pipelined behind it; cancel(force=True) kills the engine, the task
    queued behind it runs elsewhere, and the agent starts a replacement."""
    fresh_cluster()
    cluster_pids()

    @shoal.remote(max_retries=0)
    def stuck():
        time.sleep(0.5)
        return "never seen"

    ref = stuck.remote()
    engine = wait_for(lambda: next((e for e in list_engines() if e["task_id"]), None),
                      what="the task to start")
    os.kill(engine["pid"], signal.SIGSTOP)
    try:
        work = Workload(leaves=16, bigs=4, adds=5)
        with pytest.raises(GetTimeoutError):
            shoal.get(ref, timeout=1)
        shoal.cancel(ref, force=True)
        t = time.monotonic()
        with pytest.raises(TaskCancelledError):
            shoal.get(ref, timeout=30)
        work.check()
        wait_for(lambda: not alive(engine["pid"]), what="the hung engine to be killed")
        print(f"\nengine SIGSTOP: after the force-cancel, workload right in "
              f"{time.monotonic() - t:.2f} s")
    finally:
        if alive(engine["pid"]):
            os.kill(engine["pid"], signal.SIGKILL)


def test_agent_sigkill_at_a_random_moment(fresh_cluster):
    fresh_cluster()
    cluster_pids()                  # its engines have joined
    rt = runtime.current()
    work = Workload()
    _random_moment(2)
    agent = rt.cluster.processes[1].pid
    os.kill(agent, signal.SIGKILL)
    t = time.monotonic()
    work.check()
    assert rt.cluster.processes[1].pid != agent
    print(f"\nagent SIGKILL: workload right, done {time.monotonic() - t:.2f} s after the kill")


@pytest.mark.slow
def test_agent_sigstop_is_cut_off_then_rejoins(fresh_cluster, quick_heartbeats):
    """A hung agent is silent: after the heartbeat timeout the scheduler drops it
    (its engines' tasks are retried); resumed, it finds itself cut off, exits,
    and its owner starts a new one that rejoins with the same host id."""
    fresh_cluster()
    cluster_pids()                  # its engines have joined
    rt = runtime.current()
    work = Workload()
    _random_moment(3)
    agent = rt.cluster.processes[1].pid
    os.kill(agent, signal.SIGSTOP)
    t = time.monotonic()
    wait_for(lambda: not list_engines() or all(e["host_id"] != rt.cluster.host_id
                                               for e in list_engines()),
             timeout=15, what="the scheduler to drop the silent agent's engines")
    dropped = time.monotonic() - t
    os.kill(agent, signal.SIGCONT)
    work.check()
    wait_for(lambda: rt.cluster.processes[1].pid != agent, timeout=15, what="a new agent")
    assert [h["host_id"] for h in list_hosts()] == [rt.cluster.host_id]
    print(f"\nagent SIGSTOP: dropped after {dropped:.2f} s, workload right "
          f"{time.monotonic() - t:.2f} s after the stop")


@pytest.mark.slow
def test_scheduler_sigstop_pauses_the_cluster_and_it_resumes(fresh_cluster, quick_heartbeats):
    """A hung scheduler is a paused cluster: calls wait (nothing fails while it is
    only paused); agents that hear nothing for the heartbeat timeout leave and
    their owners start new ones, which rejoin when it resumes."""
    fresh_cluster()
    cluster_pids()                  # its engines have joined
    rt = runtime.current()
    work = Workload()
    _random_moment(4)
    rt.cluster.scheduler.send_signal(signal.SIGSTOP)
    t = time.monotonic()
    time.sleep(3)          # the fault itself: a pause longer than the heartbeat timeout
    rt.cluster.scheduler.send_signal(signal.SIGCONT)
    work.check()
    assert rt.client.lost is None
    print(f"\nscheduler SIGSTOP 3 s: workload right {time.monotonic() - t:.2f} s after the "
          f"stop; agent restarts: {rt.cluster.agent.generation}")


DRIVER = textwrap.dedent("""
    import sys, time, shoal
    shoal.init(address=sys.argv[1])

    @shoal.remote
    def chatty(i):
        for _ in range(200):
            print("x" * 200)                     # output the driver must take in
        return i

    refs = [chatty.remote(i) for i in range(40)]
    print("submitted", flush=True)
    sys.stdin.readline()
    print("got", sum(shoal.get(refs, timeout=120)), flush=True)
""")


@pytest.mark.slow
def test_a_stopped_driver_is_a_slow_consumer_that_harms_no_one(fresh_cluster):
    """A driver (or kernel) that stops reading: its results and output wait for it;
    other drivers are served meanwhile; resumed, it gets everything."""
    ctx = fresh_cluster()
    cluster_pids()
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, ctx.address], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in driver.stdout:
            # The tasks' forwarded output may land between print's text and its newline.
            if "submitted" in line:
                break
        assert driver.poll() is None, "the driver died"
        driver.send_signal(signal.SIGSTOP)
        work = Workload(leaves=16, bigs=4, adds=5)
        t = time.monotonic()
        work.check()
        served = time.monotonic() - t
        driver.send_signal(signal.SIGCONT)
        out, _ = driver.communicate("go\n", timeout=120)
        assert f"got {sum(range(40))}" in out
        print(f"\ndriver SIGSTOP: others served in {served:.2f} s; the driver got all its "
              f"results on resuming")
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
