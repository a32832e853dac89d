"""Actor calls a driver sends its actor's engine itself (core/direct_calls.py),
end to end on a real cluster: which calls go that way, their order mixed with
relayed calls, prints, cancel, kill and kill -9 of the actor's engine."""
import os
import signal
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shoal
from shoal.core import client as client_module
from shoal.core import runtime
from shoal.exceptions import ActorDiedError, TaskCancelledError
from shoal.protocol import messages as m

from conftest import cluster_with_defaults, wait_for

pytestmark = pytest.mark.timeout(180)


cluster = cluster_with_defaults("SHOAL_DIRECT_RESULTS", "SHOAL_DIRECT_CALLS")


def client():
    return runtime.current().client


def went_straight(ref) -> bool:
    """Whether the scheduler recorded the call as sent to the engine by its caller."""
    task_id = ref.id.rpartition("/")[0]
    story = client().query("story", task_id=task_id)["story"]
    return any(r["why"] == "its caller sent it to its actor's engine" for r in story)


def warm(handle, method="ping", *args):
    """Calls go straight once a result came back from the actor's engine."""
    for _ in range(3):
        shoal.get(getattr(handle, method).remote(*args), timeout=60)


@shoal.remote
class Log:
    def __init__(self):
        self.seen = []

    def ping(self):
        return os.getpid()

    def add(self, x):
        self.seen.append(x)
        return x

    def take(self):
        seen, self.seen = self.seen, []
        return seen


def test_plain_calls_go_straight_and_calls_with_refs_through_the_scheduler():
    log = Log.remote()
    warm(log)
    ref = log.add.remote(1)
    assert shoal.get(ref, timeout=30) == 1 and went_straight(ref)
    with_ref = log.add.remote(shoal.put(2))
    assert shoal.get(with_ref, timeout=30) == 2 and not went_straight(with_ref)
    assert shoal.get(log.take.remote(), timeout=30) == [1, 2]


# What a caller may do between calls: a plain call, a call with a ref argument
# (relayed), a call whose result nobody keeps, or wait for everything so far.
STEPS = st.lists(st.sampled_from(["plain", "ref", "dropped", "dropped_ref", "wait"]),
                 min_size=1, max_size=40)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(steps=STEPS)
def test_mixed_calls_run_in_submission_order(steps):
    log = _ordered_log()
    refs, expected = [], []
    for i, step in enumerate(steps):
        if step == "wait":
            shoal.get(refs, timeout=60)
            continue
        arg = shoal.put(i) if step.endswith("ref") else i
        ref = log.add.remote(arg)
        expected.append(i)
        if not step.startswith("dropped"):
            refs.append(ref)
        del ref
    assert shoal.get(log.take.remote(), timeout=60) == expected


_LOG = []


def _ordered_log():
    if not _LOG:
        _LOG.append(Log.remote())
        warm(_LOG[0])
    shoal.get(_LOG[0].take.remote(), timeout=60)
    return _LOG[0]


def test_a_straight_calls_prints_reach_the_driver_before_its_value():
    @shoal.remote
    class Talker:
        def ping(self):
            return 1

        def talk(self, n):
            for i in range(n):
                print(f"line {i}")
            return n

    seen, lock = [], threading.Lock()
    handler = client().output_handler

    def record(msg, context):
        with lock:
            seen.append(msg.text)

    talker = Talker.remote()
    warm(talker)
    client().output_handler = record
    try:
        ref = talker.talk.remote(100)
        assert shoal.get(ref, timeout=30) == 100 and went_straight(ref)
        with lock:
            assert "".join(seen).splitlines() == [f"line {i}" for i in range(100)]
    finally:
        client().output_handler = handler


def test_a_running_straight_call_can_be_cancelled():
    @shoal.remote
    class Sleeper:
        def ping(self):
            return 1

        async def sleep(self):
            import asyncio
            await asyncio.sleep(60)

    sleeper = Sleeper.remote()
    warm(sleeper)
    ref = sleeper.sleep.remote()
    wait_for(lambda: went_straight(ref), what="the call to be recorded")
    shoal.cancel(ref)
    with pytest.raises(TaskCancelledError):
        shoal.get(ref, timeout=30)
    assert shoal.get(sleeper.ping.remote(), timeout=30) == 1


@pytest.mark.parametrize("no_restart", [True, False])
def test_calls_after_kill_never_reach_the_dying_engine(no_restart):
    log = Log.options(max_restarts=1).remote()
    warm(log)
    shoal.kill(log, no_restart=no_restart)
    ref = log.add.remote(1)
    wait_for(lambda: client().query("story", task_id=ref.id.rpartition("/")[0])["story"],
             what="the scheduler to record the call")
    assert not went_straight(ref)
    if no_restart:
        with pytest.raises(ActorDiedError):
            shoal.get(ref, timeout=60)
    else:               # through the scheduler: it ran on the old engine or the new one
        try:
            assert shoal.get(ref, timeout=60) == 1
        except ActorDiedError:
            pass        # it was on its way when the old engine died
        wait_for(lambda: _restarted(log), what="the actor to restart")
        warm(log, "add", 2)
        ref = log.add.remote(3)          # straight again, to the new engine
        assert shoal.get(ref, timeout=60) == 3 and went_straight(ref)


def _restarted(handle) -> bool:
    info = [a for a in client().query("list_actors") if a["actor_id"] == handle._actor_id]
    return bool(info) and info[0]["state"] == "ALIVE" and info[0]["restarts"] == 1


@pytest.mark.parametrize("retries", [-1, 0])
def test_kill_9_of_the_engine_with_straight_calls_in_flight_loses_nothing(retries):
    @shoal.remote(max_restarts=-1, max_task_retries=retries)
    class Slow:
        def ping(self):
            return os.getpid()

        def echo(self, i):
            import time
            time.sleep(0.002)
            return i

    slow = Slow.remote()
    pid = shoal.get(slow.ping.remote(), timeout=60)
    warm(slow)
    refs = [slow.echo.remote(i) for i in range(300)]
    wait_for(lambda: shoal.wait(refs, num_returns=20, timeout=0)[0], what="some calls to finish")
    os.kill(pid, signal.SIGKILL)
    values, died = [], 0
    for i, ref in enumerate(refs):
        try:
            values.append(shoal.get(ref, timeout=60))
            assert values[-1] == i
        except ActorDiedError:
            died += 1
    if retries:
        assert died == 0 and len(values) == 300
    else:
        assert died > 0 and len(values) + died == 300
    assert shoal.get(slow.ping.remote(), timeout=60) != pid       # restarted, and serving
    warm(slow)
    ref = slow.echo.remote(7)
    assert shoal.get(ref, timeout=60) == 7 and went_straight(ref)


def test_a_sync_straight_call_wakes_only_its_engine(monkeypatch):
    """Its submission is the scheduler's record, not what runs it: it waits for
    its batch (the timer here, set long) even while the caller waits, and the
    value comes back before the scheduler has heard of the call."""
    log = Log.remote()
    warm(log)
    conn = client().conn
    written, send = [], conn.send_chunks
    monkeypatch.setattr(conn, "send_chunks", lambda chunks: (
        written.append(b"".join(bytes(c) for c in chunks)), send(chunks))[1])
    monkeypatch.setattr(client_module, "SUBMIT_DELAY", 2.0)
    client().flush_refs()
    ref = log.add.remote(7)
    task_id = ref.id.rpartition("/")[0].encode()
    assert shoal.get(ref, timeout=30) == 7
    assert not any(task_id in w for w in written)
    wait_for(lambda: any(task_id in w for w in written), what="the timer to send the submission")
    assert went_straight(ref)
    relayed = log.add.remote(shoal.put(8))           # a wait for it sends its batch at once
    assert shoal.get(relayed, timeout=30) == 8 and not went_straight(relayed)
    assert shoal.get(log.take.remote(), timeout=30) == [7, 8]


def test_a_driver_sending_garbage_down_the_connection_closes_it_only():
    log = Log.remote()
    warm(log)
    conn, _engine = client()._channel.actor_engine(log._actor_id)
    conn.send(m.Heartbeat())                 # not a call: the engine drops the connection
    wait_for(lambda: client()._channel.actor_engine(log._actor_id) is None,
             what="the connection to close")
    ref = log.add.remote(5)                  # relayed now; the engine serves on
    assert shoal.get(ref, timeout=30) == 5 and not went_straight(ref)


def test_switched_off_every_call_is_relayed(monkeypatch):
    monkeypatch.setenv("SHOAL_DIRECT_CALLS", "0")
    from shoal.core.client import Client
    rt = runtime.current()
    other = Client.connect(rt.address, client()._key)
    try:
        assert other.direct_calls is None and other._channel is not None
    finally:
        other.close()
