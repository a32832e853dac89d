"""Run the microbenchmarks on shoal and its peers and print a Markdown table of medians.

    python benchmarks/run.py [--frameworks shoal,shoal-ray,ray,dask,ipyparallel,pool]
                             [--workloads a,b] [--repeat N] [--timeout S] [--json out.json]
    python benchmarks/run.py --table runs/some-run.json     # the table of a saved run again

`pool` is multiprocessing.Pool, the floor: its own column, never the "best peer"; nor is
`shoal-ray` (shoal's API on its Ray backend, in the peers' interpreter).
The 1-minute load average is sampled before every (framework, workload) and reported.
Workloads run interleaved: each on every framework, in alternating order, before the next.
Each (framework, workload) runs in its own subprocess (child.py) in the framework's
interpreter: shoal and pool in the project's, the peers in benchmarks/.venv-peers (see
setup-peers.sh). A `fresh` workload (start) gets a new subprocess per repetition.
A run that exceeds its timeout is terminated, then killed with its whole process
tree, so a hung framework cannot hang the suite or leave processes behind.
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from adapters import FRAMEWORKS  # noqa: E402
from workloads import HIGHER, LOWER, WORKLOADS  # noqa: E402

MARK = "@@BENCH-RESULT@@ "  # same as child.MARK (child.py is not imported: it pulls in adapters' deps)
PEERS_PY = HERE / ".venv-peers" / "bin" / "python"
ARROW = {LOWER: "↓", HIGHER: "↑"}
STARTUP_ALLOWANCE = 120  # seconds on top of the per-repetition timeouts: cluster start + warm-up


def interpreter(framework):
    if framework in ("shoal", "pool"):        # pool: the standard library's, in shoal's venv
        venv = ROOT / ".venv" / "bin" / "python"
        return str(venv) if venv.exists() else sys.executable
    return str(PEERS_PY)                      # the peers, and shoal-ray (it needs Ray)


def child_env(framework):
    # Workers must import `workloads` (task functions are shipped by reference); shoal from the repo.
    paths = [str(HERE)] + ([str(ROOT)] if framework in ("shoal", "shoal-ray") else [])
    old = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths + ([old] if old else [])))


# ---- process hygiene -------------------------------------------------------------------------

def become_subreaper():
    """Orphans of our children (daemonized raylets, engines...) get re-parented to us, not init,
    so we can find and kill them after each run (Linux only; harmless elsewhere)."""
    try:
        import ctypes
        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except Exception:
        pass


def descendants():
    children = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":  # zombies are reaped below, not killed
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [os.getpid()]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def reap():
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def kill_leftovers(grace=5.0):
    """Give stragglers `grace` seconds to exit on their own, then TERM, then KILL.
    Returns how many had to be signalled (a framework that cleans up after itself scores 0)."""
    def settle():
        deadline = time.monotonic() + grace
        while descendants() and time.monotonic() < deadline:
            reap()
            time.sleep(0.1)
        reap()
        return descendants()

    left = settle()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in descendants():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if not settle():
            break
    return len(left)


def run_child(framework, args, timeout):
    """Run child.py with `args`; return (result dict or None, status note, output tail)."""
    cmd = [interpreter(framework), str(HERE / "child.py"), *map(str, args)]
    # Files, not pipes: a leaked worker holding the pipe open would block reading until EOF.
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=HERE,
                                env=child_env(framework), start_new_session=True)
        note = ""
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            note = f"timeout after {timeout:.0f}s"
            proc.terminate()  # child turns SIGTERM into a clean shutdown
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        leftovers = kill_leftovers()
        if leftovers:
            note += f"{'; ' if note else ''}{leftovers} leftover process(es) killed"
        out.seek(0)
        text = out.read()
    result = None
    for line in text.splitlines():
        if line.startswith(MARK):
            result = json.loads(line[len(MARK):])
    return result, note, text[-3000:]


# ---- reporting -------------------------------------------------------------------------------

def fmt(v):
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def advantage(a, b, better):
    """How many times better `a` is than `b` (>1 = a better), whatever the metric's direction."""
    if not isinstance(a, float) or not isinstance(b, float) or not a or not b:
        return None
    return a / b if better == HIGHER else b / a


# Ratio columns (a, b): "a vs b" = how many times better a is than b. shoal-ray is shoal's
# API on Ray, not a peer: it is compared with shoal's own backend and with plain Ray.
RATIOS = (("shoal", "ray"), ("shoal", "pool"), ("shoal", "shoal-ray"), ("shoal-ray", "ray"))
NOT_PEERS = ("shoal", "shoal-ray", "pool")     # never the "best peer"


def table(frameworks, workloads, medians):
    peers = [f for f in frameworks if f not in NOT_PEERS]
    ratios = [(a, b) for a, b in RATIOS if a in frameworks and b in frameworks]
    best_peer = "shoal" in frameworks and len(peers) > 1   # with one peer its own column says it
    head = ["workload", *frameworks, *(["shoal vs best peer"] if best_peer else []),
            *(f"{a} vs {b}" for a, b in ratios)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for w in workloads:
        for metric, (unit, better) in WORKLOADS[w].metrics.items():
            label = w if metric == w else f"{w}: {metric}"
            cells = {f: medians.get((f, w, metric)) for f in frameworks}
            row = [f"{label} ({unit} {ARROW[better]})", *(fmt(cells[f]) for f in frameworks)]
            if best_peer:
                nums = {f: cells[f] for f in peers if isinstance(cells[f], float)}
                best = (max if better == HIGHER else min)(nums, key=nums.get) if nums else None
                r = advantage(cells["shoal"], nums[best], better) if best else None
                row.append(f"{r:.2f}× ({best})" if r else "—")
            for a, b in ratios:
                r = advantage(cells[a], cells[b], better)
                row.append(f"{r:.2f}×" if r else "—")
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def run_workload(fw, w, args, medians, raw, notes, log):
    """Run workload `w` on framework `fw` (args.repeat times), recording samples and medians."""
    wl = WORKLOADS[w]
    per_rep = args.timeout or wl.timeout
    # Fresh workloads: one process per repetition so every start is cold.
    runs = [(1, per_rep + STARTUP_ALLOWANCE)] * args.repeat if wl.fresh else \
           [(args.repeat, per_rep * args.repeat + STARTUP_ALLOWANCE)]
    samples, status = {m: [] for m in wl.metrics}, None
    t0 = time.monotonic()
    for reps, timeout in runs:
        result, note, tail = run_child(fw, [fw, w, reps], timeout)
        if note:
            notes.append(f"{fw}/{w}: {note}")
        if result and result["ok"]:
            for m, vals in result["samples"].items():
                samples[m] += vals
        else:
            status = "n/a" if result and result.get("na") else ("TIMEOUT" if "timeout" in note else "FAIL")
            err = result["error"] if result else tail
            notes.append(f"{fw}/{w}: {status}\n" + "\n".join("    " + l for l in err.strip().splitlines()[-15:]))
            break
    raw[f"{fw}/{w}"] = {"samples": samples, "status": status or "ok"}
    for m, vals in samples.items():
        medians[(fw, w, m)] = status or statistics.median(vals)
    summary = ", ".join(f"{m}={fmt(medians[(fw, w, m)])}" for m in wl.metrics)
    log(f"[{fw}] {w}: {summary}  ({time.monotonic() - t0:.0f}s)")


def load_summary(loads):
    """'1-minute load average min–max, median M (N samples)' of a run's samples."""
    values = [entry["load1"] for entry in loads]
    if not values:
        return "load average not recorded"
    return (f"1-minute load average {min(values):.2f}–{max(values):.2f}, median "
            f"{statistics.median(values):.2f} ({len(values)} samples, {os.cpu_count()} CPUs here)")


def report(saved):
    """Print the Markdown report of a run (what main() just ran, or a --json file)."""
    medians = {}
    for key, entry in saved["results"].items():
        fw, w = key.split("/", 1)
        for m, vals in entry["samples"].items():
            medians[(fw, w, m)] = statistics.median(vals) if entry["status"] == "ok" else entry["status"]
    shown = [f for f in saved["frameworks"] if f in saved["versions"]]
    print(f"\nMedians of {saved['repeat']} repetition(s); {load_summary(saved.get('load', []))}."
          "\n↓ lower is better, ↑ higher is better; \"a vs b\" >1× means a is better.\n")
    print(table(shown, saved["workloads"], medians) if shown else "(nothing ran)")
    print("\nVersions: " + ", ".join(f"{f} {v}" for f, v in saved["versions"].items()))
    if saved.get("commit"):
        print(f"shoal commit {saved['commit']}, {saved.get('date', '')}")
    if saved["notes"]:
        print("\nNotes:\n" + "\n".join(f"- {n}" for n in saved["notes"]))


def commit():
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, text=True,
                              capture_output=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--repeat", type=int, default=3, help="repetitions per workload (median reported)")
    p.add_argument("--timeout", type=float, help="override the per-repetition timeout, seconds")
    p.add_argument("--json", help="write raw samples and notes here")
    p.add_argument("--table", metavar="JSON", help="print the report of a saved --json run; run nothing")
    args = p.parse_args()
    if args.table:
        report(json.loads(Path(args.table).read_text()))
        return 0
    frameworks, workloads = args.frameworks.split(","), args.workloads.split(",")
    for name, known in (("framework", FRAMEWORKS), ("workload", WORKLOADS)):
        bad = [x for x in (frameworks if name == "framework" else workloads) if x not in known]
        if bad:
            p.error(f"unknown {name}(s) {bad}; choose from {', '.join(known)}")

    become_subreaper()
    # What ran, and when: read before the run, so a checkout changed meanwhile is not recorded.
    started = {"commit": commit(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    medians, raw, notes, versions, ran, loads = {}, {}, [], {}, [], []
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731 progress goes to stderr
    for fw in frameworks:
        if not Path(interpreter(fw)).exists():
            notes.append(f"{fw}: skipped, no interpreter at {interpreter(fw)}"
                         " (run `bash benchmarks/setup-peers.sh`)")
            continue
        probe, _, tail = run_child(fw, ["--probe", fw], 120)
        if not probe or not probe["ok"]:
            notes.append(f"{fw}: skipped, cannot import it with {interpreter(fw)}: "
                         f"{probe['error'] if probe else tail.strip()[-300:]}")
            continue
        versions[fw] = probe["version"]
        ran.append(fw)
    # Interleaved: each workload runs on every framework before the next workload, in
    # alternating order, so a change in the machine's load hits every framework alike.
    for i, w in enumerate(workloads):
        for fw in (ran if i % 2 == 0 else ran[::-1]):
            loads.append({"run": f"{fw}/{w}", "load1": os.getloadavg()[0]})
            run_workload(fw, w, args, medians, raw, notes, log)
    loads.append({"run": "end", "load1": os.getloadavg()[0]})

    saved = {"versions": versions, "repeat": args.repeat, "frameworks": frameworks,
             "workloads": workloads, "results": raw, "notes": notes, "load": loads,
             "cpus": os.cpu_count(), **started}
    report(saved)
    if args.json:
        Path(args.json).write_text(json.dumps(saved, indent=2))
    # Skipped frameworks and n/a workloads are not failures; FAIL and TIMEOUT are.
    return 1 if any(r["status"] in ("FAIL", "TIMEOUT") for r in raw.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
