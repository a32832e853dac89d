"""What `%%remote` and routed output cost on the Ray backend, through a real kernel.

    SHOAL_RAY_PYTHON=/path/to/python-with-ray python benchmarks/ray_cell_costs.py [--repeat 50]

Starts the shoal kernel in the Ray interpreter (tests/ray_env.py finds it) on
a local Ray of its own (address "ray:local", 2 CPUs), warms it up, then
measures, each as a median of interleaved runs (time from execute_request to
the kernel's idle status):

- cell: `%%remote\\n1` against the local cell `1` (what each cell costs on Ray);
- prints: a `%%remote` cell printing N lines, and a plain task printing N
  lines under the cell that waits for it, against the same code printing
  nothing (what routing the lines costs);
- print latency: a remote loop prints `time.time()` every 0.1 s; arrival
  on iopub minus the printed time (the lines must still come live).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from kernel_overhead import print_latencies  # noqa: E402
from ray_env import ray_env, ray_python  # noqa: E402
from shoal.kernel.kernelspec import write_kernel_spec  # noqa: E402
from shoal.kernel.testing import KernelSession  # noqa: E402

SETUP = """
import shoal
@shoal.remote
def talk(n):
    for i in range(n):
        print("line", i)
"""


def timed(k: KernelSession, code: str) -> float:
    run = k.execute(code, timeout=120)
    assert run.reply["status"] == "ok", run
    return run.idle_at - run.sent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=50, help="runs of each cell")
    ap.add_argument("--lines", type=int, default=1000, help="lines the printing cells print")
    args = ap.parse_args()
    python = ray_python()
    if python is None:
        print("no Python with Ray: set SHOAL_RAY_PYTHON", file=sys.stderr)
        return 1
    n = args.lines
    cells = {
        "local 1": "1",
        "%%remote 1": "%%remote\n1",
        f"%%remote, {n} prints": f"%%remote\nfor i in range({n}):\n    print('line', i)",
        "%%remote, no prints": f"%%remote\nfor i in range({n}):\n    pass",
        f"task, {n} prints": f"shoal.get(talk.remote({n}))",
        "task, no prints": "shoal.get(talk.remote(0))",
    }
    k = KernelSession("shoal-ray", extra_arguments=["--ShoalKernel.address=ray:local",
                                                    "--ShoalKernel.num_cpus=2"],
                      env=ray_env(), startup_timeout=90)
    write_kernel_spec(os.path.join(k.kernel_dirs[0], "shoal-ray"), python=python)
    with k:
        timed(k, "%%remote\n1")
        timed(k, SETUP)
        samples: dict = {name: [] for name in cells}
        for round_ in range(args.repeat + 5):
            for name, code in cells.items():
                t = timed(k, code)
                if round_ >= 5:                              # warm-up rounds left out
                    samples[name].append(t)
        delays = print_latencies(k, 30)
    ms = lambda s: s * 1e3  # noqa: E731
    for name, values in samples.items():
        print(f"  {name:<24} median {ms(statistics.median(values)):8.2f} ms")
    print(f"remote print -> iopub: median {ms(statistics.median(delays)):.1f} ms, "
          f"max {ms(max(delays)):.1f} ms over {len(delays)} prints")
    return 0


if __name__ == "__main__":
    sys.exit(main())
