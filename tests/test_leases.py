"""Tasks a driver sends the engines lent to it (core/leases.py,
scheduler/leases.py), end to end on a real cluster: which tasks go that way,
errors, prints, cancel, a lease asked back by nested work, kill -9 of the
engine in the middle of a task, and leases switched off."""
import os
import signal
import time

import cloudpickle
import pytest

import shoal
from shoal.core import runtime
from shoal.core.client import Client
from shoal.exceptions import TaskCancelledError
from shoal.protocol import messages as m
from shoal.protocol.serialization import serialize

from conftest import cluster_with_defaults, wait_for

pytestmark = pytest.mark.timeout(180)
LEASED = "its owner sent it to the engine it leases"


cluster = cluster_with_defaults("SHOAL_DIRECT_RESULTS", "SHOAL_LEASES")


def client():
    return runtime.current().client


def whys(ref) -> list:
    task_id = ref.id.rpartition("/")[0]
    return [r["why"] for r in client().query("story", task_id=task_id)["story"]]


def leased(ref) -> bool:
    """Whether the scheduler recorded it as sent to a leased engine by its owner
    (running there, or queued behind the owner's task before it)."""
    return any(why.startswith(LEASED) for why in whys(ref))


def leased_now():
    """Run a task to its end until its engine is lent to this driver."""
    wait_for(lambda: shoal.get(ident.remote(0), timeout=60) == 0 and client().leases._leases,
             what="a lease")


@shoal.remote
def ident(x):
    return x


@shoal.remote
def pid():
    return os.getpid()


@shoal.remote
def fail(a, b):
    raise KeyError(a, b)


@shoal.remote
def say(text):
    print(text)
    return len(text)


@shoal.remote
def nap(seconds):
    time.sleep(seconds)
    return seconds


@shoal.remote
def parent(x):
    return shoal.get(ident.remote(x)) + 1


def test_lone_tasks_go_to_the_leased_engine_and_the_scheduler_records_them():
    leased_now()
    refs = []
    for i in range(20):
        refs.append(ident.remote(i))
        assert shoal.get(refs[-1], timeout=60) == i
    assert all(leased(r) for r in refs[1:])
    assert len({shoal.get(pid.remote()) for _ in range(5)}) == 1       # one engine serves them


def test_a_burst_asks_the_leases_back_and_spreads_over_the_engines():
    leased_now()
    refs = [nap.remote(0.2) for _ in range(6)]
    assert shoal.get(refs, timeout=60) == [0.2] * 6
    assert sum(leased(r) for r in refs) <= 2             # at most one per lease

    def all_free():
        status = client().status()
        return all(e["state"] == "idle" for e in status["engines"]) and \
            sum(h["available"]["CPU"] for h in status["hosts"]) == 2.0
    wait_for(all_free, what="lent engines read as idle, their CPUs as free")


def test_errors_come_back_whole_and_the_lease_goes_on():
    leased_now()
    for i in range(3):
        with pytest.raises(KeyError) as info:
            shoal.get(fail.remote(i, "two"), timeout=60)
        assert info.value.args == (i, "two")
    ref = ident.remote(5)
    assert shoal.get(ref, timeout=60) == 5 and leased(ref)


def test_prints_of_a_leased_task_reach_the_driver_before_its_value(capfd):
    leased_now()
    ref = say.remote("hello from a lease")
    assert shoal.get(ref, timeout=60) == len("hello from a lease")
    assert leased(ref)
    assert "hello from a lease" in capfd.readouterr().out


def test_a_running_leased_task_can_be_cancelled():
    leased_now()
    ref = nap.remote(30)
    wait_for(lambda: client().status()["tasks"].get("running"), what="it to run")
    shoal.cancel(ref)
    with pytest.raises(TaskCancelledError):
        shoal.get(ref, timeout=60)
    assert leased(ref)
    assert shoal.get(ident.remote(1), timeout=60) == 1


def test_nested_work_of_a_leased_task_gets_an_engine_lent_elsewhere():
    wait_for(lambda: shoal.get([nap.remote(0.05), nap.remote(0.05)]) and
             len(client().leases._leases) == 2, what="both engines lent")
    for i in range(5):
        assert shoal.get(parent.remote(i), timeout=60) == i + 1


def test_another_drivers_work_takes_the_lease_back_and_runs_in_parallel():
    leased_now()
    other = Client.connect(runtime.current().address, client()._key)
    try:
        other.send(*other.register_function("nap-fn", "nap", cloudpickle.dumps(
            lambda s: time.sleep(s) or s)))
        ids = []
        t0 = time.perf_counter()
        for _ in range(2):            # one for the idle engine, one for the lent one
            tid = other.new_id("t")
            other.own(f"{tid}/0")
            other.submit(m.SubmitTask(
                task_id=tid, func_id="nap-fn", name="nap", args=serialize(((1.0,), {})).packed(),
                deps=[], nested=[], return_ids=[f"{tid}/0"], resources={"CPU": 1.0}))
            ids.append(f"{tid}/0")
        entries, timed_out = other.wait_entries(ids, 2, 60, stop_on_error=True)
        elapsed = time.perf_counter() - t0
        assert not timed_out and [other.load(entries[i]) for i in ids] == [1.0, 1.0]
        assert elapsed < 1.8, elapsed           # side by side, not one after the other
    finally:
        other.close()
    assert [shoal.get(ident.remote(i), timeout=60) for i in range(5)] == list(range(5))


def test_kill_9_of_the_leased_engine_mid_task_loses_nothing():
    leased_now()
    ref = nap.remote(2.0)
    task_id = ref.id.rpartition("/")[0]

    def engine_of():
        story = client().query("story", task_id=task_id)["story"]
        return next((r["engine_id"] for r in story if r["why"].startswith(LEASED)), None)
    engine_id = wait_for(engine_of, what="its record")
    [victim] = [e["pid"] for e in client().status()["engines"] if e["engine_id"] == engine_id]
    os.kill(victim, signal.SIGKILL)
    assert shoal.get(ref, timeout=120) == 2.0                # retried on another engine
    assert any("is gone" in w or "died" in w for w in whys(ref))
    assert [shoal.get(ident.remote(i), timeout=60) for i in range(5)] == list(range(5))


def test_nested_gets_in_leased_tasks_on_one_cpu_do_not_deadlock():
    shoal.shutdown()
    shoal.init(num_cpus=1)
    try:
        leased_now()
        for i in range(5):       # the parent waits in get at once: maybe before its record
            assert shoal.get(parent.remote(i), timeout=60) == i + 1
    finally:
        shoal.shutdown()


def test_switched_off_no_engine_is_lent_and_every_task_goes_through_the_scheduler(
        monkeypatch):
    shoal.shutdown()
    monkeypatch.setenv("SHOAL_LEASES", "0")
    shoal.init(num_cpus=2)
    assert client().leases is None and client().direct_calls is not None
    for i in range(5):
        ref = ident.remote(i)
        assert shoal.get(ref, timeout=60) == i
        assert not leased(ref)
    assert all(not e["leased"] for e in client().status()["engines"])
    shoal.shutdown()


def test_a_task_whose_code_captures_a_ref_goes_through_the_scheduler():
    """Its engine looks the ref up through the scheduler: sent straight, the
    task could overtake a put the scheduler has not read yet."""
    leased_now()
    for i in range(5):
        data = shoal.put(list(range(i + 3)))

        @shoal.remote
        def total():
            return sum(shoal.get(data))

        ref = total.remote()
        assert shoal.get(ref, timeout=60) == sum(range(i + 3)) and not leased(ref)
    assert leased(ident.remote(0))                 # the lease is still there for the rest
