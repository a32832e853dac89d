"""Timeline export: a Chrome / Perfetto trace (.json) or a Parquet table (.parquet).

`write(runs, path)` picks the format by suffix.  `runs` are the dicts of
`TimelineModel.runs()`: task_id, name, status, engine_id, host_id, start,
end (wall-clock seconds).

The trace uses the Trace Event Format that chrome://tracing and
ui.perfetto.dev open: one process per host, one thread per engine, a
complete ("X") event per run with the task id, engine and status in its
args; failed and crashed runs get Chrome's red colour name.
"""
from __future__ import annotations

import json
import os
from typing import Iterable

_RED = {"failed": "terrible", "crashed": "terrible", "retried": "bad", "cancelled": "grey"}


def chrome_trace(runs: Iterable[dict]) -> dict:
    runs = sorted(runs, key=lambda r: r["start"])
    hosts: dict = {}
    engines: dict = {}
    events: list = []
    t0 = runs[0]["start"] if runs else 0.0
    for r in runs:
        pid = hosts.setdefault(r["host_id"], len(hosts) + 1)
        tid = engines.setdefault(r["engine_id"], len(engines) + 1)
        ev = {"name": r["name"], "cat": r["status"], "ph": "X", "pid": pid, "tid": tid,
              "ts": round((r["start"] - t0) * 1e6, 3),
              "dur": round(max(0.0, r["end"] - r["start"]) * 1e6, 3),
              "args": {"task_id": r["task_id"], "status": r["status"],
                       "engine": r["engine_id"], "host": r["host_id"]}}
        if r["status"] in _RED:
            ev["cname"] = _RED[r["status"]]
        events.append(ev)
    meta = [{"name": "process_name", "ph": "M", "pid": pid, "args": {"name": f"host {host}"}}
            for host, pid in hosts.items()]
    host_of = {r["engine_id"]: r["host_id"] for r in runs}
    meta += [{"name": "thread_name", "ph": "M", "pid": hosts[host_of[e]], "tid": tid,
              "args": {"name": f"engine {e}"}} for e, tid in engines.items()]
    return {"traceEvents": meta + events, "displayTimeUnit": "ms",
            "otherData": {"generator": "shoal", "t0_unix_seconds": t0}}


def arrow_table(runs: Iterable[dict]):
    import pyarrow as pa
    runs = list(runs)
    ts = pa.timestamp("us", tz="UTC")
    return pa.table({
        "task_id": pa.array([r["task_id"] for r in runs], pa.string()),
        "name": pa.array([r["name"] for r in runs], pa.string()),
        "status": pa.array([r["status"] for r in runs], pa.string()),
        "engine_id": pa.array([r["engine_id"] for r in runs], pa.string()),
        "host_id": pa.array([r["host_id"] for r in runs], pa.string()),
        "start": pa.array([int(r["start"] * 1e6) for r in runs], ts),
        "end": pa.array([int(r["end"] * 1e6) for r in runs], ts),
        "duration_s": pa.array([max(0.0, r["end"] - r["start"]) for r in runs], pa.float64()),
    })


def write(runs: Iterable[dict], path) -> str:
    """Write `runs` to `path` (.json: Chrome/Perfetto trace; .parquet: a table)."""
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".json":
        with open(path, "w", encoding="utf-8") as f:
            json.dump(chrome_trace(runs), f)
    elif suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq
        pq.write_table(arrow_table(runs), path)
    else:
        raise ValueError(f"shoal.timeline({path!r}): the file name must end in .json "
                         f"(a Chrome/Perfetto trace) or .parquet")
    return path
