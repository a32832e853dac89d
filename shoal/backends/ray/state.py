"""Reading a Ray cluster's state for shoal's widgets (views.py maps it).

What is read, and from where (none of it needs Ray's dashboard):

- task events: the GCS's task event store, the source of `ray.timeline()`
  and of the state API's `list_tasks`, asked for this job's only (GetTaskEvents
  with a job filter; where the events live in the dashboard head instead,
  all of them, filtered here) (one record per task attempt: name,
  type, node, worker pid, the time of each state; kept by the GCS up to
  RAY_task_events_max_num_task_in_gcs tasks).  Workers report them about
  once a second (RAY_task_events_report_interval_ms), so the timeline lags
  by that much.
- nodes and their resources: `ray.nodes()`, available resources per node.
- workers, object references and store usage: each raylet's GetNodeStats
  with memory info, what `ray memory` shows (needs grpcio: `ray[client]`,
  which `shoal[ray]` brings).
- actors: the GCS actor table; the autoscaler: its status in the GCS KV.

These calls work where Ray runs as a driver or worker.  Ray Client drivers
are not connected to the GCS, so there the same functions run in a small
actor on the cluster (`StateProbe`, 0 CPUs, task events off) and its answers
come back (`reader(ray)` picks; both answer `ask(query name, *args)`).
"""
from __future__ import annotations

import logging

log = logging.getLogger("shoal.backends.ray")
PROBE_TIMEOUT = 30.0        # seconds for one answer of the probe actor (Ray Client)
STATS_TIMEOUT = 10.0        # seconds for one raylet's stats


_stubs: dict = {}            # GCS address -> (channel, TaskInfoGcsService stub)


def close_channels() -> None:
    """Close the GCS channels task_rows opened (the backend closes)."""
    while _stubs:
        channel, _ = _stubs.popitem()[1]
        channel.close()


def _job_events(job: bytes):
    """This job's task event records, filtered by the GCS (GetTaskEvents with a job
    filter, as the state API asks it), or None where that is not possible (the
    events live in the dashboard head, or an older Ray): the caller reads them all."""
    import ray
    config = getattr(ray._config, "enable_task_events_to_dashboard_head", None)
    if config is not None and config():
        return None
    try:
        from ray._private.grpc_utils import init_grpc_channel
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
        address = ray.get_runtime_context().gcs_address
        made = _stubs.get(address)
        if made is None:
            channel = init_grpc_channel(address, options=[
                ("grpc.max_receive_message_length", 512 * 1024 * 1024)])
            made = _stubs[address] = (channel,
                                      gcs_service_pb2_grpc.TaskInfoGcsServiceStub(channel))
        stub = made[1]
        req = gcs_service_pb2.GetTaskEventsRequest
        equal = gcs_service_pb2.FilterPredicate.EQUAL
        filters = req.Filters(job_filters=[req.Filters.JobIdFilter(job_id=job, predicate=equal)],
                              exclude_driver=True)
        return stub.GetTaskEvents(req(filters=filters), timeout=STATS_TIMEOUT).events_by_task
    except Exception:                    # an older Ray's messages: read them all
        log.debug("the GCS could not filter task events", exc_info=True)
        return None


def task_rows(job_id: str) -> list:
    """This job's task attempts (views.task_events reads them)."""
    from ray._private.state import state
    from ray.core.generated import common_pb2, gcs_pb2
    status_name, type_name = common_pb2.TaskStatus.Name, common_pb2.TaskType.Name
    error_name = common_pb2.ErrorType.Name
    job = bytes.fromhex(job_id)
    records = _job_events(job)
    if records is None:
        read = getattr(state, "_get_all_task_events", None)
        if read is not None:
            records = read()
        else:                            # Ray before the dashboard-head task store
            records = [gcs_pb2.TaskEvents.FromString(b)
                       for b in state._connect_and_get_accessor().get_task_events()]
    merged: dict = {}
    for ev in records:
        if ev.job_id != job:
            continue
        key = (ev.task_id, ev.attempt_number)
        row = merged.get(key)
        if row is None:
            row = merged[key] = {"task_id": ev.task_id.hex(), "attempt": ev.attempt_number,
                                 "name": "", "type": "", "node_id": None, "pid": None,
                                 "times": {}, "error": ""}
        if ev.HasField("task_info"):
            row["name"] = ev.task_info.name or row["name"]
            row["type"] = type_name(ev.task_info.type)
        if ev.HasField("state_updates"):
            su = ev.state_updates
            if su.node_id:
                row["node_id"] = su.node_id.hex()
            if su.worker_pid:
                row["pid"] = su.worker_pid
            if su.HasField("error_info"):
                row["error"] = error_name(su.error_info.error_type)
            for code, ns in su.state_ts_ns.items():
                row["times"][status_name(code)] = ns / 1e9
    return list(merged.values())


def nodes() -> list:
    import ray
    return ray.nodes()


def available() -> dict:
    """Available resources per node id."""
    from ray._private.state import state
    return state.available_resources_per_node()


def node_stats(with_refs: bool) -> dict:
    """Per alive node id: {"workers": [{"pid", "type", "actor", "job", "refs"}], "store"}."""
    import ray
    from ray._private.internal_api import node_stats as raylet_stats
    from ray.core.generated import common_pb2
    worker_type = common_pb2.WorkerType.Name
    task_status = common_pb2.TaskStatus.Name
    out = {}
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        try:
            reply = raylet_stats(node["NodeManagerAddress"], node["NodeManagerPort"],
                                 include_memory_info=with_refs)
        except Exception:              # a node going away: shown without its stats
            log.debug("no stats from node %s", node["NodeID"], exc_info=True)
            continue
        workers = []
        for w in reply.core_workers_stats:
            refs = [{"object_id": r.object_id.hex(), "size": r.object_size,
                     "local": r.local_ref_count, "submitted": r.submitted_task_ref_count,
                     "pinned": r.pinned_in_memory, "call_site": r.call_site,
                     "task_status": task_status(r.task_status)}
                    for r in w.object_refs] if with_refs else []
            workers.append({"pid": w.pid, "type": worker_type(w.worker_type),
                            "actor": w.actor_id.hex() if w.actor_id else "",
                            "job": w.job_id.hex() if w.job_id else None, "refs": refs})
        s = reply.store_stats
        out[node["NodeID"]] = {"workers": workers, "store": {
            "used": s.object_store_bytes_used, "available": s.object_store_bytes_avail,
            "spilled": s.spilled_bytes_total, "objects": s.num_local_objects}}
    return out


def live_actors() -> int:
    """Actors alive in the cluster, shoal's own (relay, probe) left out."""
    from ray._private.state import state
    count = 0
    for info in state.actor_table(None).values():
        alive = info.get("State") in ("ALIVE", 2)          # a name, or the enum's number
        if alive and info.get("ActorClassName") not in ("OutputRelay", "StateProbe"):
            count += 1
    return count


def actor_rows() -> list:
    """Every actor in the GCS's actor table, shoal's own (relay, probe) left out."""
    from ray._private.state import state
    # DeathCause is a protobuf message: as text, so a probe actor can send it back.
    return [{**info, "DeathCause": str(info.get("DeathCause") or "")}
            for info in state.actor_table(None).values()
            if info.get("ActorClassName") not in ("OutputRelay", "StateProbe")]


def autoscaler() -> bool:
    """Whether an autoscaler that can add nodes runs (views.can_add_nodes decides)."""
    import ray
    from ray._private import ray_constants
    from ray.experimental.internal_kv import _internal_kv_get
    from .views import can_add_nodes
    status = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
    key = getattr(ray._raylet, "GCS_AUTOSCALER_V2_ENABLED_KEY", None)
    flag = _internal_kv_get(key, namespace=ray._raylet.GCS_AUTOSCALER_STATE_NAMESPACE) \
        if key is not None else None
    return can_add_nodes(status, flag)


def request_cpus(num_cpus: int) -> None:
    """Ask the autoscaler for a cluster of at least `num_cpus` CPUs."""
    from ray.autoscaler.sdk import request_resources
    request_resources(num_cpus=num_cpus)


QUERIES = {f.__name__: f for f in (task_rows, nodes, available, node_stats, live_actors,
                                    actor_rows, autoscaler, request_cpus)}


class LocalReader:
    """This process is connected to the GCS (a driver on a node): read directly."""

    def ask(self, name: str, *args):
        return QUERIES[name](*args)

    def close(self) -> None:
        close_channels()


class StateProbe:
    """The actor that reads for a Ray Client driver (same calls, run on the cluster)."""

    def ask(self, name: str, *args):
        if name not in QUERIES:
            raise ValueError(f"no state query {name!r}")
        return QUERIES[name](*args)


class RemoteReader:
    """A Ray Client driver: the queries run in a StateProbe actor of this job."""

    def __init__(self, ray) -> None:
        self._ray = ray
        self._probe = ray.remote(StateProbe).options(
            num_cpus=0, enable_task_events=False).remote()

    def ask(self, name: str, *args):
        return self._ray.get(self._probe.ask.remote(name, *args), timeout=PROBE_TIMEOUT)

    def close(self) -> None:
        try:
            self._ray.kill(self._probe)
        except Exception:               # Ray is already down
            pass


def reader(ray) -> "LocalReader | RemoteReader":
    """The reader for this driver: local, or through a probe actor under Ray Client."""
    try:
        from ray.util.client import ray as client_ray
        remote = client_ray.is_connected()
    except ImportError:
        remote = False
    return RemoteReader(ray) if remote else LocalReader()


__all__ = ["reader", "LocalReader", "RemoteReader", "StateProbe", "QUERIES"]
