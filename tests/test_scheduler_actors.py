"""Level 1: actors in the scheduler (scheduler/actor_table.py and actors.py):
their states, transitions and stories, driven in-process by messages."""
import pytest

from shoal.cli import format_story
from shoal.exceptions import ActorDiedError
from shoal.protocol import messages as m
from shoal.protocol.messages import ObjectEntry
from shoal.protocol.serialization import deserialize
from shoal.scheduler.actor_table import ACTOR_TRANSITIONS, DEAD
from shoal.scheduler.lifecycle import IllegalTransition
from test_scheduler_state import Harness


def create(h, actor_id="A", conn="drv", **options):
    h.s.handle(conn, m.SubmitTask(
        task_id=f"{actor_id}.init", func_id="f", name="C.__init__", args=b"", deps=[],
        nested=[], return_ids=[f"{actor_id}/created"], resources={"CPU": 1.0}, max_retries=0,
        actor_id=actor_id, method="__init__",
        actor_options={"class_name": "C", "methods": {}, **options}))


def engine_joins(h, eid, actor_id="A", host="h1", constructor_raises=False):
    h.s.handle(eid, m.ClientHello(client_id=eid, kind="engine", pid=30, hostname=host,
                                  host_id=host, engine_id=eid, actor_id=actor_id))
    h.s.handle(eid, m.TaskFinished(task_id=f"{actor_id}.init", failed=constructor_raises,
                                   results=[ObjectEntry(f"{actor_id}/created", inline=b"")]))


def transitions(h, actor_id="A"):
    return [(r["from"], r["to"]) for r in h.s.actor_table.story(actor_id)]


def test_every_state_has_a_way_in_and_dead_no_way_out():
    assert {new for _, new in ACTOR_TRANSITIONS} == {
        "pending", "starting", "creating", "alive", "restarting", "dead"}
    assert not [t for t in ACTOR_TRANSITIONS if t[0] == DEAD]


def test_an_actor_is_placed_created_restarted_and_killed_with_its_story():
    h = Harness(cpus=2)
    create(h, max_restarts=1)
    out = h.out()
    assert ("agent-h1", m.StartEngines(count=1, actor_id="A")) in out
    assert h.s.hosts["h1"].starting == 0          # an actor's engine is not a pool engine
    engine_joins(h, "h1.a0")
    assert h.s.actors["A"].state == "alive"
    h.s.connection_closed("h1.a0")                # its engine dies: one restart left
    assert h.s.actors["A"].state == "starting" and h.s.actors["A"].restarts == 1
    engine_joins(h, "h1.a1")
    h.s.handle("drv", m.KillActor(actor_id="A", no_restart=True))
    assert transitions(h) == [
        (None, "pending"), ("pending", "starting"), ("starting", "creating"),
        ("creating", "alive"), ("alive", "restarting"), ("restarting", "starting"),
        ("starting", "creating"), ("creating", "alive"), ("alive", "dead")]
    story = h.s.actor_table.story("A")
    assert story[4]["why"] == "its engine h1.a0 died; restart 1 of 1"
    assert story[4]["stimulus"].startswith("Closed:engine") and story[8]["stimulus"].startswith(
        "KillActor")
    # through the scheduler's query and the CLI's format, as `shoal story A`
    h.s.handle("drv", m.Query(request_id=1, kind="story", args={"task_id": "A"}))
    reply = next(x for _, x in h.out() if isinstance(x, m.QueryReply))
    assert reply.value["kind"] == "actor" and len(reply.value["story"]) == 9
    assert format_story("A", reply.value["story"], "actor").startswith("actor A: 9 transitions")


def test_a_constructor_that_raises_kills_the_actor_and_fails_its_calls():
    h = Harness(cpus=2)
    create(h)
    h.s.handle("drv", m.SubmitTask(task_id="c0", func_id="f", name="C.m", args=b"", deps=[],
                                   nested=[], return_ids=["c0/0"], resources={}, actor_id="A",
                                   method="m"))
    h.out()
    engine_joins(h, "h1.a0", constructor_raises=True)
    assert transitions(h)[-1] == ("creating", "dead")
    assert isinstance(deserialize(h.pushed(h.out())["c0/0"].inline), ActorDiedError)


def test_a_taken_name_refuses_the_newcomer_and_a_dead_actor_frees_its_name():
    h = Harness(cpus=3)
    create(h, "A", name="svc")
    create(h, "B", name="svc")
    assert h.s.actors["B"].state == "dead" and "already taken" in h.s.actors["B"].death_cause
    assert h.s.named_actors == {("default", "svc"): "A"}
    h.s.handle("drv", m.KillActor(actor_id="A", no_restart=True))
    assert h.s.named_actors == {}
    create(h, "C", name="svc")
    assert h.s.named_actors == {("default", "svc"): "C"}


def test_an_actor_whose_host_is_lost_before_its_engine_joins_waits_for_another():
    h = Harness(cpus=1)
    h.add_host("h2", cpus=1, engines=0)
    h.s.handle("drv", m.SubmitTask(                # it needs h2's resource
        task_id="A.init", func_id="f", name="C.__init__", args=b"", deps=[], nested=[],
        return_ids=["A/created"], resources={"CPU": 1.0}, max_retries=0, actor_id="A",
        method="__init__", actor_options={"class_name": "C", "methods": {},
                                          "held_resources": {"CPU": 1.0}},
        placement={"kind": "node", "node": "h2", "soft": True}))
    assert h.s.actors["A"].host_id == "h2"
    h.s.connection_closed("agent-h2")
    assert h.s.actors["A"].state == "starting" and h.s.actors["A"].host_id == "h1"
    assert transitions(h) == [(None, "pending"), ("pending", "starting"),
                              ("starting", "pending"), ("pending", "starting")]


def test_an_illegal_actor_transition_is_a_scheduler_bug():
    h = Harness(cpus=1)
    create(h)
    with pytest.raises(IllegalTransition, match="actor A: starting -> alive"):
        h.s.actor_table.to(h.s.actors["A"], "alive", "a bug")
