"""What relaying a result through the scheduler costs, against one direct hop.

    python benchmarks/relay_hop.py [--n 300]

- `relay`: a task returns `time.perf_counter()` as its last act (CLOCK_MONOTONIC,
  shared by every process on the machine); the driver reads the clock as `get`
  returns.  The difference is the engine's result send, the scheduler's wake,
  decode, bookkeeping and push, and the driver's wake: the whole way a result
  takes today (engine -> scheduler -> driver).
- `direct`: one framed message (shoal's own Connection, a Unix socket) from one
  process to another that waits for it, half a ping-pong: what a result sent
  straight from engine to driver would pay for the hop itself.

One task at a time with a 2 ms pause between them, so each result finds the
scheduler and driver idle, as a round trip does.  Medians, with the load.
"""
import argparse
import os
import socket
import statistics
import time

import shoal
from shoal.protocol import messages as m
from shoal.protocol.connection import Connection


@shoal.remote
def stamp():
    return time.perf_counter()


def relay(n: int) -> list:
    shoal.init(num_cpus=1)
    try:
        for _ in range(20):
            shoal.get(stamp.remote())
        out = []
        for _ in range(n):
            ref = stamp.remote()
            ended = shoal.get(ref)
            out.append((time.perf_counter() - ended) * 1e6)
            time.sleep(0.002)
        return out
    finally:
        shoal.shutdown()


def direct(n: int) -> list:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    msg = m.ObjectsReady(entries=[m.ObjectEntry("abcdef.t1/0", inline=b"x" * 20, size=20)])
    pid = os.fork()
    if pid == 0:                      # the echoing peer: ours, ended by the loop's end
        a.close()
        peer = Connection(b)
        for _ in range(n + 20):
            peer.send(peer.recv())
        os._exit(0)
    b.close()
    conn, out = Connection(a), []
    for i in range(n + 20):
        t = time.perf_counter()
        conn.send(msg)
        conn.recv()
        if i >= 20:
            out.append((time.perf_counter() - t) / 2 * 1e6)
        time.sleep(0.002)
    os.waitpid(pid, 0)
    conn.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=300)
    args = p.parse_args()
    load = os.getloadavg()[0]
    r, d = relay(args.n), direct(args.n)
    q = lambda xs: statistics.quantiles(xs, n=4)          # noqa: E731
    print(f"relay  (task end -> value in the driver's hand): median {statistics.median(r):.0f} µs "
          f"(p25 {q(r)[0]:.0f}, p75 {q(r)[2]:.0f})")
    print(f"direct (one framed hop between two processes):   median {statistics.median(d):.0f} µs "
          f"(p25 {q(d)[0]:.0f}, p75 {q(d)[2]:.0f})")
    print(f"load average (1 min) {load:.2f} -> {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
