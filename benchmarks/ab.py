"""Interleaved A/B runs of shoal against itself: two source trees, same workloads.

    python benchmarks/ab.py --base /tmp/base-tree --rounds 5 \\
        --workloads latency,throughput,numpy_arg,actor_latency --json benchmarks/runs/ab-DATE.json

One tree against itself with a switch flipped: give the same tree twice and
set the switch per side, e.g. `--base . --base-env SHOAL_DIRECT_RESULTS=0`.

Each round runs `run.py --frameworks shoal` once from each tree (the order
alternates between rounds, so drift in the machine's load hits both alike),
and records the load average before each run.  Reports, per metric, the median
over every sample of every round, and writes all raw samples to --json.
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_once(tree: Path, workloads: str, repeat: int, env: dict = None) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run([sys.executable, str(tree / "benchmarks" / "run.py"), "--frameworks", "shoal",
                        "--workloads", workloads, "--repeat", str(repeat), "--json", out.name],
                       check=True, stdout=subprocess.DEVNULL, cwd=tree,
                       env=dict(os.environ, **(env or {})))
        return json.load(open(out.name))["results"]


def interleave(trees: dict, rounds: int, run) -> tuple[dict, list]:
    """run(tree) -> {metric: [samples]} for each tree each round, the order alternating
    between rounds so drift in the machine's load hits both alike.  Returns the
    samples per tree and the load average before each run."""
    samples = {name: {} for name in trees}
    loads = []
    for i in range(rounds):
        for name in (("base", "new") if i % 2 == 0 else ("new", "base")):
            load = os.getloadavg()[0]
            loads.append({"round": i, "tree": name, "load1": load})
            for metric, values in run(trees[name]).items():
                samples[name].setdefault(metric, []).extend(values)
            print(f"round {i} {name} done (load {load:.2f})", file=sys.stderr)
    return samples, loads


def report(samples: dict, loads: list, label: str, number: str) -> dict:
    """Print the medians as a Markdown table (base, new, new/base) and the load; return them."""
    medians = {name: {k: statistics.median(v) for k, v in s.items()} for name, s in samples.items()}
    print(f"| {label} | base | new | new/base |\n|---|---|---|---|")
    for k, b in medians["base"].items():
        n = medians["new"].get(k)
        print(f"| {k} | {number.format(b)} | {number.format(n)} | {n / b:.2f} |" if n is not None
              else f"| {k} | {number.format(b)} | - | |")
    all_loads = [x["load1"] for x in loads]
    print(f"load average (1 min) before runs: median {statistics.median(all_loads):.2f}, "
          f"range {min(all_loads):.2f}-{max(all_loads):.2f}, on {os.cpu_count()} CPUs")
    return medians



def run_child(tree: Path, code: str, repeat: int) -> dict:
    """Run a benchmark's child `code` (prints one JSON line last) with `tree`'s shoal."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run([sys.executable, "-c", code, str(repeat)], env=env, cwd=tree,
                          capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def child_main(doc: str, code: str, label: str, number: str, rounds: int, repeat: int) -> None:
    """The command line of an A/B script whose workload is a child program:
    --base TREE [--new TREE] [--rounds N] [--repeat N] [--json FILE]."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True)
    p.add_argument("--new", default=str(HERE.parent))
    p.add_argument("--rounds", type=int, default=rounds)
    p.add_argument("--repeat", type=int, default=repeat)
    p.add_argument("--json")
    args = p.parse_args()
    trees = {"base": Path(args.base).resolve(), "new": Path(args.new).resolve()}
    samples, loads = interleave(trees, args.rounds, lambda tree: run_child(tree, code, args.repeat))
    medians = report(samples, loads, label, number)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "trees": {k: str(v) for k, v in trees.items()}, "rounds": args.rounds,
            "repeat": args.repeat, "cpus": os.cpu_count(), "loads": loads,
            "medians": medians, "samples": samples}, indent=1))

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="the tree to compare against (A)")
    p.add_argument("--new", default=str(HERE.parent), help="the tree under test (B; default: this one)")
    p.add_argument("--workloads", default="latency,throughput,numpy_arg,actor_latency")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeat", type=int, default=3, help="repetitions per workload per run")
    p.add_argument("--json", help="write raw samples, loads and medians here")
    p.add_argument("--base-env", action="append", default=[], metavar="VAR=VALUE",
                   help="an environment variable for the base side's runs (repeatable)")
    p.add_argument("--new-env", action="append", default=[], metavar="VAR=VALUE")
    args = p.parse_args()
    # Keyed by side, not by tree: both sides may be the same tree.
    trees = {"base": Path(args.base).resolve(), "new": Path(args.new).resolve()}
    envs = {"base": _env(args.base_env), "new": _env(args.new_env)}
    sides = {name: (tree, envs[name]) for name, tree in trees.items()}

    def run(side) -> dict:
        tree, env = side
        out = {}
        for key, res in run_once(tree, args.workloads, args.repeat, env).items():
            for metric, values in res.get("samples", {}).items():
                out[f"{key}:{metric}"] = values
        return out
    samples, loads = interleave(sides, args.rounds, run)
    medians = report(samples, loads, "metric", "{:.4g}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "trees": {k: str(v) for k, v in trees.items()}, "envs": envs,
            "workloads": args.workloads,
            "rounds": args.rounds, "repeat": args.repeat, "cpus": os.cpu_count(),
            "loads": loads, "medians": medians, "samples": samples}, indent=1))


def _env(pairs: list) -> dict:
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"an environment setting must look like VAR=VALUE, got {pair!r}")
        env[name] = value
    return env


if __name__ == "__main__":
    main()
