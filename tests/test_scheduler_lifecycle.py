"""Level 1: task and engine states and their transitions (scheduler/lifecycle.py),
and the per-task story, with the scheduler driven in-process by messages."""
import logging

import pytest

from shoal.cli import format_status
from shoal.exceptions import TaskCancelledError, WorkerCrashedError
from shoal.protocol import messages as m
from shoal.protocol.messages import ObjectEntry
from shoal.protocol.serialization import deserialize
from shoal.scheduler import lifecycle, tasks
from shoal.scheduler.lifecycle import TASK_TRANSITIONS, IllegalTransition
from shoal.scheduler.state import SchedulerState
from test_scheduler_state import Harness


def join(h, engine_id):
    """A (replacement) engine joins host h1."""
    h.s.handle(engine_id, m.ClientHello(client_id=engine_id, kind="engine", pid=20,
                                        hostname="h1", host_id="h1", engine_id=engine_id))


def in_state(state):
    """A harness with one host of one engine and a task `t` in `state`,
    returned as (harness, task id); the engine runs task `a` unless noted."""
    h = Harness(cpus=1)
    if state == "waiting":
        dep = h.submit()                       # runs; its result is pending
        h.out()
        return h, h.submit(deps=[f"{dep}/0"])
    a = h.submit()
    if state == "ready":
        h.submit()                             # queued behind a
        t = h.submit()
        h.out()
        return h, t
    t = h.submit()                             # queued behind a
    h.out()
    if state == "revoking":
        h.s.handle("h1.e0", m.EngineBlocked(task_id=a, blocked=True))
        h.out()
    elif state in ("running", "cancelling"):
        h.finish("h1.e0", a)                   # t is promoted
        h.out()
        if state == "cancelling":
            h.s.handle("drv", m.CancelTask(object_id=f"{t}/0", force=False, recursive=False))
            h.out()
    return h, t


@pytest.mark.parametrize("state", ["waiting", "ready", "queued", "revoking", "running",
                                   "cancelling"])
def test_each_state_is_reachable(state):
    h, t = in_state(state)
    assert h.s.tasks[t].state == state


def test_ended_states_have_no_way_out_and_every_state_a_way_in():
    states = {"waiting", "ready", "queued", "revoking", "running", "cancelling",
              "finished", "failed", "cancelled"}
    assert {new for _, new in TASK_TRANSITIONS} == states
    assert not [t for t in TASK_TRANSITIONS if t[0] in lifecycle.ENDED]


def test_an_illegal_transition_raises_in_strict_mode():
    h, t = in_state("waiting")
    assert h.s.strict                          # the tests run strict (conftest)
    with pytest.raises(IllegalTransition, match="waiting -> running"):
        h.s._to(h.s.tasks[t], "running", "a bug")


def test_an_illegal_transition_is_logged_loudly_otherwise(caplog):
    h, t = in_state("waiting")
    h.s.strict = False
    with caplog.at_level(logging.ERROR, logger="shoal.scheduler"):
        h.s._to(h.s.tasks[t], "running", "a bug")
    assert "BUG: illegal transition" in caplog.text and "waiting -> running" in caplog.text
    with pytest.raises(IllegalTransition):       # an engine's too
        h.s.strict = True
        h.s._engine_to(h.s.engines["h1.e0"], "stopping")
        h.s._engine_to(h.s.engines["h1.e0"], "busy")


def test_the_strict_default_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("SHOAL_STRICT_STATES", "0")
    assert not Harness().s.strict
    monkeypatch.setenv("SHOAL_STRICT_STATES", "1")
    assert Harness().s.strict


@pytest.mark.parametrize("state", ["waiting", "ready", "queued", "revoking"])
def test_cancel_before_it_runs_ends_it_at_once(state):
    h, t = in_state(state)
    h.s.handle("drv", m.CancelTask(object_id=f"{t}/0", force=False, recursive=False))
    out = h.out()
    assert t not in h.s.tasks
    assert isinstance(deserialize(h.pushed(out)[f"{t}/0"].inline), TaskCancelledError)
    assert h.s.story(t)[-1]["to"] == "cancelled"
    skips = [x for _, x in out if isinstance(x, m.InterruptTask)]
    assert skips == ([m.InterruptTask(task_id=t)] if state in ("queued", "revoking") else [])


def test_cancel_while_running_interrupts_then_ends_as_cancelled():
    h, t = in_state("running")
    h.s.handle("drv", m.CancelTask(object_id=f"{t}/0", force=False, recursive=False))
    assert ("h1.e0", m.InterruptTask(task_id=t)) in h.out()
    assert h.s.tasks[t].state == "cancelling"
    h.finish("h1.e0", t, value=KeyboardInterrupt(), failed=True, retryable=True)
    out = h.out()
    assert isinstance(deserialize(h.pushed(out)[f"{t}/0"].inline), TaskCancelledError)
    assert [r["to"] for r in h.s.story(t)][-2:] == ["cancelling", "cancelled"]


def test_a_cancelled_task_that_finishes_anyway_keeps_its_result():
    h, t = in_state("cancelling")
    h.finish("h1.e0", t, value=7)
    assert deserialize(h.pushed(h.out())[f"{t}/0"].inline) == 7
    assert h.s.story(t)[-1]["to"] == "finished"


@pytest.mark.parametrize("state", ["running", "cancelling"])
def test_force_cancel_stops_the_engine_and_it_stays_busy_until_replaced(state):
    h, t = in_state(state)
    h.s.handle("drv", m.CancelTask(object_id=f"{t}/0", force=True, recursive=False))
    out = h.out()
    assert ("agent-h1", m.StopEngine(engine_id="h1.e0", restart=True)) in out
    assert h.s.engines["h1.e0"].state == "stopping" and not h.s.hosts["h1"].idle
    assert h.s.status()["engines"][0]["state"] == "stopping"
    assert "h1.e0            pid 10       stopping (its task was cancelled with force)" in \
        format_status("x", h.s.status())
    late = h.submit()                         # nothing runs on a stopping engine
    assert h.executes(h.out()) == {}
    h.finish("h1.e0", t)                      # a late report is stale
    h.s.connection_closed("h1.e0")
    join(h, "h1.e1")
    assert h.executes(h.out()) == {late: "h1.e1"}


def test_engine_loss_requeues_a_queued_task_without_spending_a_retry():
    for state in ("queued", "revoking"):
        h, t = in_state(state)
        retries = h.s.tasks[t].retries_left
        h.s.connection_closed("h1.e0")
        task = h.s.tasks[t]
        assert (task.state, task.retries_left, task.engine_id) == ("ready", retries, None)
        assert "died before it started" in h.s.story(t)[-1]["why"]


def test_engine_loss_retries_a_running_task_then_fails_it():
    h, t = in_state("running")
    h.s.tasks[t].retries_left = 1
    h.s.connection_closed("h1.e0")
    assert h.s.tasks[t].state == "ready" and h.s.tasks[t].retries_left == 0
    join(h, "h1.e1")
    assert h.executes(h.out()) == {t: "h1.e1"}
    h.s.connection_closed("h1.e1")
    assert isinstance(deserialize(h.pushed(h.out())[f"{t}/0"].inline), WorkerCrashedError)
    assert h.s.story(t)[-1]["to"] == "failed"


def test_engine_loss_while_cancelling_ends_it_cancelled_not_retried():
    h, t = in_state("cancelling")
    h.s.connection_closed("h1.e0")
    assert t not in h.s.tasks and h.s.story(t)[-1]["to"] == "cancelled"


@pytest.mark.parametrize("state", ["waiting", "ready"])
def test_engine_loss_leaves_tasks_not_on_it_alone(state):
    h, t = in_state(state)
    h.s.connection_closed("h1.e0")
    assert h.s.tasks[t].state == state


def test_revocation_given_back_refused_and_crossed():
    h, t = in_state("revoking")
    h.s.handle("h1.e0", m.TaskRevoked(task_id=t, ok=False))    # it had started after all
    assert h.s.tasks[t].state == "queued"
    h, t = in_state("revoking")
    h.s.handle("h1.e0", m.TaskRevoked(task_id=t, ok=True))
    assert h.s.tasks[t].state == "ready" and not h.s.engines["h1.e0"].queued
    assert [r["to"] for r in h.s.story(t)] == ["waiting", "ready", "queued", "revoking", "ready"]


def test_a_granted_revoke_of_a_promoted_cancelled_task_ends_it():
    h, t = in_state("revoking")
    a = h.s.engines["h1.e0"].task_id
    h.finish("h1.e0", a)                      # promotion crosses the engine's "ok"
    assert h.s.tasks[t].state == "running"
    h.s.handle("drv", m.CancelTask(object_id=f"{t}/0", force=False, recursive=False))
    h.s.handle("h1.e0", m.TaskRevoked(task_id=t, ok=True))   # it never ran: no re-run
    out = h.out()
    assert t not in h.s.tasks and h.executes(out) == {}
    assert isinstance(deserialize(h.pushed(out)[f"{t}/0"].inline), TaskCancelledError)
    assert h.s.hosts["h1"].available["CPU"] == 1.0 and h.s.engines["h1.e0"].state == "idle"


def test_an_undone_promotion_is_revoked_for_the_views_and_no_run():
    """A promotion crossed by a granted revoke: the views got "running" for it,
    so they get "revoked" (not kept in the history, not counted); the task then
    runs again from the front of its queue."""
    h, t = in_state("revoking")
    now = iter(range(1, 100))
    h.s.clock = lambda: float(next(now))       # each reading later than the last
    h.s.handle("drv", m.SubscribeEvents())
    h.out()
    a = h.s.engines["h1.e0"].task_id
    h.finish("h1.e0", a)                       # promotes t
    h.s.handle("h1.e0", m.TaskRevoked(task_id=t, ok=True))    # ...which it had given back
    assert h.executes(h.out()) == {t: "h1.e0"}                 # sent again
    h.finish("h1.e0", t)                       # it runs again, and ends
    [(_, batch)] = h.s.take_events()
    mine = [(e.status, e.start) for e in batch.tasks if e.task_id == t]
    assert [s for s, _ in mine] == ["running", "revoked", "running", "finished"]
    assert mine[0][1] == mine[1][1] != mine[2][1] == mine[3][1]
    assert [e.status for e in h.s.history if e.task_id == t] == ["finished"]
    assert [r["to"] for r in h.s.story(t)][-3:] == ["ready", "running", "finished"]


def test_the_story_of_a_retried_task():
    h = Harness(cpus=1)
    t = h.submit(max_retries=1)
    h.out()
    h.s.connection_closed("h1.e0")
    join(h, "h1.e1")
    h.finish("h1.e1", t, value=3)
    story = h.s.story(t)
    assert [(r["from"], r["to"]) for r in story] == [
        (None, "waiting"), ("waiting", "ready"), ("ready", "running"), ("running", "ready"),
        ("ready", "running"), ("running", "finished")]
    stimuli = [r["stimulus"].rsplit("-", 1)[0] for r in story]
    assert stimuli == ["SubmitTask", "SubmitTask", "SubmitTask", "Closed:engine",
                       "ClientHello", "TaskFinished"]
    assert len({r["stimulus"] for r in story}) == 4      # one id per event
    assert [r["engine_id"] for r in story][2:] == ["h1.e0", None, "h1.e1", "h1.e1"]
    assert "engine h1.e0 died running it; retried, 0 retries left" == story[3]["why"]
    # asked for by task id or result id, through the scheduler's query
    for args in ({"task_id": t}, {"object_id": f"{t}/0"}, {"task_id": f"{t}/0"}):
        h.s.handle("drv", m.Query(request_id=1, kind="story", args=args))
        reply = next(x for _, x in h.out() if isinstance(x, m.QueryReply))
        assert reply.error is None and reply.value == {"task_id": t, "story": story}
    h.s.handle("drv", m.Query(request_id=2, kind="story", args={"task_id": "nope"}))
    reply = next(x for _, x in h.out() if isinstance(x, m.QueryReply))
    assert "no story for task nope" in reply.error


def test_stories_are_bounded(monkeypatch):
    monkeypatch.setattr(tasks, "FINISHED_STORIES", 3)
    monkeypatch.setattr(tasks, "STORY_PER_TASK", 4)
    h = Harness(cpus=1)
    done = []
    for _ in range(5):
        t = h.submit()
        h.out()
        h.finish("h1.e0", t)
        done.append(t)
    assert list(h.s.ended_stories) == done[-3:] and h.s.story(done[0]) is None
    t = h.submit(max_retries=5)
    h.out()
    for i in range(3):                         # each crash adds two records
        h.s.connection_closed(f"h1.e{i}")
        join(h, f"h1.e{i + 1}")
    story = h.s.story(t)
    assert len(story) == 4 and story[0]["to"] == "waiting" and story[-1]["to"] == "running"


def test_an_actors_calls_and_its_restarted_constructor():
    h = Harness(cpus=2)
    h.s.handle("drv", m.SubmitTask(
        task_id="A.init", func_id="f", name="C.__init__", args=b"", deps=[], nested=[],
        return_ids=["A/created"], resources={"CPU": 1.0}, max_retries=0, actor_id="A",
        method="__init__", actor_options={"class_name": "C", "methods": {}, "max_restarts": 1,
                                          "max_task_retries": 1}))

    def actor_engine_joins(eid):
        h.s.handle(eid, m.ClientHello(client_id=eid, kind="engine", pid=30, hostname="h1",
                                      host_id="h1", engine_id=eid, actor_id="A"))
        h.s.handle(eid, m.TaskFinished(task_id="A.init", results=[ObjectEntry("A/created")]))

    actor_engine_joins("h1.a0")
    h.out()
    for i in range(2):
        h.s.handle("drv", m.SubmitTask(
            task_id=f"c{i}", func_id="f", name="C.m", args=b"", deps=[], nested=[],
            return_ids=[f"c{i}/0"], resources={}, actor_id="A", method="m"))
    assert h.executes(h.out()) == {"c0": "h1.a0", "c1": "h1.a0"}
    h.s.handle("drv", m.CancelTask(object_id="c0/0", force=False, recursive=False))
    assert h.s.tasks["c0"].state == "cancelling"
    h.s.connection_closed("h1.a0")             # the cancelled call ends; the other is retried
    assert h.s.story("c0")[-1]["to"] == "cancelled" and "c0" not in h.s.tasks
    assert h.s.tasks["c1"].state == "ready" and h.s.actors["A"].restarts == 1
    h.out()
    actor_engine_joins("h1.a1")
    assert h.executes(h.out()) == {"A.init": "h1.a1", "c1": "h1.a1"}
    assert [(r["from"], r["to"]) for r in h.s.story("A.init")] == [
        (None, "waiting"), ("waiting", "ready"), ("ready", "running"), ("running", "finished"),
        (None, "waiting"), ("waiting", "ready"), ("ready", "running"), ("running", "finished")]
    assert [r["to"] for r in h.s.story("c1")] == [
        "waiting", "ready", "running", "ready", "running"]


def test_a_task_run_again_from_lineage_continues_its_story():
    h = Harness(cpus=1)
    h.add_host("h2", 1, resources={"B": 1})
    t = h.submit(resources={"CPU": 1.0, "B": 1.0})
    assert h.executes(h.out()) == {t: "h2.e0"}
    h.s.handle("h2.e0", m.TaskFinished(task_id=t, results=[
        ObjectEntry(f"{t}/0", host_id="h2", size=10)]))          # stored on h2 only
    h.add_host("h3", 1, resources={"B": 1})
    h.out()
    h.s.connection_closed("agent-h2")                             # h2 is lost, and its store
    assert h.executes(h.out()) == {t: "h3.e0"}
    story = h.s.story(t)
    assert [(r["from"], r["to"]) for r in story] == [
        (None, "waiting"), ("waiting", "ready"), ("ready", "running"), ("running", "finished"),
        (None, "waiting"), ("waiting", "ready"), ("ready", "running")]
    assert "from its lineage" in story[4]["why"] and story[4]["stimulus"].startswith("Closed:agent")


def test_an_engine_blocked_in_get_is_in_state_blocked():
    h = Harness(cpus=1)
    a = h.submit()
    h.out()
    engine = h.s.engines["h1.e0"]
    h.s.handle("h1.e0", m.EngineBlocked(task_id=a, blocked=True))
    assert engine.state == "blocked" and h.s.hosts["h1"].available["CPU"] == 1.0  # lent back
    assert {k: h.s.status()["engines"][0][k] for k in ("state", "blocked")} == {
        "state": "busy", "blocked": True}                     # as listed before
    h.s.handle("h1.e0", m.EngineBlocked(task_id=a, blocked=True))   # said twice: no change
    h.s.handle("h1.e0", m.EngineBlocked(task_id=a, blocked=False))
    assert engine.state == "busy" and h.s.hosts["h1"].available["CPU"] == 0.0
    h.s.handle("h1.e0", m.EngineBlocked(task_id=a, blocked=True))
    h.finish("h1.e0", a)                                  # ends while blocked: idle
    assert engine.state == "idle" and h.s.hosts["h1"].available["CPU"] == 1.0
    b = h.submit()
    h.out()
    h.s.handle("h1.e0", m.EngineBlocked(task_id=b, blocked=True))
    h.s.handle("drv", m.CancelTask(object_id=f"{b}/0", force=True, recursive=False))
    assert engine.state == "stopping"
    with pytest.raises(IllegalTransition, match="idle -> blocked"):
        h.s._engine_to(h.s.engines["h1.e0"].__class__("x", "h1", "c", 1), "blocked")


@pytest.mark.parametrize("strict", [True, False])
def test_a_strict_scheduler_process_stops_its_cluster_on_a_bug(strict, monkeypatch):
    """In a scheduler process, a bug found in strict mode (the tests) stops the
    cluster, so every driver fails loudly; closing only the peer's connection
    (what any other exception does) could let a test pass around the bug."""
    import asyncio
    from shoal.scheduler.server import SchedulerServer
    state = SchedulerState("c", "/tmp", strict=strict)
    server = SchedulerServer(state, b"k" * 32, [])

    def buggy(conn, msg):
        raise IllegalTransition("task t: waiting -> finished")
    monkeypatch.setattr(state, "handle", buggy)

    async def deliver():
        server._stopped = asyncio.Event()
        server._on_message(None, None)
        return server._stopped.is_set()
    if strict:
        assert asyncio.run(deliver()) and state.stopping
    else:
        with pytest.raises(IllegalTransition):
            asyncio.run(deliver())
        assert not state.stopping
