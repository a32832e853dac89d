"""Python's parallel idioms, side by side: Pool.map, joblib, awaited refs.

    python benchmarks/idioms.py [--repeat 5] [--json benchmarks/runs/idioms-DATE.json]

| workload | systems | measures |
|---|---|---|
| `pool_map` | shoal Pool, multiprocessing.Pool, Ray's Pool | `pool.map` of 10,000 small items (default chunksize) on a warm 2-worker pool; also the pool's start (create + first map) |
| `joblib` | shoal backend, loky (joblib's default), Ray's backend | `Parallel(n_jobs=2)` of 1,000 small calls, after one untimed warm-up call |
| `await` | shoal, Ray | submit 10,000 no-op tasks, then `asyncio.gather` over the refs; also the driver's OS thread count while they are awaited |

Each (system, workload) runs in its own subprocess, in the system's interpreter
(shoal, multiprocessing and loky in the project's; Ray in benchmarks/.venv-peers),
with the process hygiene of run.py (timeouts, leftover processes killed).
Every workload checks its results.
"""
import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NUM_CPUS = 2
ITEMS, CALLS, REFS = 10_000, 1_000, 10_000
SYSTEMS = {
    "pool_map": ("shoal", "multiprocessing", "ray"),
    "joblib": ("shoal", "loky", "ray"),
    "await": ("shoal", "ray"),
}
METRICS = {      # workload -> {metric: unit}; lower is better for every one
    "pool_map": {"map": "s", "start": "s"},
    "joblib": {"parallel": "s"},
    "await": {"await": "s", "threads": "OS threads"},
}
MARK = "@@IDIOMS@@ "


# ---- what the workers run --------------------------------------------------------------------

def small(x):
    return x * x + 1


def noop():
    return None


# ---- one system, one workload (child process) ------------------------------------------------

def os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


class Cluster:
    """Starts and stops the framework a system needs (none for the stdlib ones)."""

    def __init__(self, system: str) -> None:
        self.system = system
        if system == "shoal":
            import shoal
            shoal.init(num_cpus=NUM_CPUS)
            self.mod = shoal
        elif system == "ray":
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            import ray
            ray.init(num_cpus=NUM_CPUS, include_dashboard=False, logging_level="warning")
            self.mod = ray
        else:
            self.mod = None

    def close(self) -> None:
        if self.mod is not None:
            self.mod.shutdown()


def make_pool(system: str):
    if system == "shoal":
        from shoal.util.multiprocessing import Pool
    elif system == "ray":
        from ray.util.multiprocessing import Pool
    else:
        from multiprocessing import Pool
    return Pool(NUM_CPUS)


def pool_map(system: str, repeat: int) -> dict:
    expected = [small(i) for i in range(ITEMS)]
    out = {"map": [], "start": []}
    t = time.perf_counter()
    pool = make_pool(system)
    assert pool.map(small, range(ITEMS)) == expected
    out["start"].append(time.perf_counter() - t)
    try:
        for _ in range(repeat):
            t = time.perf_counter()
            result = pool.map(small, range(ITEMS))
            out["map"].append(time.perf_counter() - t)
            assert result == expected
    finally:
        pool.terminate()
    return out


def joblib_backend(system: str) -> str:
    if system == "shoal":
        from shoal.util.joblib import register_shoal
        register_shoal()
        return "shoal"
    if system == "ray":
        from ray.util.joblib import register_ray
        register_ray()
        return "ray"
    return "loky"


def joblib_parallel(system: str, repeat: int) -> dict:
    import joblib
    backend = joblib_backend(system)
    expected = [small(i) for i in range(CALLS)]

    def run():
        with joblib.parallel_backend(backend, n_jobs=NUM_CPUS):
            return joblib.Parallel()(joblib.delayed(small)(i) for i in range(CALLS))

    assert run() == expected           # warm-up: workers started, functions shipped
    out = {"parallel": []}
    for _ in range(repeat):
        t = time.perf_counter()
        result = run()
        out["parallel"].append(time.perf_counter() - t)
        assert result == expected
    return out


def await_refs(system: str, repeat: int, mod) -> dict:
    remote_noop = mod.remote(noop)
    out = {"await": [], "threads": []}
    mod.get([remote_noop.remote() for _ in range(100)])          # warm

    async def gather(refs):
        task = asyncio.gather(*refs)
        await asyncio.sleep(0)            # every await registered
        threads = os_threads()
        values = await task
        return max(threads, os_threads()), values

    for _ in range(repeat):
        t = time.perf_counter()
        refs = [remote_noop.remote() for _ in range(REFS)]
        threads, values = asyncio.run(gather(refs))
        out["await"].append(time.perf_counter() - t)
        out["threads"].append(threads)
        assert values == [None] * REFS
    return out


def child(system: str, workload: str, repeat: int) -> None:
    cluster = Cluster(system)
    try:
        if workload == "pool_map":
            samples = pool_map(system, repeat)
        elif workload == "joblib":
            samples = joblib_parallel(system, repeat)
        else:
            samples = await_refs(system, repeat, cluster.mod)
        print(MARK + json.dumps({"ok": True, "samples": samples}), flush=True)
    except BaseException:
        import traceback
        print(MARK + json.dumps({"ok": False, "error": traceback.format_exc(limit=-8)}), flush=True)
    finally:
        cluster.close()


# ---- the side-by-side run (parent) -----------------------------------------------------------

def interpreter(system: str) -> str:
    if system == "ray":
        return str(HERE / ".venv-peers" / "bin" / "python")
    return sys.executable


def run_all(repeat: int, timeout: float) -> dict:
    import run as harness                 # process hygiene: subreaper, leftovers killed
    harness.become_subreaper()
    results = {}
    for workload, systems in SYSTEMS.items():
        for system in systems:
            import subprocess
            import tempfile
            cmd = [interpreter(system), str(HERE / "idioms.py"), "--child", system, workload, str(repeat)]
            env = harness.child_env("shoal")
            t0 = time.monotonic()
            with tempfile.TemporaryFile("w+") as f:
                proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=HERE, env=env,
                                        start_new_session=True)
                try:
                    proc.wait(timeout=timeout)
                    note = ""
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    note = f"timeout after {timeout:.0f}s"
                left = harness.kill_leftovers()
                if left:
                    note += f"{'; ' if note else ''}{left} leftover process(es) killed"
                f.seek(0)
                text = f.read()
            result = None
            for line in text.splitlines():
                if line.startswith(MARK):
                    result = json.loads(line[len(MARK):])
            if result is None:
                result = {"ok": False, "error": text[-2000:]}
            result["note"] = note
            results[f"{system}/{workload}"] = result
            status = "ok" if result["ok"] else "FAILED"
            print(f"[{system}] {workload}: {status} ({time.monotonic() - t0:.0f}s) {note}",
                  file=sys.stderr, flush=True)
            if not result["ok"]:
                print(result["error"], file=sys.stderr)
    return results


def median(results: dict, key: str, metric: str):
    r = results.get(key)
    if not r or not r["ok"]:
        return None
    return statistics.median(r["samples"][metric])


def table(results: dict) -> str:
    lines = ["| workload | shoal | baseline | ray | shoal ÷ baseline | ray ÷ shoal |",
             "|---|---|---|---|---|---|"]
    for workload, systems in SYSTEMS.items():
        baseline = next((s for s in systems if s not in ("shoal", "ray")), None)
        for metric, unit in METRICS[workload].items():
            s = median(results, f"shoal/{workload}", metric)
            b = median(results, f"{baseline}/{workload}", metric) if baseline else None
            r = median(results, f"ray/{workload}", metric)
            fmt = (lambda v: "—" if v is None else f"{v:.0f}") if unit == "OS threads" else \
                  (lambda v: "—" if v is None else f"{v:.3g}")
            ratio = lambda x, y: "—" if x is None or y is None or not y else f"{x / y:.2f}×"  # noqa: E731
            lines.append(f"| {workload}: {metric} ({unit} ↓) | {fmt(s)} | "
                         f"{baseline + ' ' + fmt(b) if baseline else '—'} | {fmt(r)} | "
                         f"{ratio(s, b)} | {ratio(r, s)} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--timeout", type=float, default=600, help="seconds per (system, workload)")
    p.add_argument("--json", help="write the raw samples here")
    p.add_argument("--child", nargs=3, metavar=("SYSTEM", "WORKLOAD", "REPEAT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        system, workload, repeat = args.child
        child(system, workload, int(repeat))
        return 0
    load_before = os.getloadavg()
    results = run_all(args.repeat, args.timeout)
    load_after = os.getloadavg()
    print(f"\nMedians of {args.repeat} repetitions, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}; load average {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after.\n")
    print(table(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "repeat": args.repeat, "cpus": os.cpu_count(), "load_before": load_before,
            "load_after": load_after, "python": platform.python_version(), "results": results,
        }, indent=2))
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    import idioms                          # task functions by reference: idioms.small, not __main__'s
    sys.exit(idioms.main())
