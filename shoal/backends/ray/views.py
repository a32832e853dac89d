"""Ray's state in the shapes shoal's widgets draw (pure functions: no Ray here).

state.py reads Ray (its GCS task events, nodes, raylets' stats) into plain
dicts; these functions map them onto shoal.core.cluster_info and onto
shoal's TaskEvent, so they are tested without a Ray cluster.

Names: a Ray node is a host, its id cut to HOST_ID_LEN hex digits; a Ray
worker process is an engine, "<host>.<pid>" (the timeline's lane); a task
id is Ray's hex task id, so `task_of` of an object id is its first 48 hex
digits (Ray's ObjectID is the TaskID and a 4-byte index).
"""
from __future__ import annotations

import json
from typing import Iterable, Optional

from ...protocol.messages import TaskEvent

HOST_ID_LEN = 8
TASK_ID_HEX = 48            # Ray's TaskID is 24 bytes; an ObjectID 28 (TaskID + index)
SHOWN_TYPES = ("NORMAL_TASK", "ACTOR_TASK")
# shoal's own actors (the output relay, the state probe): not the user's work.
HIDDEN_PREFIXES = ("OutputRelay.", "StateProbe.")
ENDED = ("FINISHED", "FAILED")
NIL_JOB = "ffffffff"        # the job id of a worker not given to a job yet
HOLD_BACK = 10.0            # seconds an ended attempt waits for its worker's report
CRASHES = ("WORKER_DIED", "NODE_DIED", "LOCAL_RAYLET_DIED", "OUT_OF_MEMORY")


def host_id(node_id: Optional[str]) -> Optional[str]:
    return node_id[:HOST_ID_LEN] if node_id else None


def engine_id(node_id: Optional[str], pid: Optional[int]) -> Optional[str]:
    return f"{host_id(node_id)}.{pid}" if node_id and pid else None


def task_of(object_id: str) -> str:
    return object_id[:TASK_ID_HEX]


# ---------------------------------------------------------------------- task events
def task_events(rows: Iterable[dict], now: Optional[float] = None) -> dict:
    """{(task id, attempt): TaskEvent, its latest state} from state.task_rows'
    rows: {"task_id", "attempt", "name", "type", "node_id", "pid", "times":
    {Ray state name: seconds}, "error": Ray ErrorType name or ""}.  Attempts not
    yet running and not ended (queued) are left out, as is a running one whose
    node and worker are not reported yet (the timeline keeps a run in the lane
    it first saw it in).  Likewise an attempt that ran and ended, while the
    worker's report (its start, node, pid) has not come yet (the owner reports
    the end, the worker the start, each about once a second): until HOLD_BACK
    seconds after its end (`now`; None: until it comes).  An attempt that failed
    while a later one exists was "retried" ("crashed" when its worker died)."""
    rows = [r for r in rows if r.get("type") in SHOWN_TYPES
            and not str(r.get("name", "")).startswith(HIDDEN_PREFIXES)]
    last_attempt: dict = {}
    for r in rows:
        if r["attempt"] > last_attempt.get(r["task_id"], -1):
            last_attempt[r["task_id"]] = r["attempt"]
    out = {}
    for r in rows:
        times = r.get("times") or {}
        start = times.get("RUNNING")
        ended = next((s for s in ENDED if s in times), None)
        node = r.get("node_id")
        if ended is None:
            if start is None or not node or not r.get("pid"):
                continue          # not running yet, or where is not reported yet: wait
            status, end = "running", None
        else:
            end = times[ended]
            error = r.get("error") or ""
            ran = ended == "FINISHED" or error == "TASK_EXECUTION_EXCEPTION"
            if ran and (start is None or not node or not r.get("pid")) and \
                    (now is None or now - end < HOLD_BACK):
                continue          # the owner's report came first; the worker's follows
            if ended == "FINISHED":
                status = "finished"
            elif error == "TASK_CANCELLED":
                status = "cancelled"
            elif r["attempt"] < last_attempt[r["task_id"]]:
                status = "crashed" if error in CRASHES else "retried"
            else:
                status = "failed"
        out[(r["task_id"], r["attempt"])] = TaskEvent(
            r["task_id"], r.get("name") or "?", status, engine_id(node, r.get("pid")),
            host_id(node), start, end)
    return out


def queued(rows: Iterable[dict]) -> int:
    """Attempts submitted and neither running nor ended (the cluster widget's queue)."""
    return sum(1 for r in rows if r.get("type") in SHOWN_TYPES
               and not str(r.get("name", "")).startswith(HIDDEN_PREFIXES)
               and not any(s in (r.get("times") or {}) for s in ("RUNNING",) + ENDED))


# ---------------------------------------------------------------------- cluster
def cluster_status(nodes: list, available: dict, stats: dict, events: Iterable,
                   waiting: int, actors: int, job_id: Optional[str] = None) -> dict:
    """ClusterStatus from ray.nodes(), available resources per node id, state.node_stats
    (per node id: {"workers": [{"pid", "actor", "job"}], "store": {...}}), the task events
    known now (for busy engines and counts), the number queued and of live actors.
    Engines are the worker processes of `job_id` (None: of any job) and those not yet
    given to a job: on a shared cluster, other jobs' workers are theirs."""
    busy: set = set()
    counts = {"waiting": waiting, "running": 0, "finished": 0, "failed": 0, "cancelled": 0}
    for ev in events:
        if ev.status == "running":
            busy.add(ev.engine_id)
        if ev.status in counts:
            counts[ev.status] += 1
    hosts, engines = [], []
    for node in sorted(nodes, key=lambda n: n["NodeID"]):
        if not node.get("Alive"):
            continue
        nid = node["NodeID"]
        hid = host_id(nid)
        mine = []
        for w in (stats.get(nid) or {}).get("workers", []):
            if w.get("type", "WORKER") != "WORKER":      # drivers, spill / restore workers
                continue
            if job_id is not None and w.get("job") not in (job_id, None, NIL_JOB):
                continue
            eid = engine_id(nid, w["pid"])
            mine.append(eid)
            engines.append({"engine_id": eid, "host_id": hid, "pid": w["pid"],
                            "state": "actor" if _is_set(w.get("actor")) else
                            "busy" if eid in busy else "idle"})
        hosts.append({"host_id": hid, "node_id": nid,
                      "hostname": node.get("NodeManagerHostname") or
                      node.get("NodeManagerAddress", ""),
                      "address": node.get("NodeManagerAddress", ""),
                      "resources": _plain(node.get("Resources") or {}),
                      "available": _plain(available.get(nid) or {}), "engines": mine})
    return {"hosts": hosts, "engines": engines, "tasks": counts,
            "memory": memory(nodes, stats), "actors": [{}] * actors}


def _is_set(hex_id: Optional[str]) -> bool:
    """Whether a Ray id is one (its nil value is all ff bytes)."""
    return bool(hex_id) and bool(hex_id.strip("f"))


def _plain(resources: dict) -> dict:
    """Without Ray's per-node marker resources ("node:10.0.0.1", "node:__internal_head__")."""
    return {k: v for k, v in resources.items() if not k.startswith("node:")}


def memory(nodes: list, stats: dict) -> list:
    """StoreMemory per alive node, from the raylets' store stats."""
    out = []
    for node in sorted(nodes, key=lambda n: n["NodeID"]):
        store = (stats.get(node["NodeID"]) or {}).get("store")
        if not node.get("Alive") or store is None:
            continue
        out.append({"host_id": host_id(node["NodeID"]),
                    "hostname": node.get("NodeManagerHostname") or
                    node.get("NodeManagerAddress", ""),
                    "used": store.get("used", 0), "limit": store.get("used", 0) +
                    store.get("available", 0),
                    "spilled": store.get("spilled", 0), "objects": store.get("objects", 0)})
    return out


def objects(stats: dict, job_id: Optional[str] = None) -> list:
    """ObjectInfo for every object a worker of `job_id` (None: any) holds a reference
    to, from the raylets' memory info (what `ray memory` shows): one row per
    object, its references summed over workers, `hosts` the nodes of the
    workers that hold them."""
    rows: dict = {}
    for nid, node in sorted(stats.items()):
        for w in node.get("workers", []):
            if job_id is not None and w.get("job") not in (job_id, None):
                continue
            for ref in w.get("refs", []):
                oid = ref["object_id"]
                row = rows.get(oid)
                if row is None:
                    row = rows[oid] = {
                        "object_id": oid, "type": "", "size": max(0, ref.get("size", 0)),
                        "reference_count": 0, "hosts": [], "spilled": False,
                        "where": "", "created_by": ref.get("call_site") or "",
                        "state": ref.get("task_status", "")}
                row["reference_count"] += ref.get("local", 0) + ref.get("submitted", 0)
                if ref.get("pinned"):
                    row["where"] = "object store"
                hid = host_id(nid)
                if hid not in row["hosts"]:
                    row["hosts"].append(hid)
    return list(rows.values())


# ---------------------------------------------------------------------- autoscaler
def actors(rows: Iterable[dict]) -> list:
    """[ActorInfo] from state.actor_rows (Ray's actor table: ActorID, ActorClassName,
    Name, State, Address.NodeID, Pid, NumRestarts, IsDetached, DeathCause)."""
    out = []
    for r in rows:
        node = (r.get("Address") or {}).get("NodeID")
        node = node if _is_set(node) else None
        pid = r.get("Pid") or None
        state = r.get("State")
        out.append({"actor_id": r.get("ActorID"), "class_name": r.get("ActorClassName"),
                    "name": r.get("Name") or None,
                    "state": state if isinstance(state, str) else str(state),
                    "engine_id": engine_id(node, pid), "host_id": host_id(node), "pid": pid,
                    "restarts": int(r.get("NumRestarts") or 0),
                    "detached": bool(r.get("IsDetached")),
                    "death_cause": _death_cause(r.get("DeathCause"))})
    return out


def _death_cause(cause) -> str:
    """Ray's ActorDeathCause (a protobuf's text, or empty): its one-line message."""
    text = str(cause or "").strip()
    for line in text.splitlines():
        if "error_message" in line:
            return line.split(":", 1)[1].strip().strip('"')
    return text.splitlines()[0] if text else ""


def can_add_nodes(status: Optional[bytes], v2_flag: Optional[bytes]) -> bool:
    """Whether the cluster's autoscaler can add nodes, from what it keeps in the GCS
    KV: v1's status report (every `ray start --head` runs a v1 monitor, but without
    a cluster config its "readonly" provider names each node's type after the node,
    "node_<id>", and adds none; a configured one has node types of its own), or
    v2's enabled flag (b"1")."""
    if v2_flag == b"1":
        return True
    if not status:
        return False
    try:
        report = json.loads(status).get("autoscaler_report") or {}
    except ValueError:
        return False
    types = report.get("node_type_mapping") or {}
    return any(kind != f"node_{node}" for node, kind in types.items())


__all__ = ["actors", "can_add_nodes", "task_events", "queued", "cluster_status", "memory", "objects", "host_id",
           "engine_id", "task_of"]
