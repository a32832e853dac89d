"""get_runtime_context, nodes, resources, GPUs, timeline, exit_actor and
Ray's other top-level names, against a real cluster."""
from __future__ import annotations

import json
import os

import pytest

import shoal
from shoal.core import runtime
from shoal.launch.launcher import HostProcess
from shoal.exceptions import ActorDiedError
from conftest import wait_for


def is_hex(s) -> bool:
    return isinstance(s, str) and bool(s) and all(c in "0123456789abcdef" for c in s)


@shoal.remote
def context_in_task():
    ctx = shoal.get_runtime_context()
    return {"task": ctx.get_task_id(), "actor": ctx.get_actor_id(), "job": ctx.get_job_id(),
            "node": ctx.get_node_id(), "worker": ctx.get_worker_id(),
            "resources": ctx.get_assigned_resources(), "namespace": ctx.namespace,
            "gpus": shoal.get_gpu_ids()}


@shoal.remote
class Probe:
    def context(self):
        ctx = shoal.get_runtime_context()
        return {"task": ctx.get_task_id(), "actor": ctx.get_actor_id(), "job": ctx.get_job_id(),
                "resources": ctx.get_assigned_resources(), "name": ctx.get_actor_name()}

    def me(self):
        return shoal.get_runtime_context().current_actor

    def leave(self):
        shoal.actor.exit_actor()

    def ping(self):
        return "pong"


def test_driver_context(cluster):
    ctx = shoal.get_runtime_context()
    assert ctx.get_task_id() is None and ctx.get_actor_id() is None
    assert is_hex(ctx.get_job_id()) and is_hex(ctx.get_worker_id())
    assert ctx.get_node_id() == shoal.nodes()[0]["NodeID"]
    assert ctx.namespace == "default" and ctx.get_assigned_resources() == {}
    assert shoal.get_gpu_ids() == []
    with pytest.raises(RuntimeError):
        ctx.current_actor


def test_task_context_ids_are_hex_distinct_per_task_and_share_the_job(cluster):
    driver = shoal.get_runtime_context()
    seen = shoal.get([context_in_task.options(num_cpus=0.5).remote() for _ in range(6)])
    assert len({s["task"] for s in seen}) == 6 and all(is_hex(s["task"]) for s in seen)
    for s in seen:
        assert s["actor"] is None and s["job"] == driver.get_job_id()
        assert s["node"] == driver.get_node_id() and s["worker"] != driver.get_worker_id()
        assert s["resources"] == {"CPU": 0.5} and s["namespace"] == "default"


def test_actor_context_is_stable_per_actor(cluster):
    a = Probe.options(name="probe", num_cpus=1).remote()
    first, second = shoal.get([a.context.remote(), a.context.remote()])
    assert is_hex(first["actor"]) and first["actor"] == second["actor"]
    assert first["task"] != second["task"]
    assert first["job"] == shoal.get_runtime_context().get_job_id()
    assert first["resources"] == {"CPU": 1.0} and first["name"] == "probe"
    other = shoal.get(Probe.remote().context.remote())
    assert other["actor"] != first["actor"] and other["resources"] == {}
    assert shoal.get(a.me.remote()) == a


def test_nodes_and_resources_have_rays_keys(cluster):
    (node,) = shoal.nodes()
    assert node["Alive"] is True and is_hex(node["NodeID"])
    address = node["NodeManagerAddress"]
    assert address == shoal.util.get_node_ip_address() == "127.0.0.1"
    total = shoal.cluster_resources()
    assert total["CPU"] == 2 and total[f"node:{address}"] == 1
    assert total["memory"] > 0 and total["object_store_memory"] > 0
    assert "GPU" not in total                      # Ray leaves zero amounts out
    assert node["Resources"] == total
    holder = Probe.options(num_cpus=1).remote()
    shoal.get(holder.ping.remote())
    wait_for(lambda: shoal.available_resources().get("CPU") == 1, what="one CPU held")
    shoal.kill(holder)
    wait_for(lambda: shoal.available_resources().get("CPU") == 2, what="the CPU back")


def test_timeline_is_rays_event_list_and_writes_any_file(cluster, tmp_path):
    refs = [context_in_task.remote() for _ in range(3)]
    shoal.get(refs)
    events = shoal.timeline()
    assert isinstance(events, list)
    ran = [e for e in events if e["ph"] == "X"]
    assert {r.task_id() for r in refs} <= {e["args"]["task_id"] for e in ran}
    assert all({"name", "ts", "dur", "pid", "tid"} <= set(e) for e in ran)
    for name in ("trace.json", "trace.txt", "trace"):
        assert shoal.timeline(filename=str(tmp_path / name)) is None
        assert json.load(open(tmp_path / name)) and isinstance(
            json.load(open(tmp_path / name)), list)
    pq = pytest.importorskip("pyarrow.parquet")
    shoal.timeline(str(tmp_path / "runs.parquet"))
    assert {r.task_id() for r in refs} <= set(
        pq.read_table(tmp_path / "runs.parquet").column("task_id").to_pylist())


def test_exit_actor_kills_for_good_and_fails_its_calls(cluster):
    a = Probe.options(max_restarts=2).remote()
    assert shoal.get(a.__ray_ready__.remote()) is True
    with pytest.raises(ActorDiedError, match="exit_actor"):
        shoal.get(a.leave.remote())
    with pytest.raises(ActorDiedError):
        shoal.get(a.ping.remote(), timeout=30)
    with pytest.raises(TypeError, match="non-actor"):
        shoal.actor.exit_actor()


def test_ray_terminate_runs_after_queued_calls(cluster):
    a = Probe.remote()
    before = [a.ping.remote() for _ in range(3)]
    a.__ray_terminate__.remote()
    assert shoal.get(before) == ["pong"] * 3
    with pytest.raises(ActorDiedError):
        shoal.get(a.ping.remote(), timeout=30)


def test_async_actor_exit(cluster):
    @shoal.remote
    class Async:
        async def leave(self):
            shoal.actor.exit_actor()

        async def ping(self):
            return 1

    a = Async.remote()
    assert shoal.get(a.ping.remote()) == 1
    with pytest.raises(ActorDiedError):
        shoal.get(a.leave.remote())


def test_rays_other_names():
    assert shoal.ObjectID is shoal.ObjectRef
    from shoal.actor import ActorClass, ActorHandle, exit_actor
    assert isinstance(Probe, ActorClass) and ActorHandle is shoal.ActorHandle
    assert exit_actor is shoal.actor.exit_actor

    def annotated(progress_actor: shoal.actor.ActorHandle) -> None:   # Ray tutorials do this
        pass


def test_namespace_travels_to_tasks_and_actors(fresh_cluster):
    fresh_cluster(namespace="team")
    assert shoal.get_runtime_context().namespace == "team"
    shared = Probe.options(name="shared").remote()     # held: the actor lives while we do

    @shoal.remote
    def lookup():
        ns = shoal.get_runtime_context().namespace
        Probe.options(name="made-in-task", lifetime="detached").remote()
        return ns, shoal.get(shoal.get_actor("shared").ping.remote())

    assert shoal.get(lookup.remote()) == ("team", "pong")
    assert shoal.get_actor("shared") == shared
    assert shoal.get(shoal.get_actor("made-in-task").ping.remote()) == "pong"
    assert shoal.get(shoal.get_actor("made-in-task", namespace="team").ping.remote()) == "pong"
    with pytest.raises(ValueError):
        shoal.get_actor("shared", namespace="default")
    assert sorted(shoal.util.list_named_actors()) == ["made-in-task", "shared"]
    assert {"name": "shared", "namespace": "team"} in shoal.util.list_named_actors(True)


def test_init_local_mode(fresh_cluster):
    with pytest.raises(ValueError, match="local_mode"):
        shoal.init(local_mode=True)
    fresh_cluster(local_mode=False)
    assert shoal.get(context_in_task.remote())["actor"] is None


def test_gpu_ids_match_cuda_visible_devices(fresh_cluster):
    fresh_cluster(num_gpus=2)

    @shoal.remote(num_gpus=1)
    def gpus():
        return shoal.get_gpu_ids(), os.environ["CUDA_VISIBLE_DEVICES"], \
            shoal.get_runtime_context().get_accelerator_ids()

    ids, visible, accel = shoal.get(gpus.remote())
    assert len(ids) == 1 and visible == ",".join(map(str, ids))
    assert accel == {"GPU": [str(i) for i in ids]}
    assert shoal.cluster_resources()["GPU"] == 2


@pytest.mark.slow
def test_nodes_context_and_namespace_with_a_joined_host(fresh_cluster):
    """~7 s: a second host starts, serves a task, and leaves."""
    fresh_cluster(num_cpus=1, namespace="joined")
    rt = runtime.current()
    host = HostProcess(rt.address, rt.cluster.key, rt.client.cluster_id, rt.client.session_dir,
                       num_cpus=1, resources={"B": 1})
    try:
        wait_for(lambda: len(shoal.nodes()) == 2, what="the second host")
        ids = {n["NodeID"] for n in shoal.nodes()}
        total = shoal.cluster_resources()
        assert total["CPU"] == 2 and total["B"] == 1 and total["node:127.0.0.1"] == 2
        keeper = Probe.options(name="keeper").remote()

        @shoal.remote(resources={"B": 1})
        def on_b():
            ctx = shoal.get_runtime_context()
            return ctx.get_node_id(), ctx.namespace, shoal.get(
                shoal.get_actor("keeper").ping.remote())

        node, namespace, pong = shoal.get(on_b.remote(), timeout=60)
        assert node in ids and node != shoal.get_runtime_context().get_node_id()
        assert (namespace, pong) == ("joined", "pong")
        del keeper
    finally:
        host.stop()
    wait_for(lambda: [n["Alive"] for n in shoal.nodes()] == [True, False],
             what="the stopped host listed as not alive")
    assert {n["NodeID"] for n in shoal.nodes()} == ids
