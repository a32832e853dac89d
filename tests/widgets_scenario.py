"""One scenario of the live widgets, run against a backend; prints what they showed.

    python tests/widgets_scenario.py shoal     # shoal's own scheduler: a local cluster
    python tests/widgets_scenario.py ray       # a two-node ray.cluster_utils.Cluster it owns

The same code drives the progress bar, the timeline (and its Chrome-trace and
Parquet exports), the object store and the cluster widget through the
backend interface only (test_widgets_backends.py runs it in each backend's
interpreter and asserts on the JSON it prints last).  Widgets are built with
no kernel: their models are what a frontend would get.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time

BIG = 300_000


def wait_for(cond, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def start(kind: str):
    """Start the backend; returns a function that stops it."""
    import shoal
    if kind == "shoal":
        shoal.init(num_cpus=2)
        return shoal.shutdown
    from ray.cluster_utils import Cluster
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1,
                                                             "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    shoal.init(address=f"ray:{cluster.address}")

    def stop():
        shoal.shutdown()
        cluster.shutdown()
    return stop


def scenario() -> dict:
    import shoal
    from shoal import widgets
    from shoal.core import backend

    @shoal.remote
    def square(x):
        time.sleep(0.05)
        return x * x

    @shoal.remote
    def fails():
        raise ValueError("on purpose")

    out: dict = {"backend": backend.current().name}
    tl = widgets.timeline()
    refs = [square.remote(i) for i in range(20)] + [fails.remote()]
    bar = shoal.progress(refs, title="squares")
    out["bar_total"] = bar.view["total"]
    big = shoal.put(b"x" * BIG)
    store = shoal.objects()
    cw = widgets.cluster()
    try:
        shoal.get(refs)
    except ValueError:
        out["raised"] = "ValueError"
    wait_for(lambda: bar.view.get("status") == "failed", what="the bar's final state")
    out["bar"] = [bar.view["done"], bar.view["failed"], bar.view["status"]]

    source = backend.current().bind()
    tasks = {source.task_of(source.object_id(r)) for r in refs}
    wait_for(lambda: tl.meta.get("counts", {}).get("finished", 0) >= 20
             and tl.meta["counts"].get("failed", 0) >= 1, what="timeline bars")
    runs = [r for r in tl.runs() if r["task_id"] in tasks]
    lanes = {e[0]: e[1] for e in tl.meta["engines"]}
    out["runs"] = len(runs)
    out["run_names"] = sorted({r["name"] for r in runs})
    out["run_statuses"] = sorted(r["status"] for r in runs).count("failed")
    out["runs_in_lanes"] = all(lanes.get(r["engine_id"]) == r["host_id"] != "?" for r in runs)
    out["ordered"] = all(r["start"] <= r["end"] for r in runs)

    wait_for(lambda: cw.view.get("tasks", {}).get("done", 0) >= 20
             and cw.view["totals"]["busy"] == 0, what="cluster task counts, every engine idle")
    v = cw.view
    out["cluster"] = {"hosts": len(v["hosts"]), "cpus": v["totals"]["cpus"],
                      "kind": v["kind"], "engines": v["totals"]["engines"] > 0,
                      "store_limit": v["totals"]["mem_limit"] > 0}
    hosts = {h["host_id"] for h in v["hosts"]}
    out["run_hosts_known"] = {r["host_id"] for r in runs} <= hosts
    out["scalable"] = cw.scalable

    big_id = source.object_id(big)
    wait_for(lambda: any(r["object_id"] == big_id for r in store.view.get("rows", [])),
             what="the put in the object table")
    row = next(r for r in store.view["rows"] if r["object_id"] == big_id)
    out["object"] = {"size_at_least_big": row["size"] >= BIG, "refs": row["reference_count"] >= 1,
                     "hosts": bool(row["hosts"])}
    out["store_hosts"] = len(store.view["hosts"])
    out["store_used"] = max(h["used"] for h in store.view["hosts"]) >= BIG

    with tempfile.TemporaryDirectory() as tmp:
        trace = os.path.join(tmp, "run.json")
        shoal.timeline(trace)
        events = json.load(open(trace))
        xs = [e for e in events if e.get("ph") == "X" and e["args"]["task_id"] in tasks]
        out["trace"] = {"events": len(xs), "names": sorted({e["name"] for e in xs})}
        table = os.path.join(tmp, "run.parquet")
        shoal.timeline(table)
        import pyarrow.parquet as pq
        rows = pq.read_table(table).to_pylist()
        out["parquet"] = len([r for r in rows if r["task_id"] in tasks])
    for w in (tl, bar, store, cw):
        w.stop()
    return out


def main(kind: str) -> None:
    stop = start(kind)
    try:
        out = scenario()
    finally:
        stop()
    import threading

    def ours():
        return sorted(t.name for t in threading.enumerate()
                      if t.name.startswith(("shoal-ray-events", "shoal-widgets-feed")))
    try:
        wait_for(lambda: not ours(), timeout=5, what="the widgets' threads to end")
    except AssertionError:
        pass
    out["threads_left"] = ours()
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
