"""CPU time per task of two shoal trees, interleaved: a measure a loaded machine blurs less.

    python benchmarks/cpu_cost.py --base /tmp/base-tree --rounds 6 --json out.json

On a shared 2-CPU machine, wall-clock rates swing 2x with the load of other
users; the CPU seconds that the driver, scheduler, agent and engines spend on
a workload swing far less.  For each workload this reports wall time and the
CPU time of the whole cluster (the driver and every process below it) per task,
in microseconds:

- `round_trip`: 300 x `get(f.remote(i))`, one at a time.
- `noop_burst`: 3,000 no-op tasks submitted, then gathered.
- `actor_burst`: 3,000 calls to one actor submitted, then gathered.
- `sleep_10ms`: 200 tasks sleeping 10 ms on 2 CPUs (wall: efficiency matters).

Each (tree, round) is a fresh process with that tree first on PYTHONPATH;
trees alternate order between rounds (ab.interleave).  Medians of all samples.
"""
from ab import child_main

CHILD = r'''
import json, sys, time
import psutil
import shoal

@shoal.remote
def echo(x):
    return x

@shoal.remote
def nap(s):
    time.sleep(s)
    return s

@shoal.remote
class Counter:
    def __init__(self):
        self.n = 0
    def incr(self):
        self.n += 1
        return self.n

def cluster_cpu():
    me = psutil.Process()
    total = 0.0
    for p in [me] + me.children(recursive=True):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total

def measure(out, name, n, fn):
    c, t = cluster_cpu(), time.perf_counter()
    fn()
    wall, cpu = time.perf_counter() - t, cluster_cpu() - c
    out.setdefault(name + ":wall_us", []).append(wall / n * 1e6)
    out.setdefault(name + ":cpu_us", []).append(cpu / n * 1e6)

shoal.init(num_cpus=2)
try:
    counter = Counter.remote()
    shoal.get([echo.remote(i) for i in range(300)] + [counter.incr.remote()])
    out = {}
    for _ in range(int(sys.argv[1])):
        def rt():
            for i in range(300):
                assert shoal.get(echo.remote(i)) == i
        measure(out, "round_trip", 300, rt)
        measure(out, "noop_burst", 3000,
                lambda: shoal.get([echo.remote(i) for i in range(3000)]))
        measure(out, "actor_burst", 3000,
                lambda: shoal.get([counter.incr.remote() for _ in range(3000)]))
        measure(out, "sleep_10ms", 200,
                lambda: shoal.get([nap.remote(0.01) for _ in range(200)]))
    print(json.dumps(out))
finally:
    shoal.shutdown()
'''


if __name__ == "__main__":
    child_main(__doc__, CHILD, "per task (µs ↓)", "{:,.0f}", rounds=6, repeat=2)
