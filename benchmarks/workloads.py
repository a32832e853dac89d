"""Benchmark workloads, written once against the adapter primitives (adapters/base.py).

A workload is a function registered with @workload. It receives an adapter and
returns {metric: value}. Unless `fresh=True`, the adapter is already started and
warmed up; a `fresh` workload starts the cluster itself (the harness shuts it down).
Every workload checks its results: a fast wrong answer is not a result.

Task functions live at module level so every framework can ship them to its
workers by reference (the harness puts this directory on PYTHONPATH).
numpy is imported inside the workloads so the parent runner does not need it.
"""
import os
import time
from dataclasses import dataclass, field
from time import perf_counter
from typing import Callable, Dict, Tuple

NUM_CPUS = 2
LOWER, HIGHER = "lower", "higher"  # which direction is better, per metric
MiB = 1 << 20


@dataclass
class Workload:
    name: str
    fn: Callable
    metrics: Dict[str, Tuple[str, str]]  # metric -> (unit, LOWER | HIGHER)
    fresh: bool = False  # needs a cluster start per repetition (parent uses a new process each time)
    timeout: float = 120.0  # seconds per repetition before the parent kills the run
    # Optional adapter methods beyond the core ones (e.g. "actor"); frameworks without them
    # report n/a instead of failing.
    requires: Tuple[str, ...] = field(default=())


WORKLOADS: Dict[str, Workload] = {}


def workload(name, metrics, **kw):
    def register(fn):
        WORKLOADS[name] = Workload(name, fn, metrics, **kw)
        return fn
    return register


# ---- task functions (run on the workers) -------------------------------------------------

def echo(x):
    return x


def add(a, b):
    return a + b


def array_sum(a):
    return float(a.sum())


def getpid():
    return os.getpid()


def sleep(seconds):
    time.sleep(seconds)
    return seconds


# ---- workloads ------------------------------------------------------------------------------

@workload("start", {"start": ("s", LOWER)}, fresh=True, timeout=180)
def start(a):
    # From nothing (framework not yet imported in this process) to one task's result.
    t0 = perf_counter()
    a.start(NUM_CPUS)
    assert a.get(a.remote(add)(1, 2)) == 3
    return {"start": perf_counter() - t0}


@workload("latency", {"latency": ("ms/call", LOWER)})
def latency(a, n=500):
    f = a.remote(echo)
    t0 = perf_counter()
    for i in range(n):
        assert a.get(f(i)) == i
    return {"latency": (perf_counter() - t0) / n * 1e3}


@workload("throughput", {"throughput": ("tasks/s", HIGHER)})
def throughput(a, n=5000):
    f = a.remote(echo)
    t0 = perf_counter()
    out = a.get([f(i) for i in range(n)])
    elapsed = perf_counter() - t0
    assert out == list(range(n))
    return {"throughput": n / elapsed}


@workload("numpy_arg", {"numpy_arg": ("s", LOWER)})
def numpy_arg(a, n=300):
    import numpy as np
    arr = np.arange(MiB // 8, dtype=np.float64)  # 1 MiB, passed by value every call
    expect = float(arr.sum())
    f = a.remote(array_sum)
    t0 = perf_counter()
    out = a.get([f(arr) for _ in range(n)])
    elapsed = perf_counter() - t0
    assert out == [expect] * n
    return {"numpy_arg": elapsed}


@workload("sleep_efficiency", {"sleep_time": ("s", LOWER), "efficiency": ("ideal/actual", HIGHER)})
def sleep_efficiency(a, n=200, seconds=0.01):
    f = a.remote(sleep)
    t0 = perf_counter()
    out = a.get([f(seconds) for _ in range(n)])
    elapsed = perf_counter() - t0
    assert out == [seconds] * n
    ideal = n * seconds / NUM_CPUS
    return {"sleep_time": elapsed, "efficiency": ideal / elapsed}


@workload("tree_reduce", {"tree_reduce": ("s", LOWER)})
def tree_reduce(a, leaves=1024):
    # Refs are passed straight into the next level: tests task->task data flow.
    leaf, pair = a.remote(echo), a.remote(add)
    t0 = perf_counter()
    refs = [leaf(i) for i in range(leaves)]
    while len(refs) > 1:
        refs = [pair(refs[i], refs[i + 1]) for i in range(0, len(refs), 2)]
    total = a.get(refs[0])
    elapsed = perf_counter() - t0
    assert total == leaves * (leaves - 1) // 2, total
    return {"tree_reduce": elapsed}


@workload("put_get_200mb", {"put": ("ms", LOWER), "get": ("ms", LOWER)}, requires=("put",))
def put_get_200mb(a):
    import numpy as np
    arr = np.arange(200 * MiB // 8, dtype=np.float64)
    t0 = perf_counter()
    ref = a.put(arr)
    t1 = perf_counter()
    out = a.get(ref)
    t2 = perf_counter()
    assert out.dtype == arr.dtype and out.shape == arr.shape and np.array_equal(out, arr)
    del out, ref  # free the stored copy before the next repetition
    return {"put": (t1 - t0) * 1e3, "get": (t2 - t1) * 1e3}


def warmup(a):
    """Untimed: make sure every worker is up and has run a task before measuring, and that
    tasks really run in worker processes (in-driver execution would make the comparison unfair)."""
    f = a.remote(getpid)
    pids = a.get([f() for _ in range(4 * NUM_CPUS)])
    assert os.getpid() not in pids, "tasks ran in the driver process"


# ---- actors (frameworks whose adapter has `actor` only) ---------------------------------------

class Counter:
    def __init__(self, start=0):
        self.n = start

    def incr(self):
        self.n += 1
        return self.n


@workload("actor_latency", {"actor_latency": ("ms/call", LOWER)}, requires=("actor",))
def actor_latency(a, n=500):
    counter = a.actor(Counter)()
    a.get(counter.incr.remote())
    t0 = perf_counter()
    for i in range(n):
        assert a.get(counter.incr.remote()) == i + 2
    return {"actor_latency": (perf_counter() - t0) / n * 1e3}


@workload("actor_throughput", {"actor_throughput": ("calls/s", HIGHER)}, requires=("actor",))
def actor_throughput(a, n=5000):
    counter = a.actor(Counter)()
    a.get(counter.incr.remote())
    t0 = perf_counter()
    out = a.get([counter.incr.remote() for _ in range(n)])
    elapsed = perf_counter() - t0
    assert out == list(range(2, n + 2))            # one caller: calls run in order
    return {"actor_throughput": n / elapsed}


@workload("actors_20", {"actors_20": ("s", LOWER)}, requires=("actor",))
def actors_20(a, n=20):
    # Creating 20 actors on 2 CPUs until every one has answered.
    cls = a.actor(Counter)
    t0 = perf_counter()
    actors = [cls(i) for i in range(n)]
    out = a.get([c.incr.remote() for c in actors])
    elapsed = perf_counter() - t0
    assert out == [i + 1 for i in range(n)]
    return {"actors_20": elapsed}


# ---- object store -------------------------------------------------------------------------

def make_array(nbytes):
    import numpy as np
    return np.ones(nbytes // 8)


def table_sum(table):
    import pyarrow.compute as pc
    return float(pc.sum(table.column("x")).as_py())


@workload("put_get_1gb", {"put": ("ms", LOWER), "get": ("ms", LOWER)}, timeout=300, requires=("put",))
def put_get_1gb(a):
    import numpy as np
    arr = np.ones(1024 * MiB // 8)
    t0 = perf_counter()
    ref = a.put(arr)
    t1 = perf_counter()
    out = a.get(ref)
    t2 = perf_counter()
    assert out.shape == arr.shape and out[-1] == 1.0
    del out, ref
    return {"put": (t1 - t0) * 1e3, "get": (t2 - t1) * 1e3}


@workload("task_returns_200mb", {"task_returns_200mb": ("ms", LOWER)})
def task_returns_200mb(a):
    f = a.remote(make_array)
    t0 = perf_counter()
    out = a.get(f(200 * MiB))
    elapsed = perf_counter() - t0
    assert out.nbytes == 200 * MiB and out[0] == 1.0
    del out
    return {"task_returns_200mb": elapsed * 1e3}


@workload("arrow_10m_rows", {"put": ("ms", LOWER), "two_tasks": ("ms", LOWER)}, timeout=300, requires=("put",))
def arrow_10m_rows(a):
    import numpy as np
    import pyarrow as pa
    table = pa.table({"x": np.arange(10_000_000, dtype=np.int64), "y": np.ones(10_000_000)})
    expect = float(table.column("x").to_numpy().sum())
    f = a.remote(table_sum)
    t0 = perf_counter()
    ref = a.put(table)
    t1 = perf_counter()
    out = a.get([f(ref), f(ref)])
    t2 = perf_counter()
    assert out == [expect, expect]
    return {"put": (t1 - t0) * 1e3, "two_tasks": (t2 - t1) * 1e3}


@workload("transfer_500mb", {"transfer": ("GB/s", HIGHER)}, requires=("second_host",),
          timeout=300)
def transfer_500mb(a):
    # A second host (its own agent and store) on this machine; the driver reads
    # an object made there, so it moves host to host.
    f = a.second_host(make_array)
    ref = f(500 * MiB)
    a.wait_ready(ref)
    t0 = perf_counter()
    out = a.get(ref)
    elapsed = perf_counter() - t0
    assert out.nbytes == 500 * MiB and out[-1] == 1.0
    return {"transfer": 500 * MiB / elapsed / 1e9}


@workload("put_del_loop", {"peak_over_limit": ("peak/limit", LOWER), "loop": ("s", LOWER)},
          requires=("store_usage",), timeout=300)
def put_del_loop(a, n=50):
    # 50 puts of 100 MB, each ref dropped at once: the store must not grow.
    import numpy as np
    peak = 0
    t0 = perf_counter()
    for i in range(n):
        ref = a.put(np.full(100 * MiB // 8, i, dtype=np.float64))
        del ref
        used, limit = a.store_usage()
        peak = max(peak, used)
    return {"peak_over_limit": peak / limit, "loop": perf_counter() - t0}
