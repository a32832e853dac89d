"""Two hot-path workloads that run.py's table lacks, for A/B runs of shoal trees.

    python benchmarks/hotpath_micro.py --base /tmp/base-tree --rounds 5 --json out.json

- `echo_64k`: 1,000 tasks each given a 64 KiB bytes argument and returning it
  (inline both ways: argument and result cross the scheduler), tasks/s.
- `retry_submit`: 3,000 no-op tasks of a function with `retry_exceptions=[OSError]`,
  submitted then gathered, tasks/s.

Each (tree, round) is a fresh process with that tree first on PYTHONPATH and a
2-CPU cluster; trees alternate order between rounds.  Medians of all samples.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ab import interleave, report

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


def run(tree: Path, repeat: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run([sys.executable, "-c", CHILD, str(repeat)], env=env, cwd=tree,
                          capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True)
    p.add_argument("--new", default=str(Path(__file__).resolve().parent.parent))
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json")
    args = p.parse_args()
    trees = {"base": Path(args.base).resolve(), "new": Path(args.new).resolve()}
    samples, loads = interleave(trees, args.rounds, lambda tree: run(tree, args.repeat))
    medians = report(samples, loads, "workload (tasks/s ↑)", "{:,.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "trees": {k: str(v) for k, v in trees.items()}, "rounds": args.rounds,
            "repeat": args.repeat, "cpus": os.cpu_count(), "loads": loads,
            "medians": medians, "samples": samples}, indent=1))


if __name__ == "__main__":
    main()
