"""Level 2: actors on a real embedded cluster."""
import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import shoal
from shoal.exceptions import ActorDiedError, PendingCallsLimitExceeded, TaskCancelledError
from shoal.util import ActorPool
from shoal.util.state import list_actors

from conftest import alive, wait_for

pytestmark = pytest.mark.usefixtures("cluster")


@shoal.remote
class Counter:
    def __init__(self, start=0):
        self.n = start

    def incr(self, k=1):
        self.n += k
        return self.n

    def pid(self):
        return os.getpid()

    @shoal.method(num_returns=2)
    def pair(self):
        return self.n, -self.n

    def slow(self, seconds, started=None):
        if started:                      # tell the test the call is running
            open(started, "w").close()
        time.sleep(seconds)
        return self.n


def info(handle):
    return next(a for a in list_actors() if a["actor_id"] == handle._actor_id)


def test_the_issue_example_calls_run_in_order():
    c = Counter.remote(10)
    refs = [c.incr.remote() for _ in range(100)]
    assert shoal.get(refs) == list(range(11, 111))


def test_classes_and_methods_cannot_be_called_directly():
    with pytest.raises(TypeError, match=r"Counter\.remote\(\)"):
        Counter()
    c = Counter.remote()
    with pytest.raises(TypeError, match=r"incr\.remote\(\)"):
        c.incr()


def test_actor_options_are_validated():
    with pytest.raises(ValueError, match="max_restart"):
        Counter.options(max_restart=1)
    with pytest.raises(ValueError, match="max_concurrency"):
        Counter.options(max_concurrency=0)
    with pytest.raises(ValueError, match="lifetime"):
        Counter.options(lifetime="forever")
    with pytest.raises(ValueError, match="get_if_exists"):
        Counter.options(get_if_exists=True)


def test_method_num_returns_and_readable_repr():
    c = Counter.options(name="repr-me").remote(3)
    a, b = c.pair.remote()
    assert shoal.get([a, b]) == [3, -3]
    assert repr(c).startswith("Actor(Counter, ") and "repr-me" in repr(c)


def test_handles_travel_into_tasks_and_other_actors():
    c = Counter.remote()

    @shoal.remote
    def bump(handle, times):
        return shoal.get([handle.incr.remote() for _ in range(times)])[-1]

    @shoal.remote
    class Driver:
        def __init__(self, handle):
            self.handle = handle

        def go(self):
            return shoal.get(self.handle.incr.remote(100))

    assert shoal.get(bump.remote(c, 5)) == 5
    d = Driver.remote(c)
    assert shoal.get(d.go.remote()) == 105
    assert shoal.get(c.incr.remote(0)) == 105


def test_more_actors_than_cpus():
    actors = [Counter.remote(i) for i in range(6)]
    assert shoal.get([a.incr.remote() for a in actors], timeout=60) == [1, 2, 3, 4, 5, 6]
    assert len({shoal.get(a.pid.remote()) for a in actors}) == 6


def test_named_actors():
    c = Counter.options(name="global-counter").remote(7)
    assert shoal.get(shoal.get_actor("global-counter").incr.remote()) == 8
    with pytest.raises(ValueError, match="already taken"):
        Counter.options(name="global-counter").remote()
    same = Counter.options(name="global-counter", get_if_exists=True).remote()
    assert shoal.get(same.incr.remote()) == 9
    with pytest.raises(ValueError, match="no-such-actor"):
        shoal.get_actor("no-such-actor")
    other = Counter.options(name="global-counter", namespace="elsewhere").remote(100)
    assert shoal.get(shoal.get_actor("global-counter", namespace="elsewhere").incr.remote()) == 101
    del c, same, other


def test_kill_fails_later_calls():
    c = Counter.remote()
    pid = shoal.get(c.pid.remote())
    shoal.kill(c)
    with pytest.raises(ActorDiedError, match="killed"):
        shoal.get(c.incr.remote(), timeout=30)
    wait_for(lambda: not alive(pid), what="the actor process to exit")
    with pytest.raises(TypeError):
        shoal.kill("not a handle")


def test_constructor_errors_surface_on_every_call():
    @shoal.remote
    class Broken:
        def __init__(self):
            raise RuntimeError("cannot start")

        def f(self):
            return 1

    b = Broken.remote()
    for _ in range(2):
        with pytest.raises(ActorDiedError, match="cannot start") as err:
            shoal.get(b.f.remote(), timeout=30)
        assert isinstance(err.value.cause, RuntimeError)


def test_threaded_actor_runs_calls_concurrently():
    c = Counter.options(max_concurrency=4).remote()
    shoal.get(c.incr.remote())
    t = time.monotonic()
    shoal.get([c.slow.remote(0.5) for _ in range(4)], timeout=30)
    assert time.monotonic() - t < 1.5


def test_async_actor_methods_run_concurrently():
    @shoal.remote
    class Sleeper:
        async def nap(self, seconds):
            await asyncio.sleep(seconds)
            return seconds

    s = Sleeper.remote()
    shoal.get(s.nap.remote(0))
    t = time.monotonic()
    assert shoal.get([s.nap.remote(0.5) for _ in range(20)], timeout=30) == [0.5] * 20
    assert time.monotonic() - t < 2.5


def test_async_calls_can_be_cancelled():
    @shoal.remote
    class Sleeper:
        async def nap(self, seconds, started):
            open(started, "w").close()
            await asyncio.sleep(seconds)

    started = f"/tmp/shoal-test-nap-{os.getpid()}"
    s = Sleeper.remote()
    ref = s.nap.remote(60, started)
    wait_for(lambda: os.path.exists(started), what="the call to start")
    os.unlink(started)
    shoal.cancel(ref)
    with pytest.raises(TaskCancelledError):
        shoal.get(ref, timeout=10)


def test_max_pending_calls_pushes_back():
    c = Counter.options(max_pending_calls=2).remote()
    first = [c.slow.remote(1), c.slow.remote(1)]
    with pytest.raises(PendingCallsLimitExceeded, match="max_pending_calls=2"):
        c.incr.remote()
    shoal.get(first, timeout=30)
    assert shoal.get(c.incr.remote()) == 1


def test_sigkill_fails_pending_calls_and_restarts():
    c = Counter.options(max_restarts=1).remote(5)
    shoal.get(c.incr.remote())
    pid = shoal.get(c.pid.remote())
    started = f"/tmp/shoal-test-slow-{os.getpid()}"
    pending = c.slow.remote(30, started)
    wait_for(lambda: os.path.exists(started), what="the call to start")
    os.unlink(started)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ActorDiedError):
        shoal.get(pending, timeout=30)
    assert shoal.get(c.incr.remote(), timeout=30) == 6        # __init__ ran again
    assert info(c)["restarts"] == 1 and info(c)["state"] == "ALIVE"
    os.kill(shoal.get(c.pid.remote()), signal.SIGKILL)
    with pytest.raises(ActorDiedError, match="max_restarts=1"):
        shoal.get(c.incr.remote(), timeout=30)


def test_max_task_retries_reruns_the_interrupted_call():
    c = Counter.options(max_restarts=1, max_task_retries=1).remote()
    pid = shoal.get(c.pid.remote())
    started = f"/tmp/shoal-test-retry-{os.getpid()}"
    pending = c.slow.remote(1, started)
    wait_for(lambda: os.path.exists(started), what="the call to start")
    os.unlink(started)
    os.kill(pid, signal.SIGKILL)
    assert shoal.get(pending, timeout=30) == 0


def test_actor_pool():
    pool = ActorPool([Counter.remote(0), Counter.remote(0)])
    assert list(pool.map(lambda a, v: a.incr.remote(v), [1, 2, 3, 4])) in (
        [1, 2, 4, 6], [1, 2, 3, 5], [1, 2, 4, 5], [1, 2, 3, 6])
    assert sorted(pool.map_unordered(lambda a, v: a.slow.remote(0), range(4)))
    pool.submit(lambda a, v: a.incr.remote(v), 10)
    pool.submit(lambda a, v: a.incr.remote(v), 10)
    assert not pool.has_free() and pool.has_next()
    pool.submit(lambda a, v: a.incr.remote(v), 1000)          # waits for a free actor
    assert pool.get_next() >= 10 and pool.get_next() >= 10 and pool.get_next() > 1000
    assert pool.has_free() and not pool.has_next()


def test_actor_state_listing_and_cli_status():
    c = Counter.options(name="listed").remote()
    shoal.get(c.incr.remote())
    row = info(c)
    assert row["class_name"] == "Counter" and row["name"] == "listed" and row["state"] == "ALIVE"
    assert row["engine_id"] and row["host_id"] and row["restarts"] == 0
    from shoal.cli import format_status
    from shoal.core import runtime
    assert "listed" in format_status("x", runtime.current().client.status())


def test_actors_go_away_with_their_last_handle():
    c = Counter.remote()
    pid = shoal.get(c.pid.remote())
    del c
    wait_for(lambda: not alive(pid), what="the unreferenced actor to exit")


def test_detached_actors_outlive_their_driver():
    from shoal.core import runtime
    script = textwrap.dedent(f"""
        import shoal
        shoal.init(address={runtime.current().address!r})

        @shoal.remote
        class Keeper:
            def __init__(self):
                self.value = "kept"

            def get(self):
                return self.value

        kept = Keeper.options(name="keeper", lifetime="detached").remote()
        gone = Keeper.options(name="ephemeral").remote()
        assert shoal.get([kept.get.remote(), gone.get.remote()]) == ["kept", "kept"]
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert shoal.get(shoal.get_actor("keeper").get.remote()) == "kept"
    wait_for(lambda: not any(a["name"] == "ephemeral" and a["state"] != "DEAD"
                             for a in list_actors()), what="the non-detached actor to die")
    shoal.kill(shoal.get_actor("keeper"))
