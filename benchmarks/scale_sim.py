"""Scale by simulation: the pure scheduler driven with thousands of simulated engines.

No processes and no sockets: hosts, engines and a driver are connection names
given to `SchedulerState.handle`, and every `ExecuteTask` the scheduler emits is
answered at once with a `TaskFinished` (engines are infinitely fast), so what is
timed is the scheduler's own work per task as the cluster grows.  For each size
the driver submits `tasks_per_engine` tasks per engine in batches, engines finish
what they were sent, and the run ends when every result has been pushed.

    python benchmarks/scale_sim.py [--engines 10,100,1000] [--hosts-per 10] [--json out.json]

Reported per cluster size: scheduling decisions (ExecuteTask sent) per second
and microseconds of scheduler time per task (submit + place + finish + push),
wall clock and CPU (the CPU figure is the steadier one on a shared machine).
`--batch` at or above the engine count keeps every engine busy with a backlog
(the case where placing a task used to walk every host).

As in the real scheduler process, the messages of one read (a driver's batch of
submissions; one engine's reports) are handled together and placement runs once
after them (`batch_placement`; `--per-message` places after every message, as
the state machine does on its own).  Engines report a run time (`--ran-for`,
seconds; 0: none), so with short tasks the scheduler queues several behind each
running one (policy.QueueRoom), as for a burst of tiny tasks.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

from shoal.protocol import messages as m
from shoal.protocol.messages import ObjectEntry
from shoal.protocol.serialization import dumps
from shoal.scheduler.state import SchedulerState

RESULT = dumps(1)


def build(engines: int, engines_per_host: int, per_message: bool = False) -> SchedulerState:
    s = SchedulerState("sim", "/tmp/shoal-sim", clock=time.monotonic)
    s.batch_placement = not per_message
    s.handle("drv", m.ClientHello(client_id="d", kind="driver", pid=1, hostname="drv"))
    hosts = max(1, engines // engines_per_host)
    for h in range(hosts):
        host = f"h{h}"
        s.handle(f"agent-{host}", m.RegisterHost(
            host_id=host, hostname=host, resources={"CPU": engines_per_host, "GPU": 0},
            gpu_ids=[], store_dir="/dev/shm/sim", spill_dir="/tmp/sim", store_limit=1 << 30,
            object_address="127.0.0.1:1", pid=2))
        for e in range(engines_per_host):
            eid = f"{host}.e{e}"
            s.handle(eid, m.ClientHello(client_id=eid, kind="engine", pid=10 + e,
                                        hostname=host, host_id=host, engine_id=eid))
    s.handle("drv", m.RegisterFunction(func_id="f", name="f", blob=b"fn"))
    s.take_output()
    return s


def run(engines: int, engines_per_host: int, tasks_per_engine: int, batch: int,
        ran_for: float = 0.0, per_message: bool = False) -> dict:
    s = build(engines, engines_per_host, per_message)
    total = engines * tasks_per_engine
    submitted = finished = decisions = 0
    inflight: list = []            # (engine conn, task id) sent, not yet finished
    t0, c0 = time.perf_counter(), time.process_time()
    while finished < total:
        for _ in range(min(batch, total - submitted)):
            tid = f"t{submitted}"
            s.handle("drv", m.SubmitTask(task_id=tid, func_id="f", name="f", args=b"", deps=[],
                                         nested=[], return_ids=[f"{tid}/0"],
                                         resources={"CPU": 1.0}))
            submitted += 1
        for conn, msg in s.take_output():
            if isinstance(msg, m.ExecuteTask):
                decisions += 1
                inflight.append((conn, msg.task_id))
        done, inflight = inflight, []
        by_engine: dict = {}
        for conn, tid in done:                   # each engine's reports: one read, in order
            by_engine.setdefault(conn, []).append(tid)
        for conn, tids in by_engine.items():
            for tid in tids:
                s.handle(conn, m.TaskFinished(task_id=tid, results=[
                    ObjectEntry(f"{tid}/0", inline=RESULT)], ran_for=ran_for))
            finished += len(tids)
            for c, msg in s.take_output():
                if isinstance(msg, m.ExecuteTask):
                    decisions += 1
                    inflight.append((c, msg.task_id))
        # the driver has its results and drops them, so the object table stays small
        s.handle("drv", m.RefUpdates(ops=[(f"{tid}/0", -1) for _, tid in done]))
        s.take_output()
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    return {"engines": engines, "hosts": max(1, engines // engines_per_host), "tasks": total,
            "seconds": elapsed, "decisions_per_s": decisions / elapsed,
            "us_per_task": elapsed / total * 1e6,
            # CPU time: on a shared machine, what others run barely moves it
            "cpu_us_per_task": cpu / total * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", default="10,100,1000")
    ap.add_argument("--hosts-per", type=int, default=10, help="engines per simulated host")
    ap.add_argument("--tasks-per-engine", type=int, default=20)
    ap.add_argument("--batch", type=int, default=500, help="tasks submitted per driver batch")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--ran-for", type=float, default=0.0,
                    help="the run time engines report, seconds (0: none)")
    ap.add_argument("--per-message", action="store_true",
                    help="place after every message, not once per read")
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = []
    for n in (int(x) for x in args.engines.split(",")):
        runs = [run(n, args.hosts_per, args.tasks_per_engine, args.batch, args.ran_for,
                    args.per_message) for _ in range(args.repeat)]
        row = dict(runs[0])
        for key in ("seconds", "decisions_per_s", "us_per_task", "cpu_us_per_task"):
            row[key] = statistics.median(r[key] for r in runs)
        rows.append(row)
        print(f"{n:>6} engines on {row['hosts']:>4} hosts: {row['tasks']:>7,} tasks, "
              f"{row['decisions_per_s']:>10,.0f} decisions/s, {row['us_per_task']:7.1f} us/task "
              f"({row['cpu_us_per_task']:.1f} us CPU)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": platform.machine(), "python": platform.python_version(),
                       "load": open("/proc/loadavg").read().split()[:3], "ran_for": args.ran_for,
                       "per_message": args.per_message, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
