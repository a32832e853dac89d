"""Level 1: the scheduler's outbox (scheduler/outbox.py), alone."""
from shoal.protocol import messages as m
from shoal.protocol.messages import ObjectEntry
from shoal.scheduler.outbox import AwaitingAgent, Outbox


def test_messages_leave_in_order_then_pushes_then_frees_and_the_outbox_is_empty_after():
    out = Outbox()
    out.send("a", m.Heartbeat())
    out.push("drv", ObjectEntry("x/0", inline=b"1"))
    out.free("h1", "y/0")
    out.send("b", m.Shutdown(reason="r"))
    out.push("drv", ObjectEntry("z/0", inline=b"2"))
    out.free("h1", "w/0")
    out.free("gone", "v/0")                    # a host that left: nothing to send
    taken = out.take({"h1": "agent-h1"}.get)
    assert taken == [("a", m.Heartbeat()), ("b", m.Shutdown(reason="r")),
                     ("drv", m.ObjectsReady(entries=[ObjectEntry("x/0", inline=b"1"),
                                                     ObjectEntry("z/0", inline=b"2")])),
                     ("agent-h1", m.FreeObjects(object_ids=["y/0", "w/0"]))]
    assert out.take({}.get) == []


def test_what_goes_to_a_host_awaiting_its_agent_is_held_there():
    out, stand_in = Outbox(), AwaitingAgent()
    out.send(stand_in, m.StartEngines(count=1))
    out.free("h1", "y/0")
    assert out.take({"h1": stand_in}.get) == []
    assert stand_in.queued == [m.StartEngines(count=1), m.FreeObjects(object_ids=["y/0"])]


def test_view_events_are_kept_only_while_someone_subscribes():
    out = Outbox()
    event = m.TaskEvent("t", "f", "running", "e", "h", 1.0, None)
    out.event(event)
    out.mark("objects")
    assert out.take_events() == ([], set())
    out.subscribers.add("widget")
    out.event(event)
    out.mark("cluster")
    assert out.take_events() == ([event], {"cluster"})
    assert out.take_events() == ([], set())
