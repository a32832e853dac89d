"""Actor calls a driver sends its actor's engine itself (core/direct_calls.py),
piece by piece: the scheduler's rules (no sockets), and the driver's choice of
way (a fake channel)."""
import pytest

from shoal.core.direct_calls import DirectCalls
from shoal.exceptions import ActorDiedError
from shoal.protocol import messages as m
from shoal.protocol.messages import ObjectEntry
from shoal.protocol.serialization import deserialize, dumps
from shoal.scheduler.actors import EARLY_KEPT
from test_scheduler_actors import create, engine_joins
from test_scheduler_state import Harness

pytestmark = pytest.mark.timeout(60)
ME = "me"                     # a driver on the actor's host, with a reply channel


def _alive(**options):
    h = Harness(cpus=2)
    h.s.handle(ME, m.ClientHello(client_id=ME, kind="driver", pid=5, hostname="h1"))
    h.s.handle(ME, m.ReplyChannel(address="unix:/tmp/session/reply-me.sock"))
    create(h, conn=ME, **options)
    engine_joins(h, "h1.a0")
    h.out()
    return h


def _call(h, n, direct_to="h1.a0", deps=(), conn=ME, nested=()):
    h.s.handle(conn, m.SubmitTask(
        task_id=f"c{n}", func_id=None, name="C.m", args=b"", deps=list(deps), nested=list(nested),
        return_ids=[f"c{n}/0"], resources={}, max_retries=0, actor_id="A", method="m",
        direct_to=direct_to))


def _finished(h, n, engine="h1.a0", delivered=True, value=None):
    h.s.handle(engine, m.TaskFinished(task_id=f"c{n}", results=[
        ObjectEntry(f"c{n}/0", inline=dumps(n if value is None else value))],
        delivered=delivered, called_direct=True))


def _child(h, conn, task_id, parent):
    """A task `conn` (an engine) submits while running `parent`; returns the
    engine it was sent to."""
    h.s.handle(conn, m.SubmitTask(
        task_id=task_id, func_id="f", name="f", args=b"", deps=[], nested=[],
        return_ids=[f"{task_id}/0"], resources={"CPU": 1.0}, parent_task_id=parent))
    [engine] = [c for c, x in h.out() if isinstance(x, m.ExecuteTask) and x.task_id == task_id]
    return engine


def test_a_straight_call_is_recorded_as_running_and_not_sent_again():
    h = _alive()
    _call(h, 1)
    assert h.executes(h.out()) == {}
    task = h.s.tasks["c1"]
    assert task.state == "running" and task.engine_id == "h1.a0"
    assert h.s.story("c1")[-1]["why"] == "its caller sent it to its actor's engine"
    h.s.handle("drv", m.Subscribe(object_ids=["c1/0"]))       # another holder waits
    _finished(h, 1)
    out = h.out()
    assert "c1/0" not in h.pushed(out, ME)                      # its caller has it
    assert deserialize(h.pushed(out, "drv")["c1/0"].inline) == 1
    assert not h.s.actors["A"].inflight and not h.s.actors["A"].straight


@pytest.mark.parametrize("undelivered", [False, True])
def test_a_finish_that_comes_before_the_submission_waits_for_it(undelivered):
    h = _alive()
    _finished(h, 1)
    if undelivered:
        h.s.handle("h1.a0", m.Undelivered(task_id="c1"))
    assert "c1" in h.s.early_finishes and "c1" not in h.s.tasks
    _call(h, 1)
    out = h.out()
    assert "c1" not in h.s.tasks and not h.s.early_finishes
    assert ("c1/0" in h.pushed(out, ME)) is undelivered
    assert h.s.objects["c1/0"].entry.inline == dumps(1)


def test_a_finish_whose_engine_then_died_is_pushed_when_the_submission_comes():
    h = _alive(max_restarts=1)
    _finished(h, 1)
    h.s.connection_closed("h1.a0")
    _call(h, 1)
    out = h.out()
    assert deserialize(h.pushed(out, ME)["c1/0"].inline) == 1       # not run again
    assert "c1" not in h.s.tasks


def test_a_call_sent_to_a_gone_engine_fails_without_retries():
    h = _alive(max_restarts=1)
    h.s.connection_closed("h1.a0")
    h.out()
    _call(h, 1)
    err = deserialize(h.pushed(h.out(), ME)["c1/0"].inline)
    assert isinstance(err, ActorDiedError) and "before this call finished" in str(err)


def test_a_call_sent_to_a_gone_engine_is_retried_on_the_restarted_actor():
    h = _alive(max_restarts=1, max_task_retries=1)
    h.s.connection_closed("h1.a0")
    _call(h, 1)
    assert h.s.tasks["c1"].state == "ready"
    engine_joins(h, "h1.a1")
    sent = h.executes(h.out())
    assert sent == {"A.init": "h1.a1", "c1": "h1.a1"}


def test_straight_calls_in_flight_when_the_engine_dies_are_retried_in_order():
    h = _alive(max_restarts=1, max_task_retries=1)
    for n in (1, 2, 3):
        _call(h, n)
    _finished(h, 1)
    h.s.connection_closed("h1.a0")
    engine_joins(h, "h1.a1")
    out = h.out()
    assert [msg.task_id for c, msg in out if isinstance(msg, m.ExecuteTask)
            and c == "h1.a1"] == ["A.init", "c2", "c3"]


def test_a_callers_relayed_calls_wait_behind_its_straight_ones():
    h = _alive()
    h.s.handle(ME, m.PutObject(entry=ObjectEntry("p/0", inline=dumps(5))))
    _call(h, 1)
    _call(h, 2, direct_to=None, deps=["p/0"])        # a ref argument: relayed
    _call(h, 3, direct_to=None, conn="drv")          # another caller's: not held
    assert set(h.executes(h.out())) == {"c3"}
    _finished(h, 1)
    assert set(h.executes(h.out())) == {"c2"}


@pytest.mark.parametrize("where", ["deps", "nested"])
def test_direct_to_on_a_call_with_refs_is_ignored(where):
    h = _alive()
    h.s.handle(ME, m.PutObject(entry=ObjectEntry("p/0", inline=dumps(5))))
    _call(h, 1, **{where: ["p/0"]})
    assert set(h.executes(h.out())) == {"c1"}


def test_an_early_finish_whose_submission_never_comes_is_dropped():
    h = _alive()
    clock = [0.0]
    h.s.clock = lambda: clock[0]
    _finished(h, 1)
    clock[0] = EARLY_KEPT / 2
    h.s.heartbeat()
    assert "c1" in h.s.early_finishes
    clock[0] = EARLY_KEPT + 1
    h.s.heartbeat()
    assert not h.s.early_finishes


def test_a_finish_of_an_unknown_relayed_task_is_not_kept():
    h = _alive()
    h.finish("h1.a0", "gone")
    assert not h.s.early_finishes


# ---------------------------------------------------------------- the driver's choice
class _Conn:
    def __init__(self):
        self.sent, self.closed, self.fail = [], False, False

    def send(self, msg):
        if self.fail:
            raise OSError("broken pipe")
        self.sent.append(msg)


class _Channel:
    def __init__(self):
        self.engines = {}

    def actor_engine(self, actor_id):
        return self.engines.get(actor_id)


class _Client:
    def __init__(self):
        self.counts, self.entries, self.arrivals = {}, {}, {}

    def own(self, oid):
        self.counts[oid] = self.counts.get(oid, 0) + 1

    def release(self, oid):
        self.counts[oid] -= 1

    def ready(self, oid):
        return oid in self.entries

    def on_arrival(self, oid, fn):
        self.arrivals[oid] = fn

    def arrive(self, oid):
        self.entries[oid] = True
        self.arrivals.pop(oid)()


def _driver(connected=True):
    """A driver's DirectCalls; `connected`: actor A's engine e1 has a connection."""
    client, channel = _Client(), _Channel()
    if connected:
        channel.engines["A"] = (_Conn(), "e1")
    return DirectCalls(client, channel), client, channel


def _send(calls, n, eligible=True, returns=1):
    """The engine id the call goes to, or None (relayed)."""
    target = calls.route("A", [f"c{n}/{i}" for i in range(returns)], eligible)
    if target is None:
        return None
    target[0].send(f"c{n}")
    return target[1]


def test_calls_go_straight_once_the_actor_has_a_connection():
    calls, client, channel = _driver(connected=False)
    assert _send(calls, 1) is None                       # no connection yet: relayed
    channel.engines["A"] = conn = (_Conn(), "e1")
    assert _send(calls, 2) is None                       # c1 may not have reached the engine
    client.arrive("c1/0")
    client.arrive("c2/0")
    assert _send(calls, 3) == "e1" and _send(calls, 4) == "e1"
    assert conn[0].sent == ["c3", "c4"]
    assert not client.counts                             # nothing is held for this


def test_a_relayed_call_stops_straight_ones_until_it_arrives():
    calls, client, channel = _driver()
    assert _send(calls, 1) == "e1"
    assert _send(calls, 2, eligible=False) is None       # refs: relayed
    assert _send(calls, 3) is None                       # behind c2: relayed too
    client.arrive("c2/0")
    assert _send(calls, 4) is None                       # behind c3
    client.arrive("c3/0")
    client.arrive("c4/0")
    assert _send(calls, 5) == "e1"


def test_a_relayed_call_without_returns_is_waited_out_by_the_next_relayed_one():
    calls, client, channel = _driver()
    assert _send(calls, 1, eligible=False, returns=0) is None
    assert _send(calls, 2) is None                       # nothing says c1 got there
    client.arrive("c2/0")
    assert _send(calls, 3) == "e1"


def test_a_relayed_call_whose_refs_are_dropped_is_waited_out_by_the_next_one():
    calls, client, channel = _driver()
    assert _send(calls, 1, eligible=False) is None
    del client.arrivals["c1/0"]                          # released: it never "arrives"
    assert _send(calls, 2) is None
    client.arrive("c2/0")
    assert _send(calls, 3) == "e1"


def test_a_new_engine_waits_for_the_calls_sent_down_the_old_one():
    calls, client, channel = _driver()
    assert _send(calls, 1) == "e1"
    channel.engines["A"] = (_Conn(), "e2")              # restarted elsewhere
    assert _send(calls, 2) is None                       # c1 may be retried: relay
    client.arrive("c2/0")
    assert _send(calls, 3) == "e2"


def test_after_this_driver_kills_the_actor_for_good_its_calls_are_relayed():
    calls, client, channel = _driver()
    assert _send(calls, 1) == "e1"
    calls.killed("A", restarts=False)
    assert _send(calls, 2) is None
    client.arrive("c2/0")
    assert _send(calls, 3) is None                       # for good
    channel.engines["A"] = (_Conn(), "e2")
    assert _send(calls, 4) is None


def test_after_a_restartable_kill_only_the_new_engine_gets_calls_straight():
    calls, client, channel = _driver()
    assert _send(calls, 1) == "e1"
    calls.killed("A", restarts=True)
    assert _send(calls, 2) is None
    client.arrive("c2/0")
    assert _send(calls, 3) is None                       # e1 is stopping, even now
    client.arrive("c3/0")
    channel.engines["A"] = (_Conn(), "e2")              # the restarted actor's
    assert _send(calls, 4) == "e2"


def test_tasks_a_straight_call_submits_before_its_submission_print_under_it():
    h = _alive()
    engine = "h1.a0"
    kid_engine = _child(h, engine, "kid", "c1")
    _child(h, kid_engine, "grandkid", "kid")
    _call(h, 1)                                         # then the call's submission comes
    assert h.s.tasks["c1"].children == {"kid"}
    h.out()
    for task_id in ("kid", "grandkid"):
        h.s.handle(kid_engine, m.TaskOutput(task_id=task_id, name="f", pid=3, stream="stdout",
                                            text="hi\n"))
    printed = [x for c, x in h.out() if isinstance(x, m.TaskOutput)]
    assert [(x.task_id, x.origin) for x in printed] == [("kid", "c1"), ("grandkid", "c1")]
    assert not h.s.early_children


def test_straight_calls_finished_before_their_records_keep_their_own_times():
    """A sync straight call's report usually beats its record (the record waits for
    the caller's next batch): the run is placed by when the report came, less what
    the engine held it, not by when the record came."""
    h = _alive()
    now = [100.0]
    h.s.clock = h.s.task_table.clock = lambda: now[0]
    for n, (at, ran) in enumerate([(100.1, 0.09), (100.2, 0.09), (100.3, 0.05)], 1):
        now[0] = at
        h.s.handle("h1.a0", m.TaskFinished(task_id=f"c{n}", results=[
            ObjectEntry(f"c{n}/0", inline=dumps(n))], delivered=True, called_direct=True,
            ran_for=ran, ended_ago=0.01 if n == 3 else 0.0))
    now[0] = 101.0
    for n in (1, 2, 3):
        _call(h, n)
    h.out()
    runs = {e.task_id: (e.start, e.end) for e in h.s.task_table.history}
    assert runs["c1"] == pytest.approx((100.01, 100.1))
    assert runs["c2"] == pytest.approx((100.11, 100.2))
    assert runs["c3"] == pytest.approx((100.24, 100.29))


def test_what_they_print_before_the_calls_submission_comes_is_held_then_printed_under_it():
    """A straight call's record may come after its tasks (and theirs) printed:
    that output waits for it, then goes where the call prints, in order; if the
    record never comes, it goes where it would have gone."""
    h = _alive()
    engine = "h1.a0"
    kid_engine = _child(h, engine, "kid", "c1")
    _child(h, kid_engine, "grandkid", "kid")

    def prints(task_id, text):
        h.s.handle(kid_engine, m.TaskOutput(task_id=task_id, name="f", pid=3, stream="stdout",
                                            text=text))
    prints("grandkid", "first\n")
    h.s.handle(kid_engine, m.TaskFinished(task_id="grandkid", results=[
        ObjectEntry("grandkid/0", inline=dumps(1))]))          # it ends before the call comes
    prints("kid", "second\n")
    assert not [x for _, x in h.out() if isinstance(x, m.TaskOutput)]     # held
    _call(h, 1)
    printed = [(c, x) for c, x in h.out() if isinstance(x, m.TaskOutput)]
    assert [(c, x.task_id, x.origin, x.text) for c, x in printed] == [
        (ME, "grandkid", "c1", "first\n"), (ME, "kid", "c1", "second\n")]
    prints("kid", "third\n")                                  # from now on, at once
    assert [(c, x.origin) for c, x in h.out() if isinstance(x, m.TaskOutput)] == [(ME, "c1")]
    assert not h.s.early_outputs


def test_held_output_whose_call_never_comes_goes_where_it_would_have():
    from shoal.scheduler.actors import EARLY_KEPT
    h = _alive()
    kid_engine = _child(h, "h1.a0", "kid", "c9")
    h.s.handle(kid_engine, m.TaskOutput(task_id="kid", name="f", pid=3, stream="stdout",
                                        text="orphan\n"))
    assert not [x for _, x in h.out() if isinstance(x, m.TaskOutput)]
    h.s._drop_early(h.s.clock() + EARLY_KEPT + 1)
    assert [(c, x.text) for c, x in h.out() if isinstance(x, m.TaskOutput)] == [
        ("h1.a0", "orphan\n")]
    assert h.s.tasks["kid"].provisional is None and not h.s.early_outputs


def test_a_grandchild_still_running_when_its_early_parent_has_ended_prints_under_the_call():
    h = _alive()
    kid_engine = _child(h, "h1.a0", "kid", "c1")
    _child(h, kid_engine, "grandkid", "kid")
    h.s.handle(kid_engine, m.TaskFinished(task_id="kid", results=[
        ObjectEntry("kid/0", inline=dumps(1))]))              # kid ends first
    assert "kid" not in h.s.tasks and "grandkid" in h.s.tasks
    h.out()
    _call(h, 1)
    h.out()
    grandkid = h.s.tasks["grandkid"]
    assert grandkid.provisional is None and grandkid.origin == (ME, "c1")
    h.s.handle(kid_engine, m.TaskOutput(task_id="grandkid", name="f", pid=3,
                                        stream="stdout", text="late\n"))
    assert [(c, x.origin) for c, x in h.out() if isinstance(x, m.TaskOutput)] == [(ME, "c1")]


def test_a_ref_in_a_straight_calls_early_finish_outlives_its_engines_own_ref():
    h = _alive()
    oid = "h1.a0.p1"
    h.s.handle("h1.a0", m.PutObject(entry=ObjectEntry(oid, inline=dumps(7))))
    h.s.handle("h1.a0", m.TaskFinished(task_id="c1", results=[
        ObjectEntry("c1/0", inline=dumps("box"))], nested=[[oid]], called_direct=True))
    h.s.handle("h1.a0", m.RefUpdates(ops=[(oid, -1)]))
    _call(h, 1)
    h.out()
    assert h.s.objects[oid].entry is not None
