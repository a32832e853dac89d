"""What `%%remote` costs a notebook, measured through jupyter_client.

    python benchmarks/kernel_overhead.py [--repeat 200] [--json out.json]

Starts the `shoal` kernel (kernelspec in a temporary directory; a 2-engine
embedded cluster), warms it up, then measures:

- cell overhead: the same trivial cell run as `%%remote` and locally,
  interleaved; time from sending the execute_request to the kernel's idle
  status.  Overhead = median(remote) - median(local).  Target: < 5 ms.
- print latency: a remote loop prints `time.time()` every 0.1 s; for each
  iopub stream message, arrival time minus the printed time (same machine,
  same clock).  Target: < 100 ms.

Issue 5 measured the peers the same way: +6 ms (Ray), +9 ms (ipyparallel
apply_sync), +15 ms (%%px), +12 ms (Dask); prints in 0.20-0.27 s.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from shoal.kernel.testing import KernelSession  # noqa: E402

REMOTE_CELL = "%%remote\n1"
LOCAL_CELL = "1"


def cell_time(k: KernelSession, code: str) -> float:
    run = k.execute(code, timeout=30)
    assert run.reply["status"] == "ok" and run.result == "1", run
    return run.idle_at - run.sent


def print_latencies(k: KernelSession, lines: int) -> list:
    code = ("%%remote\nimport time\n"
            f"for i in range({lines}):\n"
            "    print(repr(time.time()))\n"
            "    time.sleep(0.1)")
    run = k.submit(code)
    k.wait(run, timeout=30 + lines)
    delays = []
    wall_offset = time.time() - time.monotonic()     # received is monotonic: make it wall time
    for msg in run.of_type("stream"):
        for line in msg["content"]["text"].splitlines():
            delays.append(msg["received"] + wall_offset - float(line))
    return delays


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=200, help="cells of each kind")
    ap.add_argument("--lines", type=int, default=30, help="remote prints to time")
    ap.add_argument("--json", default=None, help="write raw samples here")
    args = ap.parse_args()

    with KernelSession("shoal", extra_arguments=["--ShoalKernel.num_cpus=2"]) as k:
        k.execute("%%remote --all\n1", timeout=60)           # cluster up, both engines warm
        for _ in range(20):
            cell_time(k, REMOTE_CELL)
            cell_time(k, LOCAL_CELL)
        remote, local = [], []
        for _ in range(args.repeat):
            remote.append(cell_time(k, REMOTE_CELL))
            local.append(cell_time(k, LOCAL_CELL))
        delays = print_latencies(k, args.lines)

    ms = lambda s: s * 1e3  # noqa: E731
    overhead = statistics.median(remote) - statistics.median(local)
    paired = statistics.median(r - l for r, l in zip(remote, local))
    print(f"cells: {args.repeat} of each, interleaved")
    print(f"  local  %-12s median {ms(statistics.median(local)):6.2f} ms" % repr(LOCAL_CELL))
    print(f"  remote %-12s median {ms(statistics.median(remote)):6.2f} ms" % repr(REMOTE_CELL))
    print(f"  overhead (median remote - median local): {ms(overhead):.2f} ms   [target < 5 ms]")
    print(f"  overhead (median of paired differences): {ms(paired):.2f} ms")
    print(f"remote print -> iopub: median {ms(statistics.median(delays)):.1f} ms, "
          f"max {ms(max(delays)):.1f} ms over {len(delays)} prints   [target < 100 ms]")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"remote_s": remote, "local_s": local, "print_delay_s": delays,
                       "overhead_ms": ms(overhead)}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
