"""Level 1: the scheduler's state machine, driven by messages, no sockets."""
import pickle

import pytest

from shoal.exceptions import ObjectLostError, TaskCancelledError, WorkerCrashedError
from shoal.protocol import messages as m
from shoal.protocol.messages import ObjectEntry
from shoal.protocol.serialization import deserialize, dumps, serialize
from shoal.scheduler import policy
from shoal.scheduler.state import SchedulerState


class Harness:
    """A scheduler with one driver ("drv"), hosts and engines named by strings."""

    def __init__(self, cpus=2, gpus=(), resources=None, **options):
        self.s = SchedulerState("c1", "/tmp/session", clock=lambda: 0.0, **options)
        self.n = 0
        self.s.handle("drv", m.ClientHello(client_id="d", kind="driver", pid=1, hostname="x"))
        self.add_host("h1", cpus, gpus, resources)
        self.s.handle("drv", m.RegisterFunction(func_id="f", name="f", blob=b"fn"))
        self.out()

    def add_host(self, host_id, cpus, gpus=(), resources=None, engines=None):
        self.s.handle(f"agent-{host_id}", m.RegisterHost(
            host_id=host_id, hostname=host_id, resources={"CPU": cpus, "GPU": len(gpus),
                                                          **(resources or {})},
            gpu_ids=list(gpus), store_dir="/dev/shm/x", spill_dir="/tmp/x", store_limit=1000,
            object_address="127.0.0.1:1",
            pid=2))
        for i in range(cpus if engines is None else engines):
            self.s.handle(f"{host_id}.e{i}", m.ClientHello(
                client_id=f"{host_id}.e{i}", kind="engine", pid=10 + i, hostname=host_id,
                host_id=host_id, engine_id=f"{host_id}.e{i}"))

    def out(self):
        return self.s.take_output()

    def submit(self, deps=(), resources=None, max_retries=3, conn="drv", parent=None):
        self.n += 1
        tid = f"t{self.n}"
        self.s.handle(conn, m.SubmitTask(
            task_id=tid, func_id="f", name="f", args=b"", deps=list(deps), nested=[],
            return_ids=[f"{tid}/0"], resources=resources or {"CPU": 1.0},
            max_retries=max_retries, parent_task_id=parent))
        return tid

    def executes(self, out):
        """{task_id: engine conn} of the ExecuteTask messages sent."""
        return {msg.task_id: conn for conn, msg in out if isinstance(msg, m.ExecuteTask)}

    def finish(self, engine, tid, value=1, failed=False, retryable=False):
        self.s.handle(engine, m.TaskFinished(
            task_id=tid, results=[ObjectEntry(f"{tid}/0", error=failed, inline=dumps(value))],
            failed=failed, retryable=retryable))

    def pushed(self, out, conn="drv"):
        return {e.object_id: e for c, msg in out if c == conn and isinstance(msg, m.ObjectsReady)
                for e in msg.entries}


def test_tasks_fill_idle_engines_then_pipeline_one_more_each():
    h = Harness(cpus=2)
    tids = [h.submit() for _ in range(5)]
    ex = h.executes(h.out())
    assert sorted(ex) == tids[:4]                      # 2 running + 1 queued behind each
    assert sorted(h.s.tasks[t].state for t in tids[:4]) == ["queued", "queued", "running", "running"]
    assert h.s.tasks[tids[4]].state == "ready"
    engine = ex[tids[0]]
    queued = h.s.engines[engine].queued[0]
    h.finish(engine, tids[0], value=5)
    out = h.out()
    assert deserialize(h.pushed(out)[f"{tids[0]}/0"].inline) == 5
    assert h.s.engines[engine].task_id == queued               # promoted: no round trip
    assert h.s.hosts["h1"].available["CPU"] == 0.0
    assert h.executes(out) == {tids[4]: engine}                 # and the next one queued


def test_an_idle_engine_takes_back_a_queued_task():
    h = Harness(cpus=2)
    a, b, c = h.submit(), h.submit(), h.submit()
    ex = h.executes(h.out())
    holder = ex[c]
    other = ex[a] if ex[a] != holder else ex[b]
    h.finish(other, a if ex[a] == other else b)
    revokes = [(conn, x) for conn, x in h.out() if isinstance(x, m.RevokeTask)]
    assert revokes == [(holder, m.RevokeTask(task_id=c))]
    h.s.handle(holder, m.TaskRevoked(task_id=c, ok=True))
    assert h.executes(h.out()) == {c: other}
    assert h.s.tasks[c].state == "running" and h.s.engines[other].task_id == c


def test_a_refused_revoke_leaves_the_task_where_it_runs():
    h = Harness(cpus=1)
    a, b = h.submit(), h.submit()
    h.out()
    h.s.handle("h1.e0", m.EngineBlocked(task_id=a, blocked=True))
    assert ("h1.e0", m.RevokeTask(task_id=b)) in h.out()
    h.finish("h1.e0", a)                     # it finished first; the engine started b
    h.s.handle("h1.e0", m.TaskRevoked(task_id=b, ok=False))
    assert h.s.engines["h1.e0"].task_id == b and h.s.tasks[b].state == "running"


def test_a_granted_revoke_undoes_a_promotion_that_crossed_it():
    h = Harness(cpus=2)
    a, b, c = h.submit(), h.submit(), h.submit()
    ex = h.executes(h.out())
    holder = ex[c]
    first = a if ex[a] == holder else b
    other_task = b if first == a else a
    h.finish(ex[other_task], other_task)            # the other engine goes idle: revoke c
    h.out()
    h.finish(holder, first)                         # crosses the engine's "ok": c promoted
    assert h.s.engines[holder].task_id == c
    h.s.handle(holder, m.TaskRevoked(task_id=c, ok=True))     # but the engine skipped it
    ex = h.executes(h.out())
    assert c in ex and h.s.tasks[c].state == "running"
    assert h.s.hosts["h1"].available["CPU"] == 1.0


def test_queued_tasks_of_a_lost_engine_cost_no_retry():
    h = Harness(cpus=1)
    a, b = h.submit(max_retries=0), h.submit(max_retries=0)
    h.out()
    h.s.connection_closed("h1.e0")
    assert isinstance(deserialize(h.pushed(h.out())[f"{a}/0"].inline), WorkerCrashedError)
    assert h.s.tasks[b].state == "ready" and h.s.tasks[b].retries_left == 0


def test_cancelling_a_queued_task_tells_the_engine_to_skip_it():
    h = Harness(cpus=1)
    a, b = h.submit(), h.submit()
    h.out()
    h.s.handle("drv", m.CancelTask(object_id=f"{b}/0", force=True))
    out = h.out()
    assert ("h1.e0", m.InterruptTask(task_id=b)) in out and not any(
        isinstance(x, m.StopEngine) for _, x in out)
    assert isinstance(deserialize(h.pushed(out)[f"{b}/0"].inline), TaskCancelledError)
    h.finish("h1.e0", a)
    assert h.s.engines["h1.e0"].task_id is None


def test_function_blob_is_shipped_once_per_engine():
    h = Harness(cpus=1)
    t1 = h.submit()
    [x1] = [x for _, x in h.out() if isinstance(x, m.ExecuteTask)]
    h.finish("h1.e0", t1)
    h.submit()
    [x2] = [x for _, x in h.out() if isinstance(x, m.ExecuteTask)]
    assert x1.func_blob == b"fn" and x2.func_blob is None


def test_a_retry_policy_travels_with_its_function_once_per_engine():
    h = Harness(cpus=1)
    h.s.handle("drv", m.RegisterFunction(func_id="g", name="g", blob=b"gn",
                                         retry_exceptions=b"policy"))
    sent = []
    for _ in range(2):
        h.s.handle("drv", m.SubmitTask(
            task_id=f"g{len(sent)}", func_id="g", name="g", args=b"", deps=[], nested=[],
            return_ids=[f"g{len(sent)}/0"], resources={"CPU": 1.0}))
        [x] = [x for _, x in h.out() if isinstance(x, m.ExecuteTask)]
        h.finish("h1.e0", x.task_id)
        sent.append(x)
    assert (sent[0].func_blob, sent[0].func_retry) == (b"gn", b"policy")
    assert (sent[1].func_blob, sent[1].func_retry) == (None, None)


def test_dependencies_wait_and_resolve_to_values():
    h = Harness(cpus=2)
    a = h.submit()
    b = h.submit(deps=[f"{a}/0"])
    ex = h.executes(h.out())
    assert list(ex) == [a]
    h.finish(ex[a], a, value=7)
    [xb] = [x for _, x in h.out() if isinstance(x, m.ExecuteTask)]
    assert xb.task_id == b and deserialize(xb.dep_values[0].inline) == 7


def test_errors_flow_through_dependent_tasks_without_running_them():
    h = Harness(cpus=1)
    a = h.submit()
    b = h.submit(deps=[f"{a}/0"])
    h.out()
    h.finish("h1.e0", a, value=ValueError("boom"), failed=True)
    out = h.out()
    assert not h.executes(out)
    pushed = h.pushed(out)
    assert pushed[f"{b}/0"].error and pushed[f"{b}/0"].inline == pushed[f"{a}/0"].inline


def test_engine_loss_retries_then_reports_a_crash():
    h = Harness(cpus=1)
    t = h.submit(max_retries=1)
    h.out()
    h.s.connection_closed("h1.e0")
    h.add_host("h2", 1)          # a replacement engine elsewhere
    assert list(h.executes(h.out())) == [t]
    h.s.connection_closed("h2.e0")
    err = deserialize(h.pushed(h.out())[f"{t}/0"].inline)
    assert isinstance(err, WorkerCrashedError) and "max_retries=1" in str(err)
    assert h.s.hosts["h1"].available == {"CPU": 1.0} == h.s.hosts["h2"].available


def test_retryable_application_errors_are_retried():
    h = Harness(cpus=1)
    t = h.submit(max_retries=2)
    h.out()
    h.finish("h1.e0", t, value=ValueError("flaky"), failed=True, retryable=True)
    assert list(h.executes(h.out())) == [t]


def test_cancel_queued_and_running_tasks():
    h = Harness(cpus=1)
    running, _, queued = h.submit(), h.submit(), h.submit()
    h.out()
    h.s.handle("drv", m.CancelTask(object_id=f"{queued}/0"))
    err = deserialize(h.pushed(h.out())[f"{queued}/0"].inline)
    assert isinstance(err, TaskCancelledError)
    h.s.handle("drv", m.CancelTask(object_id=f"{running}/0"))
    assert any(isinstance(x, m.InterruptTask) for _, x in h.out())
    h.s.handle("drv", m.CancelTask(object_id=f"{running}/0", force=True))
    out = h.out()
    assert any(isinstance(x, m.StopEngine) and x.restart for _, x in out)
    assert isinstance(deserialize(h.pushed(out)[f"{running}/0"].inline), TaskCancelledError)


def test_recursive_cancel_reaches_child_tasks():
    h = Harness(cpus=2)
    parent = h.submit()
    h.out()
    child = h.submit(conn="h1.e0" if h.s.engines["h1.e0"].task_id == parent else "h1.e1",
                     parent=parent, resources={"CPU": 5.0})     # stays queued
    h.s.handle("drv", m.CancelTask(object_id=f"{parent}/0"))
    assert child not in h.s.tasks


def test_blocked_engine_lends_its_cpu_and_gets_a_helper_engine():
    h = Harness(cpus=1)
    parent = h.submit(max_retries=0)
    h.out()
    child = h.submit(conn="h1.e0", parent=parent)
    assert h.executes(h.out()) == {child: "h1.e0"}          # queued behind its parent
    h.s.handle("h1.e0", m.EngineBlocked(task_id=parent, blocked=True))
    assert ("h1.e0", m.RevokeTask(task_id=child)) in h.out()
    h.s.handle("h1.e0", m.TaskRevoked(task_id=child, ok=True))
    assert any(isinstance(x, m.StartEngines) for _, x in h.out())
    h.s.handle("h1.e1", m.ClientHello(client_id="e1", kind="engine", pid=3, hostname="h1",
                                      host_id="h1", engine_id="h1.e1"))
    assert h.executes(h.out()) == {child: "h1.e1"}
    h.finish("h1.e1", child)
    h.s.handle("h1.e0", m.EngineBlocked(task_id=parent, blocked=False))
    h.s.connection_closed("h1.e0")          # dies after blocking: nothing lent is lost
    assert h.s.hosts["h1"].available["CPU"] == 1.0


def test_reference_counts_free_objects_and_their_store_files():
    h = Harness(cpus=1)
    h.s.handle("drv", m.PutObject(entry=ObjectEntry("p1", host_id="h1", size=10)))
    t = h.submit(deps=["p1"])
    h.s.handle("drv", m.RefUpdates(ops=[("p1", -1)]))
    assert "p1" in h.s.objects                 # the pending task still needs it
    h.out()
    h.finish("h1.e0", t)
    out = h.out()
    assert "p1" not in h.s.objects
    assert ("agent-h1", m.FreeObjects(object_ids=["p1"])) in out


def test_nested_refs_keep_objects_alive():
    h = Harness(cpus=1)
    h.s.handle("drv", m.PutObject(entry=ObjectEntry("inner", inline=b"x")))
    h.s.handle("drv", m.PutObject(entry=ObjectEntry("outer", inline=b"y"), nested=["inner"]))
    h.s.handle("drv", m.RefUpdates(ops=[("inner", -1)]))
    assert "inner" in h.s.objects
    h.s.handle("drv", m.RefUpdates(ops=[("outer", -1)]))
    assert not h.s.objects


def test_a_departed_driver_releases_everything_it_held():
    h = Harness(cpus=1)
    h.s.handle("drv", m.PutObject(entry=ObjectEntry("p1", inline=b"x")))
    h.submit(), h.submit()
    h.s.connection_closed("drv")
    assert not h.s.objects and not h.s.tasks


def test_missing_dependency_fails_the_task_with_object_lost():
    h = Harness(cpus=1)
    t = h.submit(deps=["nope"])
    assert isinstance(deserialize(h.pushed(h.out())[f"{t}/0"].inline), ObjectLostError)


def test_infeasible_tasks_warn_once_and_wait_for_a_host():
    h = Harness(cpus=1)
    t = h.submit(resources={"CPU": 1.0, "TPU": 1.0})
    h.submit(resources={"CPU": 1.0, "TPU": 1.0})
    notices = [x for _, x in h.out() if isinstance(x, m.Notice)]
    assert len(notices) == 1 and "TPU" in notices[0].text     # once per resource shape
    h.add_host("h2", 1, resources={"TPU": 1})
    assert t in h.executes(h.out())


def test_gpu_tasks_get_gpu_ids_and_fractions_share():
    h = Harness(cpus=4, gpus=(0, 1))
    a = h.submit(resources={"CPU": 1.0, "GPU": 1.0})
    b = h.submit(resources={"CPU": 1.0, "GPU": 0.5})
    c = h.submit(resources={"CPU": 1.0, "GPU": 0.5})
    d = h.submit(resources={"CPU": 1.0, "GPU": 1.0})
    ex = {x.task_id: x.gpu_ids for _, x in h.out() if isinstance(x, m.ExecuteTask)}
    assert ex[a] == [0] and ex[b] == ex[c] == [1] and d not in ex


def test_policy_spreads_and_checks_fit():
    class H:
        def __init__(self, total, available):
            self.total, self.available = total, available
    busy, free = H({"CPU": 4}, {"CPU": 1}), H({"CPU": 4}, {"CPU": 3})
    assert policy.choose_host({"CPU": 1}, [busy, free], lambda h: True) is free
    assert policy.choose_host({"CPU": 2}, [busy], lambda h: True) is None
    assert not policy.feasible_anywhere({"CPU": 8}, [busy, free])
    assert policy.allocate_gpus({0: 0.25, 1: 1.0}, 0.5) == [1]
    assert policy.allocate_gpus({0: 1.0}, 2) is None


def test_messages_before_hello_are_refused():
    s = SchedulerState("c", "/tmp")
    with pytest.raises(ValueError):
        s.handle("stranger", m.Subscribe(object_ids=["x"]))


def test_event_stream_snapshot_then_batches_only_for_subscribers():
    h = Harness(cpus=1)
    t1 = h.submit()
    h.out()
    h.finish("h1.e0", t1)
    assert h.s.take_events() == []                     # nobody listens: nothing kept
    h.s.handle("drv", m.SubscribeEvents())
    [(conn, snap)] = [(c, x) for c, x in h.out() if isinstance(x, m.Events)]
    assert conn == "drv" and snap.snapshot and [e.status for e in snap.tasks] == ["finished"]
    t2 = h.submit()
    h.finish("h1.e0", t2, failed=True, value=ValueError())
    [(conn, batch)] = h.s.take_events()
    assert [(e.task_id, e.status) for e in batch.tasks] == [(t2, "running"), (t2, "failed")]
    assert batch.objects_changed and not batch.snapshot
    assert h.s.take_events() == []
    h.s.handle("drv", m.SubscribeEvents(subscribe=False))
    h.submit()
    assert h.s.take_events() == []


def test_a_silent_host_is_lost_after_the_heartbeat_timeout():
    now = [0.0]
    s = SchedulerState("c", "/tmp", clock=lambda: now[0], heartbeat_timeout=6.0)
    s.handle("agent", m.RegisterHost(host_id="h", hostname="h", resources={"CPU": 1},
                                     gpu_ids=[], store_dir="/x", spill_dir="/y", store_limit=1,
                                     object_address="a:1", pid=1))
    now[0] = 3.0
    assert s.heartbeat() == [] and ("agent", m.Heartbeat()) in s.take_output()
    s.handle("agent", m.Heartbeat())
    now[0] = 8.0
    assert s.heartbeat() == []                    # heard at 3.0: 5 s of silence is fine
    now[0] = 9.5
    assert s.heartbeat() == ["agent"]
    s.connection_closed("agent")
    assert not s.hosts


def test_placement_prefers_the_host_holding_the_arguments():
    h = Harness(cpus=2)
    h.add_host("h2", 1)
    h.s.handle("drv", m.PutObject(entry=ObjectEntry("big", host_id="h2", size=10**8)))
    t = h.submit(deps=["big"])
    assert h.executes(h.out())[t].startswith("h2.")
    t2 = h.submit()
    assert h.executes(h.out())[t2].startswith("h1.")       # no data: the freest host


def _submit_generator(h, mode="streaming"):
    h.n += 1
    tid = f"t{h.n}"
    h.s.handle("drv", m.SubmitTask(
        task_id=tid, func_id="f", name="gen", args=b"", deps=[], nested=[],
        return_ids=[f"{tid}/0"], resources={"CPU": 1.0}, generator=mode))
    return tid


def test_streamed_items_reach_the_owner_as_they_come_and_live_while_held():
    h = Harness(cpus=1)
    tid = _submit_generator(h)
    engine = h.executes(h.out())[tid]
    item = ObjectEntry(f"{tid}/g0", inline=dumps("a"))
    h.s.handle(engine, m.GeneratorItem(task_id=tid, index=0, entry=item))
    assert h.pushed(h.out()) == {f"{tid}/g0": item}            # before the task ends
    assert h.s.objects[f"{tid}/g0"].holders == {"drv": 1}
    h.s.handle(engine, m.GeneratorItem(task_id=tid, index=0, entry=item))   # a retry's copy
    assert h.pushed(h.out()) == {}
    h.finish(engine, tid, value=1)
    assert deserialize(h.pushed(h.out())[f"{tid}/0"].inline) == 1
    h.s.handle("drv", m.RefUpdates(ops=[(f"{tid}/g0", -1)]))
    assert f"{tid}/g0" not in h.s.objects


def test_items_of_a_stale_or_ownerless_generator_are_dropped():
    h = Harness(cpus=1)
    tid = _submit_generator(h)
    engine = h.executes(h.out())[tid]
    stored = ObjectEntry(f"{tid}/g0", host_id="h1", size=10)
    h.s.handle(engine, m.GeneratorItem(task_id="nope", index=0, entry=stored))
    assert f"{tid}/g0" not in h.s.objects
    assert any(isinstance(msg, m.FreeObjects) and msg.object_ids == [f"{tid}/g0"]
               for _, msg in h.out())
    h.s.handle(engine, m.GeneratorItem(task_id=tid, index=1, entry=stored))  # wrong id
    assert f"{tid}/g0" not in h.s.objects


def test_nothing_is_queued_behind_a_task_that_waits_in_get():
    # Queuing behind a caller that blocks in get on every call made a revoke
    # storm (one per call) and kept the queued task from ever starting.
    h = Harness(cpus=1)
    a, b = h.submit(), h.submit()
    assert h.executes(h.out()) == {a: "h1.e0", b: "h1.e0"}          # b queued behind a
    h.s.handle("h1.e0", m.EngineBlocked(task_id=a, blocked=True))
    h.s.handle("h1.e0", m.TaskRevoked(task_id=b, ok=True))
    h.out()
    for _ in range(3):
        h.s.handle("h1.e0", m.EngineBlocked(task_id=a, blocked=False))
        h.s.handle("h1.e0", m.EngineBlocked(task_id=a, blocked=True))
        out = h.out()
        assert not any(isinstance(msg, (m.ExecuteTask, m.RevokeTask)) and msg.task_id == b
                       for _, msg in out)
    assert h.s.tasks[b].state == "ready"


def test_blocked_engines_start_engines_for_the_backlog_at_once():
    h = Harness(cpus=2)
    a, b = h.submit(), h.submit()
    ex = h.executes(h.out())
    h.s.handle("drv", m.PutObject(entry=ObjectEntry("p0", inline=dumps(0))))
    dep = h.submit()                          # what the waiting tasks need
    waiting = [h.submit(deps=[f"{dep}/0"]) for _ in range(4)]
    for tid in (a, b):
        h.s.handle(ex[tid], m.EngineBlocked(task_id=tid, blocked=True))
    ex2 = h.executes(h.out())
    h.finish(ex2[dep], dep)                  # four tasks become ready in one event
    started = sum(msg.count for _, msg in h.out() if isinstance(msg, m.StartEngines))
    assert started == 2 and h.s.hosts["h1"].starting == 2     # one per lent CPU, at once
    assert all(h.s.tasks[t].state == "ready" for t in waiting)


def test_ready_values_are_pushed_in_batches_under_the_frame_limit():
    from shoal.protocol.messages import ObjectEntry
    from shoal.scheduler.outbox import PUSH_BATCH_BYTES, batches as _batches
    entries = [ObjectEntry(f"o{i}", inline=b"x" * 99_000) for i in range(700)]
    batches = _batches(entries)
    assert [e for b in batches for e in b] == entries
    assert all(sum(len(e.inline) for e in b) <= PUSH_BATCH_BYTES for b in batches)
    assert len(batches) == 5 and _batches([]) == []


def test_an_actor_outlives_its_creator_while_another_process_holds_a_handle():
    h = Harness(cpus=2)
    h.s.handle("h1.e0", m.SubmitTask(
        task_id="A1.init", func_id="f", name="C.__init__", args=b"", deps=[], nested=[],
        return_ids=["A1/created"], resources={"CPU": 1.0}, max_retries=0, actor_id="A1",
        method="__init__", actor_options={"class_name": "C", "methods": {}}))
    h.s.handle("drv", m.RefUpdates(ops=[("A1", 1)]))     # the handle reached the driver
    h.s.connection_closed("h1.e0")                         # its creator's engine exits
    actor = h.s.actors["A1"]
    assert actor.state != "dead" and actor.owner == "drv"
    h.s.handle("drv", m.RefUpdates(ops=[("A1", -1)]))
    assert actor.state == "dead" and "out of scope" in actor.death_cause
    h.s.handle("h1.e1", m.SubmitTask(
        task_id="A2.init", func_id="f", name="C.__init__", args=b"", deps=[], nested=[],
        return_ids=["A2/created"], resources={"CPU": 1.0}, max_retries=0, actor_id="A2",
        method="__init__", actor_options={"class_name": "C", "methods": {}}))
    h.s.connection_closed("h1.e1")                         # nobody else has a handle
    assert h.s.actors["A2"].state == "dead"


def _restartable_host(h, host_id="h2", conn="agent-h2b", pid=3):
    h.s.handle(conn, m.RegisterHost(
        host_id=host_id, hostname=host_id, resources={"CPU": 1, "B": 1}, gpu_ids=[],
        store_dir="/dev/shm/y", spill_dir="/tmp/y", store_limit=1000,
        object_address=f"127.0.0.1:{pid}", pid=pid, restartable=True))


def test_a_restartable_hosts_agent_death_keeps_its_place_and_objects():
    now = [0.0]
    h = Harness(cpus=1)
    h.s.clock = lambda: now[0]
    _restartable_host(h, conn="agent-h2")
    h.s.handle("h2.e0", m.ClientHello(client_id="h2.e0", kind="engine", pid=20, hostname="h2",
                                      host_id="h2", engine_id="h2.e0"))
    h.s.handle("drv", m.PutObject(entry=ObjectEntry("kept", host_id="h2", size=10)))
    on_h2 = h.submit(resources={"CPU": 1.0, "B": 1.0})
    assert h.executes(h.out()) == {on_h2: "h2.e0"}
    h.s.connection_closed("agent-h2")                           # the agent dies
    assert "h2" in h.s.hosts and "h2.e0" not in h.s.engines     # its place is kept
    assert h.s.tasks[on_h2].state == "ready" and h.s.tasks[on_h2].retries_left == 2  # retried
    assert h.s.objects["kept"].entry.host_id == "h2"            # not lost, not rebuilt
    h.s.handle("drv", m.RefUpdates(ops=[("kept", -1)]))         # freed while it is down
    h.out()
    _restartable_host(h, conn="agent-h2-new", pid=4)            # its owner restarted it
    out = h.out()
    assert h.s.hosts["h2"].conn == "agent-h2-new" and h.s.hosts["h2"].object_address.endswith(":4")
    assert ("agent-h2-new", m.FreeObjects(object_ids=["kept"])) in out   # held for it
    h.s.handle("h2.r1.e0", m.ClientHello(client_id="n", kind="engine", pid=30, hostname="h2",
                                         host_id="h2", engine_id="h2.r1.e0"))
    assert h.executes(h.out()) == {on_h2: "h2.r1.e0"}           # the retry runs there


def test_a_restartable_host_with_no_new_agent_is_lost_after_the_timeout():
    now = [0.0]
    h = Harness(cpus=1)
    h.s.clock = lambda: now[0]
    _restartable_host(h, conn="agent-h2")
    h.s.handle("drv", m.PutObject(entry=ObjectEntry("only-there", host_id="h2", size=10)))
    h.s.connection_closed("agent-h2")
    h.out()
    now[0] = 3.0
    h.s.heartbeat()
    assert "h2" in h.s.hosts
    now[0] = h.s.heartbeat_timeout + 1.0
    h.s.heartbeat()
    assert "h2" not in h.s.hosts
    assert h.s.objects["only-there"].entry.error                # a put: lost with its host


def _shares_memory(chunks, view) -> bool:
    base = _address(view)
    return any(type(c) is memoryview and c.nbytes and _address(c) == base for c in chunks[2:])


def _address(view) -> int:
    """Where a (read-only) buffer's bytes are, to tell a forwarded buffer from a copy."""
    import numpy as np
    return np.frombuffer(view, dtype=np.uint8).__array_interface__["data"][0]


def _wire(msg, received=None):
    """Through the real codec and frame decoder, as the scheduler's sockets do;
    the frame's buffers go into `received`."""
    from shoal.protocol import codec
    from shoal.protocol.framing import FrameDecoder
    data = b"".join(bytes(c) for c in codec.encode(msg))
    [frame] = FrameDecoder().feed(data)
    if received is not None:
        received.extend(frame[1])
    return codec.decode(*frame)


def test_arguments_and_inline_results_cross_the_scheduler_as_opaque_buffers():
    """Arguments and small results arrive out-of-band and go on as the very
    buffers that arrived: the scheduler neither copies nor decodes them."""
    from shoal.protocol import codec
    h = Harness(cpus=1)
    args, frame = bytes(range(256)) * 8, []
    spec = _wire(m.SubmitTask(task_id="tx", func_id="f", name="f", args=pickle.PickleBuffer(args),
                              deps=[], nested=[], return_ids=["tx/0"], resources={"CPU": 1.0}),
                 frame)
    assert type(spec.args) is pickle.PickleBuffer and spec.args.raw().readonly
    assert _address(spec.args) == _address(frame[0])           # decoding copied nothing
    h.s.handle("drv", spec)
    [(engine, execute)] = [(c, msg) for c, msg in h.out() if isinstance(msg, m.ExecuteTask)]
    chunks = codec.encode(execute)
    assert _shares_memory(chunks, spec.args)
    assert _wire(execute).args.raw() == args
    value = serialize("result" * 1000).packed()
    h.s.handle(engine, _wire(m.TaskFinished(
        task_id="tx", results=[ObjectEntry("tx/0", inline=value, size=value.raw().nbytes)])))
    received = h.s.objects["tx/0"].entry.inline
    [push] = [msg for c, msg in h.out() if c == "drv" and isinstance(msg, m.ObjectsReady)]
    assert _shares_memory(codec.encode(push), received)
    assert deserialize(_wire(push).entries[0].inline) == "result" * 1000


def test_a_driver_keeps_each_batched_value_apart_from_its_batch():
    """Values pushed in one ObjectsReady share a frame; decoding copies them
    apart so one kept value does not pin the rest (a lone value stays a view)."""
    from shoal.protocol.codec import unshared as _unshared
    values = [serialize(str(i) * 2000).packed() for i in range(3)]
    batch = _wire(m.ObjectsReady(entries=[ObjectEntry(f"o{i}", inline=v) for i, v in
                                          enumerate(values)]))
    kept = _unshared(batch.entries)
    assert [type(e.inline) for e in kept] == [bytes] * 3
    assert [deserialize(e.inline) for e in kept] == [str(i) * 2000 for i in range(3)]
    alone = _wire(m.ObjectsReady(entries=[ObjectEntry("o", inline=values[0])])).entries
    assert _unshared(alone) is alone


# ---- deeper queues for short tasks (policy.QueueRoom) -----------------------------------

def short_queue(h, engine="h1.e0", n=policy.QUEUE_MAX + 24, seconds=0.00001):
    """One engine's queue, deep once its function is known to take `seconds`
    (by default short enough for QUEUE_MAX of them to make under QUEUE_WORK)."""
    tids = [h.submit() for _ in range(n)]
    h.out()
    running = h.s.engines[engine].task_id
    h.s.handle(engine, m.TaskFinished(task_id=running, results=[ObjectEntry(
        f"{running}/0", inline=dumps(1))], ran_for=seconds))
    return tids, h.out()


def test_short_tasks_queue_deeper_once_their_run_time_is_known():
    h = Harness(cpus=1)
    tids, out = short_queue(h)
    engine = h.s.engines["h1.e0"]
    assert h.s.run_times["f"] == 0.00001
    assert len(engine.queued) == policy.QUEUE_MAX
    assert list(engine.queued) == tids[2:2 + policy.QUEUE_MAX]      # in submission order
    assert list(h.executes(out)) == tids[2:2 + policy.QUEUE_MAX]    # sent in one flush
    assert engine.task_id == tids[1]                                # promoted: the first queued
    assert all(h.s.tasks[t].state == "queued" for t in engine.queued)


def test_a_finished_task_hands_its_engine_and_cpu_to_the_one_queued_behind_it():
    h = Harness(cpus=1)
    tids, _ = short_queue(h)
    engine, host = h.s.engines["h1.e0"], h.s.hosts["h1"]
    nxt = engine.queued[0]
    h.finish("h1.e0", engine.task_id)
    assert engine.task_id == nxt and engine.state == "busy"
    assert h.s.tasks[nxt].held == {"CPU": 1.0} and h.s.tasks[nxt].state == "running"
    assert host.available["CPU"] == 0.0 and "h1" not in h.s.members.idle
    for _ in tids:                                 # and so to the last: then it is idle
        if engine.task_id is None:
            break
        h.finish("h1.e0", engine.task_id)
        h.out()
    assert engine.state == "idle" and host.available["CPU"] == 1.0 and not h.s.tasks


def test_a_finished_task_gives_its_cpu_back_when_what_was_queued_behind_it_is_gone():
    h = Harness(cpus=1, queue_max=1)
    running, queued = h.submit(), h.submit()
    h.out()
    engine, host = h.s.engines["h1.e0"], h.s.hosts["h1"]
    assert list(engine.queued) == [queued]
    del h.s.tasks[queued]                  # as if it ended while the report was on its way
    h.finish("h1.e0", running)
    assert engine.task_id is None and engine.state == "idle" and host.available["CPU"] == 1.0


def test_a_cluster_may_keep_one_queued_whatever_the_run_times():
    h = Harness(cpus=1, queue_max=1)
    short_queue(h)
    assert len(h.s.engines["h1.e0"].queued) == 1


def test_long_tasks_keep_one_queued():
    h = Harness(cpus=1)
    short_queue(h, seconds=0.5)
    assert len(h.s.engines["h1.e0"].queued) == 1


def test_a_queue_holds_about_queue_work_of_tasks():
    h = Harness(cpus=1)
    short_queue(h, seconds=policy.QUEUE_WORK / 4)
    assert len(h.s.engines["h1.e0"].queued) == 3           # and the running one: 4 quarters


def test_queued_tasks_are_promoted_in_order_and_refilled():
    h = Harness(cpus=1)
    tids, _ = short_queue(h)
    engine = h.s.engines["h1.e0"]
    for expected in tids[2:6]:
        h.finish("h1.e0", engine.task_id)
        assert engine.task_id == expected
    assert len(engine.queued) == policy.QUEUE_MAX


def test_an_idle_engine_takes_back_the_later_half_of_a_queue():
    h = Harness(cpus=2)
    tids = [h.submit() for _ in range(2 + policy.QUEUE_MAX + 1)]
    ex = h.executes(h.out())
    first = tids[0]
    h.s.handle(ex[first], m.TaskFinished(task_id=first, results=[ObjectEntry(
        f"{first}/0", inline=dumps(1))], ran_for=0.00001))
    h.out()
    busy = h.s.engines[ex[first]]
    other = next(e for e in h.s.engines.values() if e is not busy)
    h.finish(other.engine_id, other.task_id)
    h.finish(other.engine_id, other.task_id)          # idle, with nothing ready: steal
    assert other.task_id is None and not h.s.ready
    revoked = [x.task_id for c, x in h.out() if isinstance(x, m.RevokeTask)]
    queued = list(busy.queued)
    assert revoked == queued[len(queued) // 2:] and revoked
    for t in revoked:
        h.s.handle(busy.engine_id, m.TaskRevoked(task_id=t, ok=True))
    ex = h.executes(h.out())
    assert set(ex) <= set(revoked) and set(ex.values()) == {other.engine_id}
    assert list(busy.queued) == queued[:len(queued) // 2]


def test_granted_revokes_that_crossed_promotions_promote_the_next_queued_task():
    h = Harness(cpus=1)
    tids, _ = short_queue(h, n=5, seconds=0.0001)
    engine = h.s.engines["h1.e0"]
    running, (x, y, z) = tids[1], tids[2:5]
    h.s.handle("h1.e0", m.EngineBlocked(task_id=running, blocked=True))   # asks back x, y, z
    revoked = [t.task_id for c, t in h.out() if isinstance(t, m.RevokeTask)]
    assert revoked == [x, y, z]
    h.finish("h1.e0", running)                 # crosses the engine's answers: x promoted
    assert engine.task_id == x
    h.s.handle("h1.e0", m.TaskRevoked(task_id=x, ok=True))     # skipped: the engine went to y
    assert engine.task_id == y and h.s.tasks[x].state != "running"
    h.s.handle("h1.e0", m.TaskRevoked(task_id=y, ok=False))    # y had started
    assert engine.task_id == y and h.s.tasks[y].state == "running"
    h.s.handle("h1.e0", m.TaskRevoked(task_id=z, ok=True))
    assert not engine.queued or z not in engine.queued
    h.finish("h1.e0", y)
    h.out()
    assert h.s.hosts["h1"].available["CPU"] == 0.0            # x or z runs now, held once
    assert sorted(t for t in (x, z) if h.s.tasks[t].state == "running") == [engine.task_id]


def test_a_lost_engine_gives_back_its_whole_queue_in_order_without_spending_retries():
    h = Harness(cpus=1)
    tids, _ = short_queue(h, n=30)
    queued = list(h.s.engines["h1.e0"].queued)
    h.s.connection_closed("h1.e0")
    h.out()
    assert all(h.s.tasks[t].state == "ready" and h.s.tasks[t].retries_left == 3 for t in queued)
    ready = [t for q in h.s.ready.values() for t in q]
    assert ready[:len(queued)] == queued


def test_cancelling_a_task_in_the_middle_of_a_queue_skips_only_it():
    h = Harness(cpus=1)
    tids, _ = short_queue(h, n=6)
    engine = h.s.engines["h1.e0"]
    x, y, z = list(engine.queued)[:3]
    h.s.handle("drv", m.CancelTask(object_id=f"{y}/0"))
    assert ("h1.e0", m.InterruptTask(task_id=y)) in h.out()
    assert y not in engine.queued
    h.finish("h1.e0", engine.task_id)
    assert engine.task_id == x
    h.finish("h1.e0", x)
    assert engine.task_id == z


def test_only_one_task_is_queued_behind_a_long_running_one():
    h = Harness(cpus=1)
    h.s.handle("drv", m.RegisterFunction(func_id="g", name="g", blob=b"fn"))
    h.s.run_times.update(f=0.0001, g=5.0)
    h.s.handle("drv", m.SubmitTask(task_id="long", func_id="g", name="g", args=b"", deps=[],
                                   nested=[], return_ids=["long/0"], resources={"CPU": 1.0}))
    short = [h.submit() for _ in range(10)]
    assert h.s.engines["h1.e0"].task_id == "long"
    assert list(h.s.engines["h1.e0"].queued) == short[:1]
    h.finish("h1.e0", "long")
    assert len(h.s.engines["h1.e0"].queued) == 9               # behind a short one: deeper


def test_with_batch_placement_a_reads_messages_are_placed_once_at_its_end():
    h = Harness(cpus=2)
    h.s.batch_placement = True                # as the I/O shell sets it
    tids = [h.submit() for _ in range(5)]
    assert all(h.s.tasks[t].state == "ready" for t in tids)      # nothing placed yet
    ex = h.executes(h.out())                                     # the read is done
    assert sorted(ex) == tids[:4]
    assert sorted(h.s.tasks[t].state for t in tids) == ["queued", "queued", "ready",
                                                        "running", "running"]
    h.finish(ex[tids[0]], tids[0])
    assert h.executes(h.out()) == {tids[4]: ex[tids[0]]}


def test_a_run_is_placed_where_its_engine_says_it_ran():
    """A report held in a batch arrives after its run ended (ended_ago), and a task
    promoted on the report of the one before it started before the scheduler
    heard: its recorded run ends ended_ago before the report came and lasts
    ran_for; without ran_for (an async actor call), the scheduler's own times."""
    h = Harness(cpus=1)
    now = [100.0]
    h.s.clock = h.s.task_table.clock = lambda: now[0]
    a, b, c = h.submit(), h.submit(), h.submit()
    h.out()

    def report(tid, **times):
        h.s.handle("h1.e0", m.TaskFinished(task_id=tid, results=[ObjectEntry(
            f"{tid}/0", inline=dumps(1))], **times))
        h.out()

    now[0] = 100.5
    report(a, ran_for=0.1, ended_ago=0.3)
    report(b, ran_for=0.2)
    now[0] = 101.0
    report(c)
    runs = {e.task_id: (e.start, e.end) for e in h.s.task_table.history}
    assert runs[a] == pytest.approx((100.1, 100.2))
    assert runs[b] == pytest.approx((100.3, 100.5))
    assert runs[c] == pytest.approx((100.5, 101.0))     # promoted at 100.5, reported at 101


def test_a_retried_run_is_not_given_the_times_of_the_run_before():
    h = Harness(cpus=1)
    now = [10.0]
    h.s.clock = h.s.task_table.clock = lambda: now[0]
    tid = h.submit()
    h.out()
    now[0] = 11.0
    h.s.handle("h1.e0", m.TaskFinished(task_id=tid, results=[ObjectEntry(
        f"{tid}/0", error=True, inline=dumps(1))], failed=True, retryable=True, ran_for=0.5))
    h.out()
    now[0] = 12.0
    h.finish("h1.e0", tid)
    first, second = [(e.status, e.start, e.end) for e in h.s.task_table.history]
    assert first == ("retried", pytest.approx(10.5), pytest.approx(11.0))
    assert second == ("finished", 11.0, 12.0)
