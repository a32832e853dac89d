"""Level 2: a bounded soak.  A mixed workload at full load for SOAK_SECONDS
(default 90; CI keeps it under 5 minutes) while an engine is SIGKILLed every
few seconds.  Memory (RSS of the scheduler, the agent, the driver, and of the
engines together), the cluster's /dev/shm bytes and the fd counts are sampled
every second; the drift between the first and the last third is printed and
must stay within the bounds below.  Only this test's own cluster is measured."""
import os
import random
import signal
import statistics
import threading
import time

import numpy as np
import pytest

import shoal
from shoal.core import runtime
from shoal.util.state import list_engines, list_objects

from conftest import cluster_pids, wait_for

SOAK_SECONDS = float(os.environ.get("SHOAL_SOAK_SECONDS", "90"))
MB = 1 << 20
# Growth allowed between the first and the last third of the run (medians).
BOUNDS = {"scheduler rss": 40 * MB, "agent rss": 20 * MB, "driver rss": 60 * MB,
          "scheduler fds": 10, "agent fds": 10, "driver fds": 10, "shm bytes": 64 * MB}


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))
    except (OSError, StopIteration):
        return 0


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def _shm_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


def _sample(rt) -> dict:
    scheduler, agent = rt.cluster.processes[0].pid, rt.cluster.processes[1].pid
    engines = [e["pid"] for e in rt.client.status()["engines"] if e["pid"]]
    return {"scheduler rss": _rss(scheduler), "agent rss": _rss(agent),
            "driver rss": _rss(os.getpid()), "engines rss": sum(map(_rss, engines)),
            "scheduler fds": _fds(scheduler), "agent fds": _fds(agent),
            "driver fds": _fds(os.getpid()), "shm bytes": _shm_bytes(rt.client.store.store_dir)}


@shoal.remote(max_retries=-1)
def leaf(i):
    return i


@shoal.remote(max_retries=-1)
def combine(a, b):
    return a + b


@shoal.remote(max_retries=-1)
def big(i):
    return np.full(250_000, i, dtype=np.int64)           # 2 MB: in the store


@shoal.remote(max_retries=-1)
def total(a):
    return int(a.sum())


@shoal.remote(max_restarts=-1, max_task_retries=-1)
class Keeper:
    def __init__(self):
        self.items = {}

    def keep(self, k, v):
        self.items[k % 50] = v          # bounded state
        return len(self.items)


def _one_round(keepers, r: int) -> None:
    level = [leaf.remote(i) for i in range(64)]
    while len(level) > 1:
        level = [combine.remote(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    bigs = [total.remote(big.remote(i)) for i in range(8)]
    put = shoal.put(np.ones(MB // 8 * 2))
    kept = [k.keep.remote(r * 10 + j, "x" * 1000) for k in keepers for j in range(10)]
    assert shoal.get(level[0], timeout=120) == sum(range(64))
    assert shoal.get(bigs, timeout=120) == [250_000 * i for i in range(8)]
    assert shoal.get(total.remote(put), timeout=120) == MB // 8 * 2
    assert all(1 <= n <= 50 for n in shoal.get(kept, timeout=120))


@pytest.mark.slow
@pytest.mark.timeout(SOAK_SECONDS + 240)
def test_soak_with_engine_kills_stays_within_bounds(fresh_cluster):
    fresh_cluster()
    cluster_pids()
    rt = runtime.current()
    keepers = [Keeper.remote() for _ in range(2)]
    stop = threading.Event()
    samples, kills = [], []

    def chaos():
        rng = random.Random(14)
        while not stop.wait(rng.uniform(2.0, 4.0)):
            victims = [e for e in list_engines() if e["pid"]]
            if victims:
                victim = rng.choice(victims)
                try:
                    os.kill(victim["pid"], signal.SIGKILL)
                    kills.append(victim["engine_id"])
                except ProcessLookupError:
                    pass

    def sampler():
        while not stop.wait(1.0):
            try:
                samples.append(_sample(rt))
            except Exception:            # a status call racing a kill: skip this sample
                pass

    threads = [threading.Thread(target=chaos, name="soak-chaos"),
               threading.Thread(target=sampler, name="soak-sampler")]
    for t in threads:
        t.start()
    rounds, started = 0, time.monotonic()
    try:
        while time.monotonic() - started < SOAK_SECONDS:
            _one_round(keepers, rounds)
            rounds += 1
    finally:
        stop.set()
        for t in threads:
            t.join()
    del keepers
    wait_for(lambda: not list_objects(), timeout=30, what="every object to be freed")
    wait_for(lambda: not rt.client.store.object_files(), timeout=30,
             what="the store to hold no object files")

    third = max(1, len(samples) // 3)
    first, last = samples[:third], samples[-third:]
    report, over = [], []
    for key in samples[0]:
        a = statistics.median(s[key] for s in first)
        b = statistics.median(s[key] for s in last)
        unit = (lambda v: f"{v / MB:,.1f} MB") if "fds" not in key else (lambda v: f"{v:g}")
        report.append(f"  {key:<14} {unit(a):>10} -> {unit(b):>10}  drift {unit(b - a)}")
        if key in BOUNDS and b - a > BOUNDS[key]:
            over.append(f"{key} grew by {unit(b - a)} (bound {unit(BOUNDS[key])})")
    print(f"\nsoak: {rounds} rounds in {time.monotonic() - started:.0f} s, {len(kills)} engines "
          f"killed, {len(samples)} samples\n" + "\n".join(report))
    assert len(kills) >= SOAK_SECONDS / 6, "too few kills to mean anything"
    assert len(samples) >= 10
    assert not over, "; ".join(over)
