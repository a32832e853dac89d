"""The Ray backend's widget half without Ray: Ray's state mapped to shoal's shapes
(shoal.backends.ray.views) and the polled event stream (events.TaskStream)."""
from __future__ import annotations

import json
import threading
import time

import pytest

from shoal.backends.ray import views
from shoal.backends.ray.events import TaskStream
from shoal.protocol.messages import TaskEvent

N1 = "aa11" * 14            # Ray node ids: 56 hex digits
N2 = "bb22" * 14
T = 1_700_000_000.0


def row(task, attempt=0, name="square", kind="NORMAL_TASK", node=N1, pid=101, error="",
        **times):
    return {"task_id": task, "attempt": attempt, "name": name, "type": kind, "node_id": node,
            "pid": pid, "times": {k: T + v for k, v in times.items()}, "error": error}


def test_task_attempts_become_shoals_task_events():
    rows = [
        row("t1", RUNNING=1, FINISHED=2),
        row("t2", node=N2, pid=202, RUNNING=1),
        row("t3", PENDING_NODE_ASSIGNMENT=0),                       # queued: not shown
        row("t4", error="TASK_CANCELLED", FAILED=3),               # cancelled before running
        row("t5", attempt=0, error="WORKER_DIED", RUNNING=1, FAILED=2),
        row("t5", attempt=1, error="TASK_EXECUTION_EXCEPTION", RUNNING=3, FAILED=4),
        row("t6", attempt=0, error="TASK_EXECUTION_EXCEPTION", RUNNING=1, FAILED=2),
        row("t6", attempt=1, RUNNING=3),
        row("d", kind="DRIVER_TASK", RUNNING=0),
        row("a", kind="ACTOR_CREATION_TASK", RUNNING=0, FINISHED=1),
        row("r", kind="ACTOR_TASK", name="OutputRelay.take", RUNNING=0),   # shoal's own
        row("m", kind="ACTOR_TASK", name="Counter.incr", RUNNING=5, FINISHED=6),
    ]
    events = views.task_events(rows)
    got = {k: (e.status, e.engine_id, e.host_id, e.start, e.end) for k, e in events.items()}
    assert got == {
        ("t1", 0): ("finished", "aa11aa11.101", "aa11aa11", T + 1, T + 2),
        ("t2", 0): ("running", "bb22bb22.202", "bb22bb22", T + 1, None),
        ("t4", 0): ("cancelled", "aa11aa11.101", "aa11aa11", None, T + 3),
        ("t5", 0): ("crashed", "aa11aa11.101", "aa11aa11", T + 1, T + 2),
        ("t5", 1): ("failed", "aa11aa11.101", "aa11aa11", T + 3, T + 4),
        ("t6", 0): ("retried", "aa11aa11.101", "aa11aa11", T + 1, T + 2),
        ("t6", 1): ("running", "aa11aa11.101", "aa11aa11", T + 3, None),
        ("m", 0): ("finished", "aa11aa11.101", "aa11aa11", T + 5, T + 6),
    }
    assert events[("m", 0)].name == "Counter.incr"
    assert views.queued(rows) == 1
    assert views.task_of("ab" * 28) == "ab" * 24


NODES = [
    {"NodeID": N2, "Alive": True, "NodeManagerAddress": "10.0.0.2",
     "NodeManagerHostname": "node-2", "Resources": {"CPU": 4.0, "node:10.0.0.2": 1.0}},
    {"NodeID": N1, "Alive": True, "NodeManagerAddress": "10.0.0.1",
     "NodeManagerHostname": "node-1", "Resources": {"CPU": 2.0, "GPU": 1.0,
                                                    "node:__internal_head__": 1.0}},
    {"NodeID": "cc33" * 14, "Alive": False, "NodeManagerAddress": "10.0.0.3",
     "Resources": {"CPU": 8.0}},
]
STATS = {
    N1: {"workers": [
        {"pid": 101, "type": "WORKER", "actor": "", "job": "01000000", "refs": [
            {"object_id": "o1", "size": 5_000_000, "local": 1, "submitted": 0, "pinned": True,
             "call_site": "", "task_status": "FINISHED"}]},
        {"pid": 102, "type": "WORKER", "actor": "ab" * 16, "job": "01000000", "refs": []},
        {"pid": 100, "type": "DRIVER", "actor": "", "job": "01000000", "refs": [
            {"object_id": "o1", "size": 5_000_000, "local": 2, "submitted": 1, "pinned": False,
             "call_site": "x = f.remote()", "task_status": "FINISHED"},
            {"object_id": "o2", "size": -1, "local": 1, "submitted": 0, "pinned": False,
             "call_site": "", "task_status": "PENDING_NODE_ASSIGNMENT"}]},
        {"pid": 103, "type": "WORKER", "actor": "", "job": "02000000", "refs": [
            {"object_id": "other", "size": 10, "local": 1, "submitted": 0, "pinned": True,
             "call_site": "", "task_status": "FINISHED"}]}],
        "store": {"used": 5_000_000, "available": 15_000_000, "spilled": 7, "objects": 1}},
    N2: {"workers": [{"pid": 202, "type": "WORKER", "actor": "ff" * 16, "job": "01000000",
                      "refs": []}],                            # Ray's nil actor id: none
         "store": {"used": 0, "available": 10_000_000, "spilled": 0, "objects": 0}},
}


def test_nodes_and_raylet_stats_become_the_cluster_status():
    events = [TaskEvent("t2", "square", "running", "bb22bb22.202", "bb22bb22", T, None),
              TaskEvent("t1", "square", "finished", "aa11aa11.101", "aa11aa11", T, T + 1),
              TaskEvent("t4", "square", "failed", None, None, None, T)]
    st = views.cluster_status(NODES, {N1: {"CPU": 1.0}, N2: {"CPU": 4.0}}, STATS, events,
                              waiting=3, actors=2)
    assert [h["host_id"] for h in st["hosts"]] == ["aa11aa11", "bb22bb22"]     # alive only
    h1 = st["hosts"][0]
    assert h1["hostname"] == "node-1" and h1["resources"] == {"CPU": 2.0, "GPU": 1.0}
    assert h1["available"] == {"CPU": 1.0}
    assert h1["engines"] == ["aa11aa11.101", "aa11aa11.102", "aa11aa11.103"]  # no driver
    assert {e["engine_id"]: e["state"] for e in st["engines"]} == {
        "aa11aa11.101": "idle", "aa11aa11.102": "actor", "aa11aa11.103": "idle",
        "bb22bb22.202": "busy"}
    assert st["tasks"] == {"waiting": 3, "running": 1, "finished": 1, "failed": 1,
                           "cancelled": 0}
    assert len(st["actors"]) == 2
    mine = views.cluster_status(NODES, {}, STATS, events, waiting=0, actors=0,
                                job_id="01000000")
    assert [e["engine_id"] for e in mine["engines"]] == ["aa11aa11.101", "aa11aa11.102",
                                                          "bb22bb22.202"]   # not job 2's
    assert st["memory"][0] == {"host_id": "aa11aa11", "hostname": "node-1", "used": 5_000_000,
                               "limit": 20_000_000, "spilled": 7, "objects": 1}
    from shoal.widgets.cluster import ClusterModel
    m = ClusterModel("ray:x", "Ray cluster")
    m.update(st)                       # the widget's model reads it as it reads shoal's
    v = m.view()
    assert v["totals"]["cpus"] == 6 and v["totals"]["engines"] == 4 and v["totals"]["busy"] == 2
    assert v["tasks"]["queued"] == 3 and v["tasks"]["done"] == 1


def test_object_references_become_object_rows_for_this_job():
    rows = {r["object_id"]: r for r in views.objects(STATS, job_id="01000000")}
    assert set(rows) == {"o1", "o2"}                          # another job's object left out
    assert rows["o1"]["size"] == 5_000_000 and rows["o1"]["reference_count"] == 4
    assert rows["o1"]["where"] == "object store" and rows["o1"]["hosts"] == ["aa11aa11"]
    assert rows["o2"]["size"] == 0 and rows["o2"]["state"] == "PENDING_NODE_ASSIGNMENT"
    assert "other" in {r["object_id"] for r in views.objects(STATS)}


def readonly_status(*nodes, types=None):
    mapping = {n: (types or {}).get(n, f"node_{n}") for n in nodes}
    return json.dumps({"autoscaler_report": {"node_type_mapping": mapping}}).encode()


def test_only_an_autoscaler_that_can_add_nodes_makes_the_cluster_scalable():
    assert not views.can_add_nodes(None, None)
    assert not views.can_add_nodes(readonly_status(N1, N2), b"0")     # `ray start`, no config
    assert views.can_add_nodes(readonly_status(N1, N2, types={N2: "worker-cpu"}), b"0")
    assert views.can_add_nodes(None, b"1")                           # autoscaler v2
    assert not views.can_add_nodes(b"{not json", None)


# ---------------------------------------------------------------------- the stream
class FakeGcs:
    """What the stream reads, changed by the test; counts the reads."""

    def __init__(self):
        self.rows, self.nodes, self.reads = [], [{"NodeID": N1, "Alive": True}], 0
        self.fail = False

    def read_rows(self):
        self.reads += 1
        if self.fail:
            raise ConnectionError("GCS down")
        return list(self.rows)

    def read_nodes(self):
        return list(self.nodes)


def wait_until(cond, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def stream_threads():
    return [t for t in threading.enumerate() if t.name == "shoal-ray-events"]


def test_the_stream_sends_a_snapshot_then_only_what_changed_and_stops_with_its_last_subscriber():
    gcs = FakeGcs()
    gcs.rows = [row("t1", RUNNING=1)]
    stream = TaskStream(gcs.read_rows, gcs.read_nodes, min_interval=0.02)
    got = []
    sub = stream.subscribe(got.append)
    wait_until(lambda: got, what="the snapshot")
    assert got[0].snapshot and [e.status for e in got[0].tasks] == ["running"]
    assert len(stream_threads()) == 1
    gcs.rows = [row("t1", RUNNING=1, FINISHED=2), row("t2", RUNNING=2)]
    wait_until(lambda: any(e.task_id == "t2" for b in got[1:] for e in b.tasks), what="news")
    news = [e for b in got[1:] for e in b.tasks]
    assert sorted((e.task_id, e.status) for e in news) == [("t1", "finished"), ("t2", "running")]
    assert any(b.objects_changed for b in got[1:])            # a task ended: new objects
    late = []
    sub2 = stream.subscribe(late.append)                     # a later subscriber: all known
    wait_until(lambda: late, what="the late snapshot")
    assert late[0].snapshot and len(late[0].tasks) == 2
    gcs.nodes = gcs.nodes + [{"NodeID": N2, "Alive": True}]
    wait_until(lambda: any(b.cluster_changed for b in got[1:]), what="a node came")
    sub.close()
    assert stream_threads()                                  # sub2 still listens
    sub2.close()
    sub2.close()
    assert not stream_threads()
    reads = gcs.reads
    time.sleep(0.1)
    assert gcs.reads == reads                                # no polling with no subscriber


def test_reads_are_spaced_by_what_they_cost():
    gcs = FakeGcs()
    clock = [0.0]
    slow = gcs.read_rows

    def costly():
        clock[0] += 1.0                  # each read "takes" a second of the stream's clock
        return slow()
    stream = TaskStream(costly, gcs.read_nodes, clock=lambda: clock[0], min_interval=0.0)
    sub = stream.subscribe(lambda b: None)
    wait_until(lambda: gcs.reads >= 1)
    time.sleep(0.3)
    assert gcs.reads == 1                # the next one waits BUDGET times that second
    sub.close()


def test_a_cluster_that_stops_answering_is_lost():
    gcs = FakeGcs()
    gcs.fail = True
    stream = TaskStream(gcs.read_rows, gcs.read_nodes, min_interval=0.01)
    sub = stream.subscribe(lambda b: None)
    wait_until(lambda: stream.lost, what="the stream to give up")
    assert "stopped answering" in stream.lost and sub.lost == stream.lost
    wait_until(lambda: not stream_threads(), what="the thread to end")
    with pytest.raises(ConnectionError):
        stream.subscribe(lambda b: None)


def test_a_running_attempt_waits_until_its_node_and_worker_are_known():
    early = row("t1", node=None, pid=None, RUNNING=1)
    assert views.task_events([early]) == {}
    ended = row("t1", node=None, pid=None, FINISHED=2)           # the owner's report first
    assert views.task_events([ended], now=T + 3) == {}
    late = views.task_events([ended], now=T + 2 + views.HOLD_BACK)   # the worker's never came
    assert late[("t1", 0)].status == "finished" and late[("t1", 0)].start is None
    both = row("t1", RUNNING=1, FINISHED=2)
    assert views.task_events([both])[("t1", 0)].start == T + 1
    never_ran = row("t2", node=None, pid=None, error="TASK_CANCELLED", FAILED=2)
    assert views.task_events([never_ran])[("t2", 0)].status == "cancelled"


def test_a_task_on_a_new_worker_says_the_cluster_changed():
    gcs = FakeGcs()
    stream = TaskStream(gcs.read_rows, gcs.read_nodes, min_interval=0.02)
    got = []
    sub = stream.subscribe(got.append)
    wait_until(lambda: got)
    gcs.rows = [row("t1", pid=333, RUNNING=1)]
    wait_until(lambda: any(e.task_id == "t1" for b in got for e in b.tasks))
    batch = next(b for b in got if any(e.task_id == "t1" for e in b.tasks))
    assert batch.cluster_changed                # the timeline asks for the engines again
    sub.close()


# ---------------------------------------------------------------------- scaling
class FakeReader:
    """The state queries a RayBackend asks, answered from the tables above."""

    def __init__(self, autoscaler):
        self.autoscaler, self.requests = autoscaler, []

    def ask(self, name, *args):
        if name == "request_cpus":
            self.requests.append(args[0])
            return None
        return {"nodes": NODES, "available": {}, "node_stats": STATS, "live_actors": 0,
                "task_rows": [], "autoscaler": self.autoscaler}[name]

    def close(self):
        pass


def view_with(reader):
    from shoal.backends.ray.cluster_view import ClusterView

    class Context:
        def get_job_id(self):
            return "01000000"

    class FakeRay:
        __version__ = "2.x"

        def get_runtime_context(self):
            return Context()

        def is_initialized(self):
            return True

    view = ClusterView()
    view.ray, view.address, view.in_worker, view._closed = FakeRay(), "ray:x", False, False
    view.name = "ray"
    view._reader = reader
    return view


def test_scaling_asks_the_autoscaler_for_the_other_nodes_cpus_plus_the_count():
    reader = FakeReader(autoscaler=True)
    view = view_with(reader)
    assert view.describe()["scalable"] is True
    view.scale(6, "bb22bb22")             # node-2 has 4 CPUs, node-1 2: ask for 2 + 6
    view.scale(1, "aa11aa11")
    assert reader.requests == [2 + 6, 4 + 1]
    with pytest.raises(ValueError, match="2 nodes: name one"):
        view.scale(3, None)
    with pytest.raises(ValueError, match="no node 'cc33'"):
        view.scale(3, "cc33")
    assert reader.requests == [2 + 6, 4 + 1]
    view._close_view()


def test_shoal_scale_and_the_magic_go_to_the_active_backend(monkeypatch):
    """shoal.scale (and %cluster scale, which calls it) scales whichever backend
    init() chose: on Ray, the node's CPUs through the autoscaler."""
    import shoal
    from shoal.core import backend
    reader = FakeReader(autoscaler=True)
    view = view_with(reader)
    monkeypatch.setattr(backend, "active", view)
    shoal.scale(3, host_id="aa11aa11")
    assert reader.requests == [4 + 3]
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="number of engines"):
            shoal.scale(bad, host_id="aa11aa11")
    view._close_view()


def test_without_an_autoscaler_there_is_no_scaling():
    view = view_with(FakeReader(autoscaler=False))
    assert view.describe()["scalable"] is False
    with pytest.raises(NotImplementedError, match="autoscaler"):
        view.scale(3, "aa11aa11")
    assert view.lost is None
    view._closed = True
    assert "shutdown" in view.lost


def test_the_state_listings_come_from_the_active_backend(monkeypatch):
    """shoal.util.state's engines, hosts, objects and memory on Ray are what the
    widgets show (Ray's state in shoal's shapes); task stories stay shoal's."""
    from shoal.core import backend
    from shoal.util import state
    view = view_with(FakeReader(autoscaler=False))
    monkeypatch.setattr(backend, "active", view)
    status = view.status()
    assert state.list_hosts() == status["hosts"] and len(status["hosts"]) == 2
    assert state.list_engines() == status["engines"]
    assert state.memory_summary() == view.memory()
    with pytest.raises(NotImplementedError, match="the ray backend"):
        state.task_story("t1")
    view._close_view()


def test_rays_actor_table_becomes_shoals_actor_list():
    rows = [{"ActorID": "a1", "ActorClassName": "Counter", "Name": "", "State": "ALIVE",
             "Address": {"NodeID": "aa11aa11" + "0" * 48}, "Pid": 4242, "NumRestarts": 1,
             "IsDetached": True, "DeathCause": ""},
            {"ActorID": "a2", "ActorClassName": "Gone", "Name": "named", "State": "DEAD",
             "Address": {"NodeID": "f" * 56}, "Pid": 0, "NumRestarts": 0, "IsDetached": False,
             "DeathCause": 'actor_died_error_context {\n  error_message: "it was killed"\n}'}]
    alive, dead = views.actors(rows)
    assert alive == {"actor_id": "a1", "class_name": "Counter", "name": None, "state": "ALIVE",
                     "engine_id": views.engine_id("aa11aa11" + "0" * 48, 4242),
                     "host_id": views.host_id("aa11aa11" + "0" * 48), "pid": 4242,
                     "restarts": 1, "detached": True, "death_cause": ""}
    assert (dead["name"], dead["host_id"], dead["engine_id"], dead["pid"],
            dead["death_cause"]) == ("named", None, None, None, "it was killed")
