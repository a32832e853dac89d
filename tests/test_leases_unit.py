"""Engine leases (scheduler/leases.py, core/leases.py), piece by piece: the
scheduler's rules with no sockets (strict: every transition and index is
checked after every event), and the driver's choice of way (a fake channel)."""
import pytest

from shoal.core import leases as driver_leases
from shoal.exceptions import WorkerCrashedError
from shoal.protocol import messages as m
from shoal.protocol.messages import ObjectEntry
from shoal.protocol.serialization import deserialize, dumps
from test_scheduler_state import Harness

pytestmark = pytest.mark.timeout(60)
ME = "me"          # a driver on host h1 with a reply channel that takes leases
E0, E1 = "h1.e0", "h1.e1"


def _cluster(leases=True):
    h = Harness(cpus=2, strict=True)
    h.s.handle(ME, m.ClientHello(client_id=ME, kind="driver", pid=5, hostname="h1"))
    h.s.handle(ME, m.ReplyChannel(address="unix:/tmp/session/reply-me.sock", leases=leases))
    h.out()
    return h


def _lent(h, conn=ME):
    """Run one task of `conn` to its end; returns the engine lent for it."""
    tid = h.submit(conn=conn)
    [engine] = h.executes(h.out()).values()
    _finished(h, engine, tid)
    out = h.out()
    lent = [msg.engine_id for c, msg in out if c == conn and isinstance(msg, m.EngineLease)]
    assert lent == [engine]
    return engine


def _record(h, engine, n, conn=ME, max_retries=3):
    tid = f"d{n}"
    h.s.handle(conn, m.SubmitTask(
        task_id=tid, func_id="f", name="f", args=b"", deps=[], nested=[],
        return_ids=[f"{tid}/0"], resources={"CPU": 1.0}, max_retries=max_retries,
        direct_to=engine))
    return tid


def _finished(h, engine, tid, delivered=True, failed=False, retryable=False, direct=False):
    h.s.handle(engine, m.TaskFinished(
        task_id=tid, results=[ObjectEntry(f"{tid}/0", error=failed, inline=dumps(tid))],
        failed=failed, retryable=retryable, delivered=delivered and not failed,
        called_direct=direct))


def _free_cpu(h):
    return h.s.hosts["h1"].available["CPU"]


def _sent(out, kind, conn=ME):
    return [msg.engine_id for c, msg in out if c == conn and isinstance(msg, kind)]


def test_the_engine_a_drivers_task_ended_on_is_lent_to_it_while_nothing_waits():
    h = _cluster()
    engine = _lent(h)
    assert h.s.engines[engine].state == "busy" and h.s.engines[engine].task_id is None
    assert h.s.leased == {engine: ME}
    assert _free_cpu(h) == 1.0                   # the lease holds its CPU
    assert h.executes(h.out()) == {}


@pytest.mark.parametrize("why", ["no leases", "other host", "two CPUs"])
def test_no_lease_for_drivers_that_do_not_take_them_or_tasks_that_do_not_fit(why):
    h = _cluster(leases=why != "no leases")
    conn = "drv" if why == "other host" else ME        # drv is on host "x": no straight results
    tid = h.submit(conn=conn, resources={"CPU": 2.0} if why == "two CPUs" else None)
    [engine] = h.executes(h.out()).values()
    _finished(h, engine, tid)
    assert not _sent(h.out(), m.EngineLease, conn) and not h.s.leased


def test_a_task_sent_to_the_leased_engine_runs_there_without_being_sent_again():
    h = _cluster()
    engine = _lent(h)
    tid = _record(h, engine, 1)
    assert h.executes(h.out()) == {}
    task = h.s.tasks[tid]
    assert task.state == "running" and task.engine_id == engine and task.held == {"CPU": 1.0}
    assert h.s.story(tid)[-1]["why"] == "its owner sent it to the engine it leases"
    assert _free_cpu(h) == 1.0                   # the lease's CPU, now the task's
    h.s.handle("drv", m.Subscribe(object_ids=[f"{tid}/0"]))     # another holder waits
    _finished(h, engine, tid, direct=True)
    out = h.out()
    assert f"{tid}/0" not in h.pushed(out, ME)                  # its owner has it
    assert deserialize(h.pushed(out, "drv")[f"{tid}/0"].inline) == tid
    assert tid not in h.s.tasks and h.s.leased == {engine: ME}
    assert h.s.engines[engine].state == "busy" and _free_cpu(h) == 1.0


@pytest.mark.parametrize("undelivered", [False, True])
def test_a_finish_that_comes_before_the_record_waits_for_it(undelivered):
    h = _cluster()
    engine = _lent(h)
    _finished(h, engine, "d1", direct=True)
    if undelivered:
        h.s.handle(engine, m.Undelivered(task_id="d1"))
    assert "d1" in h.s.early_finishes
    _record(h, engine, 1)
    out = h.out()
    assert "d1" not in h.s.tasks and not h.s.early_finishes
    assert ("d1/0" in h.pushed(out, ME)) is undelivered
    assert h.s.engines[engine].task_id is None and _free_cpu(h) == 1.0


def test_a_second_record_while_the_first_runs_queues_behind_it_on_the_lease():
    h = _cluster()
    engine = _lent(h)
    first, second = _record(h, engine, 1), _record(h, engine, 2)
    assert h.s.tasks[second].state == "queued" and _free_cpu(h) == 1.0
    _finished(h, engine, first, direct=True)
    assert h.s.tasks[second].state == "running" and _free_cpu(h) == 1.0
    _finished(h, engine, second, direct=True)
    h.out()
    assert not h.s.tasks and _free_cpu(h) == 1.0 and h.s.leased == {engine: ME}


def test_other_work_asks_the_lease_back_and_runs_there_once_returned():
    h = _cluster()
    engine = _lent(h)
    other = E1 if engine == E0 else E0
    a, b, c = h.submit(), h.submit(), h.submit()         # another driver's
    out = h.out()
    assert h.executes(out) == {a: other, b: other}      # b queued behind a, c waits
    assert _sent(out, m.RevokeLease) == [engine]
    h.s.handle(ME, m.LeaseReturned(engine_id=engine))
    out = h.out()
    assert h.executes(out) == {c: engine} and not h.s.leased
    assert _free_cpu(h) == 0.0


def test_returned_while_a_task_runs_there_the_engine_is_free_when_it_ends():
    h = _cluster()
    engine = _lent(h)
    tid = _record(h, engine, 1)
    h.s.handle(ME, m.LeaseReturned(engine_id=engine))
    assert h.s.engines[engine].state == "busy" and _free_cpu(h) == 1.0
    _finished(h, engine, tid, direct=True)
    out = h.out()
    assert h.s.engines[engine].state == "idle" and _free_cpu(h) == 2.0
    assert not _sent(out, m.EngineLease)         # it was just returned: not lent again at once
    assert not h.s.leased


def test_the_lease_is_not_asked_back_twice():
    h = _cluster()
    engine = _lent(h)
    h.submit(), h.submit(), h.submit()
    assert _sent(h.out(), m.RevokeLease) == [engine]
    h.submit()
    assert _sent(h.out(), m.RevokeLease) == []


@pytest.mark.parametrize("retries", [0, 1])
def test_a_lent_engine_that_dies_ends_the_lease_and_its_task_is_retried_or_fails(retries):
    h = _cluster()
    engine = _lent(h)
    tid = _record(h, engine, 1, max_retries=retries)
    h.out()
    h.s.connection_closed(engine)
    out = h.out()
    assert not h.s.leased
    if retries:
        assert tid in h.executes(out) and h.s.tasks[tid].retries_left == 0
    else:
        err = deserialize(h.pushed(out, ME)[f"{tid}/0"].inline)
        assert isinstance(err, WorkerCrashedError)


def test_an_idle_lent_engine_that_dies_gives_its_cpu_back():
    h = _cluster()
    engine = _lent(h)
    h.s.connection_closed(engine)
    h.out()
    assert not h.s.leased and _free_cpu(h) == 2.0


@pytest.mark.parametrize("retries", [0, 1])
def test_a_record_that_comes_after_its_engine_died_is_retried_or_fails(retries):
    h = _cluster()
    engine = _lent(h)
    h.s.connection_closed(engine)
    h.out()
    tid = _record(h, engine, 1, max_retries=retries)
    out = h.out()
    if retries:
        assert tid in h.executes(out)
        whys = [r["why"] for r in h.s.story(tid)]
        assert f"its owner sent it to engine {engine}, which is gone" in whys
        assert "died running it; retried, 0 retries left" in whys[-2]
    else:
        assert isinstance(deserialize(h.pushed(out, ME)[f"{tid}/0"].inline), WorkerCrashedError)


def test_a_finish_whose_engine_then_died_is_pushed_when_the_record_comes():
    h = _cluster()
    engine = _lent(h)
    _finished(h, engine, "d1", direct=True)
    h.s.connection_closed(engine)
    _record(h, engine, 1)
    out = h.out()
    assert deserialize(h.pushed(out, ME)["d1/0"].inline) == "d1"      # not run again
    assert "d1" not in h.s.tasks and h.executes(out) == {}


def test_the_driver_leaving_ends_its_leases():
    h = _cluster()
    engine = _lent(h)
    h.s.connection_closed(ME)
    h.out()
    assert not h.s.leased and h.s.engines[engine].state == "idle" and _free_cpu(h) == 2.0


def test_a_failed_task_on_the_lease_says_the_engine_waits():
    h = _cluster()
    engine = _lent(h)
    tid = _record(h, engine, 1, max_retries=0)
    _finished(h, engine, tid, failed=True, direct=True)
    out = h.out()
    assert _sent(out, m.EngineLease) == [engine]
    assert h.pushed(out, ME)[f"{tid}/0"].error


def test_a_retryable_failure_is_retried_by_placement_which_asks_the_lease_back():
    h = _cluster()
    engine = _lent(h)
    other = E1 if engine == E0 else E0
    tid = _record(h, engine, 1, max_retries=1)
    _finished(h, engine, tid, failed=True, retryable=True, direct=True)
    out = h.out()
    assert h.executes(out) == {tid: other}        # placed, not recorded on the lease again
    assert h.s.tasks[tid].spec.direct_to is None


def test_a_record_for_an_engine_not_lent_to_its_owner_is_refused():
    h = _cluster()
    h.submit(conn=ME)                            # its engine is busy, not lent
    [engine] = h.executes(h.out()).values()
    with pytest.raises(ValueError, match="not lent to its owner"):
        _record(h, engine, 1)


def test_a_lease_is_not_given_while_work_waits_or_to_a_busy_engine():
    h = _cluster()
    t1, t2, t3, t4 = (h.submit(conn=ME) for _ in range(4))   # 2 running, 2 queued behind
    ex = h.executes(h.out())
    _finished(h, ex[t1], t1)
    assert not _sent(h.out(), m.EngineLease)      # its engine runs the task queued behind
    _finished(h, ex[t2], t2)
    _finished(h, ex[t3], t3)
    assert not _sent(h.out(), m.EngineLease)      # its driver has another task going
    _finished(h, ex[t4], t4)
    assert _sent(h.out(), m.EngineLease) == [ex[t4]]


# ---------------------------------------------------------------------- the driver's side

class _Conn:
    closed = False


class _Channel:
    def __init__(self):
        self.conns = {}

    def engine_connection(self, engine_id):
        conn = self.conns.get(engine_id)
        return conn if conn is not None and not conn.closed else None


class _Client:
    def __init__(self):
        self.sent = []
        self.deactivated = []

    def send(self, *msgs):
        self.sent.extend(msgs)

    def deactivate(self, lease):
        lease.active = False
        self.deactivated.append(lease.engine_id)


def _driver():
    client, channel = _Client(), _Channel()
    return driver_leases.Leases(client, channel), client, channel


def _route(leases, n, func="f"):
    return leases.route(f"t{n}", func, b"code", None, "f", b"args", [f"t{n}/0"], ("j", ""), None)


def test_one_task_at_a_time_goes_to_each_leased_engine_with_its_code_once():
    leases, client, channel = _driver()
    assert _route(leases, 0) is None                     # nothing leased
    channel.conns[E0] = _Conn()
    leases.granted(E0)
    lease, conn, msg = _route(leases, 1)
    assert conn is channel.conns[E0] and msg.func_blob == b"code" and msg.task_id == "t1"
    assert _route(leases, 2) is None                     # busy with t1
    leases.arrived([ObjectEntry("t1/0", inline=b"")])
    lease, conn, msg = _route(leases, 3)
    assert msg.func_blob is None                         # shipped already
    leases.arrived([ObjectEntry("t3/0", inline=b"")])
    assert _route(leases, 4, func="g")[2].func_blob == b"code"      # another function's


def test_a_failed_tasks_renewed_lease_frees_the_engine():
    leases, client, channel = _driver()
    channel.conns[E0] = _Conn()
    leases.granted(E0)
    _route(leases, 1)
    leases.granted(E0)                                   # the scheduler: it waits again
    assert _route(leases, 2) is not None


def test_asked_back_no_task_goes_there_and_the_lease_is_returned():
    leases, client, channel = _driver()
    channel.conns[E0] = _Conn()
    leases.granted(E0)
    lease, _, _ = _route(leases, 1)
    leases.revoked(E0)
    assert not lease.active and client.sent == [m.LeaseReturned(engine_id=E0)]
    assert _route(leases, 2) is None and not leases.waiting


def test_a_lease_whose_connection_closed_is_returned():
    leases, client, channel = _driver()
    channel.conns[E0] = _Conn()
    leases.granted(E0)
    channel.conns[E0].closed = True
    assert _route(leases, 1) is None
    assert client.sent == [m.LeaseReturned(engine_id=E0)] and E0 not in leases._leases


@pytest.mark.parametrize("spec, ok", [
    ({}, True), ({"deps": ["x"]}, False), ({"nested": ["x"]}, False), ({"puts": [1]}, False),
    ({"generator": "streaming"}, False), ({"resources": {"CPU": 2.0}}, False),
    ({"resources": {"CPU": 1.0, "GPU": 1.0}}, False), ({"placement": {"kind": "spread"}}, False),
    ({"engine_id": "e"}, False), ({"max_calls": 3}, False),
    ({"runtime_env": {"sys_path": ["/code"], "env_vars": {"A": "1"}}}, True),
    ({"runtime_env": {"working_dir": ["digest", "d.p1"]}}, False),
    ({"runtime_env": {"py_modules": [["digest", "d.p2"]]}}, False)])
def test_only_plain_one_cpu_tasks_are_sent_straight(spec, ok):
    args = dict(deps=[], nested=[], puts=[], generator=None, resources={"CPU": 1.0},
                placement=None, engine_id=None, max_calls=0, runtime_env=None)
    args.update(spec)
    assert driver_leases.eligible(**args) is ok


def _put_then_finish_holding_it(h, engine, tid):
    """The engine's task puts an object and returns a ref to it (a nested ref
    in its result), then the engine drops its own ref: all before the record."""
    oid = f"{engine}.p1"
    h.s.handle(engine, m.PutObject(entry=ObjectEntry(oid, inline=dumps(7))))
    h.s.handle(engine, m.TaskFinished(task_id=tid, results=[
        ObjectEntry(f"{tid}/0", inline=dumps("box"))], nested=[[oid]], called_direct=True))
    h.s.handle(engine, m.RefUpdates(ops=[(oid, -1)]))
    return oid


def test_a_ref_in_an_early_finish_outlives_its_engines_own_ref():
    h = _cluster()
    engine = _lent(h)
    oid = _put_then_finish_holding_it(h, engine, "d1")
    assert oid in h.s.objects                         # pinned by the early finish
    _record(h, engine, 1)
    h.out()
    assert h.s.objects[oid].entry is not None         # the result contains it: kept
    h.s.handle(ME, m.RefUpdates(ops=[("d1/0", -1)]))
    h.out()
    assert oid not in h.s.objects                     # the result went: so does it


def test_a_ref_in_an_early_finish_whose_record_never_comes_is_let_go(monkeypatch):
    h = _cluster()
    engine = _lent(h)
    oid = _put_then_finish_holding_it(h, engine, "d1")
    h.s.clock = lambda: 1e6                           # long past EARLY_KEPT
    h.s.heartbeat()
    assert not h.s.early_finishes and oid not in h.s.objects


def test_a_lent_engine_waiting_for_its_driver_reads_as_idle_and_its_cpu_as_free():
    from shoal.scheduler import views
    h = _cluster()
    engine = _lent(h)
    status = views.cluster_status(h.s)
    [lent] = [e for e in status.engines if e.engine_id == engine]
    assert (lent.state, lent.leased, lent.task_id) == ("idle", True, None)
    assert status.hosts[0].available["CPU"] == 2.0
    tid = _record(h, engine, 1)
    status = views.cluster_status(h.s)
    [lent] = [e for e in status.engines if e.engine_id == engine]
    assert (lent.state, lent.leased, lent.task_id) == ("busy", True, tid)
    assert status.hosts[0].available["CPU"] == 1.0


def test_a_leased_task_that_waits_in_get_before_its_record_comes_lends_its_cpu():
    h = _cluster()
    engine = _lent(h)
    h.s.handle(engine, m.EngineBlocked(task_id="d1", blocked=True))
    assert h.s.early_blocked["d1"][0] is True
    tid = _record(h, engine, 1)
    assert h.s.engines[engine].state == "blocked" and _free_cpu(h) == 2.0
    assert not h.s.early_blocked
    h.s.handle(engine, m.EngineBlocked(task_id=tid, blocked=False))
    _finished(h, engine, tid, direct=True)
    h.out()
    assert h.s.engines[engine].state == "busy" and _free_cpu(h) == 1.0     # the lease's again


def test_a_lease_goes_only_to_a_driver_its_engine_delivered_to():
    h = _cluster()
    tid = h.submit(conn=ME)
    [engine] = h.executes(h.out()).values()
    _finished(h, engine, tid, delivered=False)       # its connection to the driver failed
    assert not _sent(h.out(), m.EngineLease) and not h.s.leased


def test_cancel_with_force_ends_the_lease_of_the_engine_it_stops():
    h = _cluster()
    engine = _lent(h)
    tid = _record(h, engine, 1)
    h.s.handle(ME, m.CancelTask(object_id=f"{tid}/0", force=True, recursive=False))
    out = h.out()
    assert _sent(out, m.RevokeLease) == [engine] and not h.s.leased
    assert h.s.engines[engine].state == "stopping" and _free_cpu(h) == 2.0
    late = _record(h, engine, 2, max_retries=0)      # sent before the driver heard
    h.s.handle(engine, m.EngineBlocked(task_id=late, blocked=True))     # ignored: stopping
    out = h.out()
    assert isinstance(deserialize(h.pushed(out, ME)[f"{late}/0"].inline), WorkerCrashedError)
    h.s.handle(ME, m.LeaseReturned(engine_id=engine))        # the driver's answer: nothing left
    h.s.connection_closed(engine)
    h.out()
    assert _free_cpu(h) == 2.0


@pytest.mark.parametrize("retries", [0, 1])
def test_a_leased_task_queued_behind_another_when_the_engine_dies_counts_as_crashed(retries):
    h = _cluster()
    engine = _lent(h)
    first, second = _record(h, engine, 1), _record(h, engine, 2, max_retries=retries)
    assert h.s.tasks[second].state == "queued"
    h.s.connection_closed(engine)          # the second may have started: the first had ended
    out = h.out()
    if retries:
        assert second in h.executes(out) and h.s.tasks[second].retries_left == 0
    else:
        assert isinstance(deserialize(h.pushed(out, ME)[f"{second}/0"].inline),
                          WorkerCrashedError)
    assert first in h.executes(out)              # it was running: retried as well
    assert _free_cpu(h) == 1.0                   # what runs again holds one CPU, no more


def test_a_report_of_a_task_that_already_ended_is_not_kept():
    h = _cluster()
    engine = _lent(h)
    _record(h, engine, 1)
    second = _record(h, engine, 2)                   # queued behind the first
    h.s.handle(ME, m.CancelTask(object_id=f"{second}/0", force=False, recursive=False))
    _finished(h, engine, second, direct=True)       # it ran anyway, after the cancel
    assert second not in h.s.early_finishes


def test_a_value_the_engine_could_not_send_says_the_engine_waits():
    h = _cluster()
    engine = _lent(h)
    tid = _record(h, engine, 1)
    _finished(h, engine, tid, direct=True)
    h.out()
    h.s.handle(engine, m.Undelivered(task_id=tid))
    out = h.out()
    assert _sent(out, m.EngineLease) == [engine] and f"{tid}/0" in h.pushed(out, ME)


def test_a_failed_write_to_a_leased_engine_sends_the_queued_record_to_be_placed():
    from shoal.core.client import Client

    class Broken:
        def send_many(self, msgs):
            raise BrokenPipeError("gone")

    def record(tid, direct_to):
        return m.SubmitTask(task_id=tid, func_id="f", name="f", args=b"", deps=[], nested=[],
                            return_ids=[f"{tid}/0"], resources={"CPU": 1.0}, direct_to=direct_to)
    client = object.__new__(Client)
    client._straight = [(Broken(), m.ExecuteTask(task_id="t1", func_id="f", func_blob=None,
                                                 name="f", args=b"", dep_values=[],
                                                 return_ids=["t1/0"], gpu_ids=[]))]
    client._queued = [record("t1", E0), record("t2", E1)]
    client._write_straight()
    assert [x.direct_to for x in client._queued] == [None, E1]


def test_the_refs_a_functions_code_captures_are_found_when_it_is_shipped():
    from shoal.core.remote_function import ship
    from shoal.protocol.serialization import note_ref

    class Ref:                       # pickles as ObjectRef does: it says its id
        def __reduce__(self):
            note_ref("d.p7")
            return (str, ("d.p7",))
    held = Ref()

    def captures():
        return held

    def plain():
        return 1
    found, none = [], []
    ship(captures, found)
    ship(plain, none)
    assert found == ["d.p7"] and none == []
