"""Level 1: the scheduler's views (scheduler/views.py): typed records built
from the components, and the dicts that go over the wire."""
from shoal.cli import format_status
from shoal.protocol import messages as m
from shoal.protocol.messages import ObjectEntry
from shoal.scheduler import views
from test_scheduler_state import Harness


def busy_cluster():
    h = Harness(cpus=2)
    t = h.submit()
    h.s.handle(h.s.tasks[t].engine_id, m.EngineBlocked(task_id=t, blocked=True))
    h.s.handle("drv", m.PutObject(entry=ObjectEntry("p/0", host_id="h1", size=40), nested=[]))
    h.s.handle("drv", m.RefUpdates(ops=[("p/0", 1)]))
    h.s.handle("drv", m.SubmitTask(
        task_id="A.init", func_id="f", name="C.__init__", args=b"", deps=[], nested=[],
        return_ids=["A/created"], resources={"CPU": 1.0}, max_retries=0, actor_id="A",
        method="__init__", actor_options={"class_name": "C", "methods": {}, "name": "svc"}))
    h.out()
    return h, t


def test_status_is_a_typed_record_of_typed_records():
    h, t = busy_cluster()
    status = views.cluster_status(h.s)
    assert isinstance(status, views.ClusterStatus)
    assert [type(x) for x in (status.hosts[0], status.engines[0], status.actors[0],
                              status.clients[0], status.memory[0])] == [
        views.HostStatus, views.EngineStatus, views.ActorInfo, views.ClientStatus,
        views.HostMemory]
    blocked = next(e for e in status.engines if e.engine_id == h.s.tasks[t].engine_id)
    assert (blocked.state, blocked.blocked, blocked.task_id) == ("busy", True, t)   # as before
    assert status.actors[0].state == "STARTING" and status.actors[0].name == "svc"
    assert status.tasks["running"] == 1
    assert status.objects == {"count": 4, "bytes": 40}       # t/0, p/0, A, A/created
    assert status.memory[0].used == 40 and status.memory[0].objects == 1


def test_the_wire_keeps_its_keys_and_the_cli_reads_it():
    h, _ = busy_cluster()
    wire = h.s.status()
    assert set(wire) == {"cluster_id", "session_dir", "hosts", "departed_hosts", "engines",
                         "actors", "clients", "tasks", "objects", "memory"}
    assert set(wire["hosts"][0]) == {"host_id", "hostname", "pid", "resources", "available",
                                     "store_dir", "engines", "address"}
    assert set(wire["engines"][0]) == {"engine_id", "host_id", "pid", "task_id", "blocked",
                                       "actor_id", "state", "leased"}
    assert wire["hosts"][0]["address"] == "127.0.0.1"
    assert "h1" in format_status("127.0.0.1:1", wire)
    wire["hosts"][0]["resources"]["CPU"] = 99       # a copy: the scheduler's is untouched
    assert h.s.hosts["h1"].total["CPU"] == 2


def test_objects_and_memory_views():
    h, t = busy_cluster()
    h.s.handle("drv", m.Query(request_id=1, kind="objects", args={}))
    h.s.handle("drv", m.Query(request_id=2, kind="memory", args={}))
    objects, memory = [x.value for _, x in h.out() if isinstance(x, m.QueryReply)]
    by_id = {r["object_id"]: r for r in objects}
    assert "A" not in by_id                          # an actor's handle is shown as an actor
    assert by_id["p/0"]["where"] == "shared memory" and by_id["p/0"]["reference_count"] == 2
    assert by_id["p/0"]["held_by"] == ["driver pid 1 x2"]
    assert by_id[f"{t}/0"]["state"] == "pending"
    assert by_id[f"{t}/0"]["created_by"] == f"task f ({t}), running"
    assert memory == [{"host_id": "h1", "hostname": "h1", "used": 40, "limit": 1000,
                       "spilled": 0, "objects": 1}]
