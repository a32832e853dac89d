"""Two hot-path workloads that run.py's table lacks, for A/B runs of shoal trees.

    python benchmarks/hotpath_micro.py --base /tmp/base-tree --rounds 5 --json out.json

- `echo_64k`: 1,000 tasks each given a 64 KiB bytes argument and returning it
  (inline both ways: argument and result cross the scheduler), tasks/s.
- `retry_submit`: 3,000 no-op tasks of a function with `retry_exceptions=[OSError]`,
  submitted then gathered, tasks/s.

Each (tree, round) is a fresh process with that tree first on PYTHONPATH and a
2-CPU cluster; trees alternate order between rounds.  Medians of all samples.
"""
from ab import child_main

CHILD = r'''
import json, sys, time
import shoal

@shoal.remote
def echo(b):
    return b

@shoal.remote(retry_exceptions=[OSError])
def noop():
    return None

shoal.init(num_cpus=2)
try:
    shoal.get([echo.remote(b"w" * 65536) for _ in range(50)])
    shoal.get([noop.remote() for _ in range(200)])
    out = {"echo_64k": [], "retry_submit": []}
    for _ in range(int(sys.argv[1])):
        payload = b"x" * 65536
        t = time.perf_counter()
        res = shoal.get([echo.remote(payload) for _ in range(1000)])
        out["echo_64k"].append(1000 / (time.perf_counter() - t))
        assert all(len(r) == 65536 for r in res)
        t = time.perf_counter()
        assert shoal.get([noop.remote() for _ in range(3000)]) == [None] * 3000
        out["retry_submit"].append(3000 / (time.perf_counter() - t))
    print(json.dumps(out))
finally:
    shoal.shutdown()
'''


if __name__ == "__main__":
    child_main(__doc__, CHILD, "workload (tasks/s ↑)", "{:,.0f}", rounds=4, repeat=3)
