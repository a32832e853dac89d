"""Level 1: the scheduler's object directory (scheduler/objects.py), alone:
reference counts, copies, store use, spilling and lineage."""
from shoal.protocol import messages as m
from shoal.protocol.messages import ObjectEntry
from shoal.scheduler.membership import Host, Peer
from shoal.scheduler.objects import ObjectDirectory, spill_choice
from shoal.scheduler.outbox import Outbox


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 1.0
        return self.now


def directory(limit=1000, handles=()):
    hosts = {h: Host(h, f"agent-{h}", h, {"CPU": 1.0}, {"CPU": 1.0}, {}, "/dev/shm/x",
                     "/tmp/x", limit, "127.0.0.1:1", 1) for h in ("h1", "h2")}
    peers = {"drv": Peer("driver", "d", 1, "x"), "agent-h1": Peer("agent", "h1", 2, "h1")}
    freed_handles = []

    def handle_freed(oid):
        if oid in handles:
            freed_handles.append(oid)
            return True
        return False
    d = ObjectDirectory(Outbox(), peers, hosts, Clock(), handle_freed)
    d.freed_handles = freed_handles
    return d


def store(d, oid, size, host="h1", nested=(), holder="drv"):
    obj = d.make(oid)
    if holder:
        d.hold(obj, holder, +1)
    d.stored(obj, ObjectEntry(oid, host_id=host, size=size), list(nested), "test")
    return obj


def frees(d):
    return {conn: msg.object_ids for conn, msg in d.out.take(lambda h: f"agent-{h}")
            if isinstance(msg, m.FreeObjects)}


def test_an_object_lives_while_held_or_pinned_and_its_copies_are_freed_with_it():
    d = directory()
    obj = store(d, "a/0", 100)
    d.located("a/0", "h2")                         # a reader pulled a copy to h2
    assert d.hosts["h1"].store_used == 100 == d.hosts["h2"].store_used
    assert d.pin("a/0") and not d.pin("gone/0")
    d.hold(obj, "drv", -1)
    assert "a/0" in d.objects                      # a pending task still needs it
    d.unpin("a/0")
    assert "a/0" not in d.objects and d.hosts["h1"].store_used == 0 == d.hosts["h2"].store_used
    assert frees(d) == {"agent-h1": ["a/0"], "agent-h2": ["a/0"]}


def test_contents_stay_pinned_by_their_container_and_actor_handles_go_to_the_actors():
    d = directory(handles={"actor-1"})
    inner = store(d, "in/0", 10)
    outer = store(d, "out/0", 10, nested=["in/0"])
    d.hold(inner, "drv", -1)
    assert "in/0" in d.objects and inner.pins == 1
    d.hold(outer, "drv", -1)
    assert d.objects == {}
    handle = d.make("actor-1")
    handle.entry = ObjectEntry("actor-1")
    d.hold(handle, "drv", +1)
    d.peer_gone("drv")                             # its creator left: all it held goes
    assert d.freed_handles == ["actor-1"] and d.objects == {}


def test_a_ready_value_is_pushed_to_holders_and_subscribers_not_agents():
    d = directory()
    obj = d.make("a/0")
    d.hold(obj, "drv", +1)
    d.hold(obj, "agent-h1", +1)
    obj.subscribers.add("engine-1")
    d.stored(obj, ObjectEntry("a/0", inline=b"1", size=1), [], "test")
    d.publish(obj)
    pushed = [(c, [e.object_id for e in msg.entries]) for c, msg in d.out.take({}.get)]
    assert pushed == [("drv", ["a/0"]), ("engine-1", ["a/0"])] and not obj.subscribers


def test_spilling_takes_the_least_recently_used_until_the_store_fits():
    d = directory(limit=250)
    a, b, c = store(d, "a/0", 100), store(d, "b/0", 100), store(d, "c/0", 100)
    assert [o.object_id for o in (a, b, c) if o.spilled] == ["a/0"]
    assert d.hosts["h1"].store_used == 200 and d.hosts["h1"].spilled_bytes == 100
    b.last_used = 99.0                             # b was just handed to a task
    store(d, "d/0", 100)
    assert b.spilled is False and c.spilled is True
    spills = [msg.object_ids for _, msg in d.out.take({}.get) if isinstance(msg, m.SpillObjects)]
    assert spills == [["a/0"], ["c/0"]]
    d.hold(a, "drv", -1)                           # a spilled object is freed from disk
    assert d.hosts["h1"].spilled_bytes == 100


def test_spill_choice_is_a_pure_least_recently_used_cut():
    d = directory()
    objs = [store(d, f"{i}/0", 10, holder=None) for i in range(5)]
    objs[0].last_used = 50.0
    assert [o.object_id for o in spill_choice(objs, used=50, limit=25)] == ["1/0", "2/0", "3/0"]
    assert spill_choice(objs, used=20, limit=25) == []


def test_lineage_rebuilds_what_only_a_lost_host_had_and_reports_what_it_cannot():
    d = directory()
    spec = m.SubmitTask(task_id="t", func_id="f", name="f", args=b"", deps=["arg/0"], nested=[],
                        return_ids=["t/0", "t/1"], resources={"CPU": 1.0}, max_retries=2)
    arg = store(d, "arg/0", 10, host="h2")
    d.pin("arg/0")
    made = [store(d, "t/0", 10), store(d, "t/1", 10)]
    assert d.keep_lineage(spec, "drv", 2, [o.entry for o in made])
    put = store(d, "p/0", 10)
    put.created_by = "put by driver pid 1"
    copied = store(d, "c/0", 10)
    d.located("c/0", "h2")
    rebuild, lost = d.host_lost("h1")
    assert [(lin.spec.task_id, [o.object_id for o in objs]) for lin, objs in rebuild] == [
        ("t", ["t/0", "t/1"])]
    assert [(o.object_id, why) for o, why in lost] == [
        ("p/0", "it was put, so it cannot be made again")]
    assert copied.entry.host_id == "h2" and made[0].entry is None
    # the rebuild ran: both results are back; a copy nobody needs is freed
    again = [ObjectEntry("t/0", host_id="h2", size=10), ObjectEntry("t/1", host_id="h2", size=10)]
    made[1].entry = ObjectEntry("t/1", inline=b"x")   # (filled some other way meanwhile)
    d.out.take(lambda h: f"agent-{h}")
    refilled = d.rebuilt(spec, again)
    assert [(o.object_id, e.host_id) for o, e in refilled] == [("t/0", "h2")]
    assert frees(d) == {"agent-h2": ["t/1"]}      # its second copy
    for obj, entry in refilled:                    # (as the scheduler does: ready again)
        d.stored(obj, entry, [], obj.created_by)
    # the results go: their lineage lets go of the argument
    for obj in made:
        d.hold(obj, "drv", -1)
    d.hold(arg, "drv", -1)
    assert "arg/0" not in d.objects
