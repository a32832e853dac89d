"""Results straight from a same-host engine to its driver (core/reply_channel.py,
engine/replies.py): the design's points 4-6 end to end, on a real cluster.

Several tests make a task's engine misbehave at the moments that matter: the
task wraps its own engine's `client.send` (the engine tells the scheduler of
its end through it) or the engine's sends to reply channels, which come after."""
import os
import stat
import threading
import time

import cloudpickle
import pytest

import shoal
from shoal.core import runtime
from shoal.core.client import Client
from shoal.protocol import messages as m
from shoal.protocol.serialization import serialize

from conftest import wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", autouse=True)
def cluster():
    shoal.shutdown()
    before = os.environ.pop("SHOAL_DIRECT_RESULTS", None)     # on, whatever the caller's shell says
    try:
        ctx = shoal.init(num_cpus=2)
    finally:
        if before is not None:
            os.environ["SHOAL_DIRECT_RESULTS"] = before
    yield ctx
    shoal.shutdown()


def client():
    return runtime.current().client


def came_direct(ref) -> bool:
    return client().came_direct(ref.id)


def inc_from(other: Client, x: int) -> tuple:
    """Run x + 1 as a task of another driver `other`, through its raw client:
    (its task id, the value it got)."""
    other.send(*other.register_function("inc-fn", "inc", cloudpickle.dumps(lambda x: x + 1)))
    tid = other.new_id("t")
    other.own(f"{tid}/0")
    other.submit(m.SubmitTask(task_id=tid, func_id="inc-fn", name="inc",
                              args=serialize(((x,), {})).packed(), deps=[], nested=[],
                              return_ids=[f"{tid}/0"], resources={"CPU": 1.0}))
    entries, timed_out = other.wait_entries([f"{tid}/0"], 1, 30, stop_on_error=True)
    assert not timed_out
    return tid, other.load(entries[f"{tid}/0"])


def test_the_reply_socket_is_private_and_plain_results_come_straight():
    path = client()._channel.path
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.path.dirname(path) == client().session_dir

    @shoal.remote
    def plain(x):
        return x + 1

    ref = plain.remote(1)
    assert shoal.get(ref, timeout=30) == 2
    assert came_direct(ref)
    # The scheduler has the value too: a task that takes the ref gets it.
    assert shoal.get(plain.remote(ref), timeout=30) == 3


def test_switched_off_a_driver_has_no_channel_and_gets_results_relayed(monkeypatch):
    monkeypatch.setenv("SHOAL_DIRECT_RESULTS", "0")
    rt = runtime.current()
    other = Client.connect(rt.address, client()._key)
    try:
        assert other._channel is None
        assert not any(n.startswith(f"reply-{other.client_id}") for n in os.listdir(other.session_dir))
        assert inc_from(other, 41)[1] == 42
        assert not other._direct_ids
    finally:
        other.close()


def test_a_driver_its_engines_cannot_reach_gets_its_results_pushed():
    """The engines tell the scheduler they send the results straight, then
    fail to (the channel's socket is gone): they say so (Undelivered) and the
    scheduler pushes the results after all."""
    rt = runtime.current()
    other = Client.connect(rt.address, client()._key)
    try:
        assert other._channel is not None
        os.unlink(other._channel.path)           # listening still, but nobody can connect
        for i in range(5):
            tid, value = inc_from(other, i)
            assert value == i + 1
            story = client().query("story", task_id=tid)["story"]
            assert story[-1]["to"] == "finished"
        assert not other._direct_ids
    finally:
        other.close()


def test_a_driver_that_got_results_straight_disconnects_at_once():
    """Its reader serves the channel with a selector; closing only the
    scheduler's socket left it waiting on the engines' connections (5 s,
    until close gave up on the join)."""
    rt = runtime.current()
    other = Client.connect(rt.address, client()._key)
    try:
        for i in range(20):
            assert inc_from(other, i)[1] == i + 1
        assert other._direct_ids            # engines are connected to its channel
    finally:
        started = time.monotonic()
        other.close()
    assert time.monotonic() - started < 2 and not other._reader.is_alive()


def test_errors_and_results_holding_refs_keep_the_relay():
    @shoal.remote
    def fails():
        raise ValueError("no")

    @shoal.remote
    def holds():
        return [shoal.put(5)]

    bad = fails.remote()
    with pytest.raises(Exception, match="no"):
        shoal.get(bad, timeout=30)
    assert not came_direct(bad)
    nested = holds.remote()
    inner = shoal.get(nested, timeout=30)
    assert shoal.get(inner[0], timeout=30) == 5
    assert not came_direct(nested)


def test_a_tasks_output_comes_before_its_direct_result():
    seen = []
    lock = threading.Lock()
    handler = client().output_handler

    def record(msg, context):
        with lock:
            seen.append(msg.text)

    @shoal.remote
    def chatty(n):
        import time
        for i in range(n):
            print(f"line {i}")
            if i % 50 == 0:
                time.sleep(0.002)      # let the background flusher send some on its own
        return n

    @shoal.remote
    def chatty_then_fails(n):
        for i in range(n):
            print(f"line {i}")
        raise ValueError("after the output")

    client().output_handler = record
    try:
        for n in (1, 200):
            seen.clear()
            ref = chatty.remote(n)
            assert shoal.get(ref, timeout=30) == n
            with lock:                 # everything printed is here when get returns
                lines = "".join(seen).splitlines()
            assert lines == [f"line {i}" for i in range(n)]
            assert came_direct(ref)
        # Output went straight, the error through the scheduler: still in order.
        seen.clear()
        ref = chatty_then_fails.remote(200)
        with pytest.raises(Exception, match="after the output"):
            shoal.get(ref, timeout=30)
        with lock:
            lines = "".join(seen).splitlines()
        assert lines == [f"line {i}" for i in range(200)]
    finally:
        client().output_handler = handler


def _crash_once(tmp_path):
    """A task whose first run's engine dies after telling the scheduler it
    finished (TaskFinished, delivered) and before sending the value straight to
    the driver; a re-run would return "rerun"."""
    marker = str(tmp_path / "crashed")

    @shoal.remote
    def first_run_crashes(marker):
        import os
        from shoal.engine.replies import ReplyConnections
        if os.path.exists(marker):
            return "rerun"
        real_send = ReplyConnections.send

        def send(self, address, msgs):
            if any(type(m).__name__ == "ObjectsReady" for m in msgs):
                open(marker, "w").close()
                os._exit(1)
            return real_send(self, address, msgs)

        ReplyConnections.send = send
        return "first"

    return marker, first_run_crashes


@pytest.mark.parametrize("retries", [3, 0])
def test_engine_killed_between_the_sends_loses_nothing(tmp_path, retries):
    marker, task = _crash_once(tmp_path)
    ref = task.options(max_retries=retries).remote(marker)
    # The scheduler had its TaskFinished: it pushes the value the engine never
    # sent, and does not run the finished task again.
    assert shoal.get(ref, timeout=60) == "first"
    assert os.path.exists(marker) and not came_direct(ref)

    @shoal.remote
    def echo(x):
        return x

    assert shoal.get(echo.remote(ref), timeout=60) == "first"


@pytest.mark.parametrize("kind", ["task", "actor call"])
def test_a_cancel_racing_the_finish_does_nothing(tmp_path, kind):
    """The cancel reaches the scheduler after the task ran to its end and
    before its TaskFinished: a success sent straight to the owner counts as
    finished everywhere (the owner has the value: as in Ray, a cancel of a
    finished task does nothing)."""
    marker, release = str(tmp_path / "holding"), str(tmp_path / "release")

    def work(marker, release):
        """Its engine holds the task's TaskFinished (writing `marker` then)
        until the file `release` exists."""
        import os
        import time
        from shoal.core import runtime
        engine_client = runtime.current().client
        real_send = engine_client.send

        def send(*msgs):
            if any(type(m).__name__ == "TaskFinished" for m in msgs):
                engine_client.send = real_send
                open(marker, "w").close()
                while not os.path.exists(release):
                    time.sleep(0.01)
            return real_send(*msgs)

        engine_client.send = send
        return "done"

    if kind == "task":
        ref = shoal.remote(work).remote(marker, release)
    else:
        @shoal.remote
        class Worker:
            def work(self, marker, release):
                return work(marker, release)

        worker = Worker.remote()        # kept: a retired actor's engine may die before its send
        ref = worker.work.remote(marker, release)
    wait_for(lambda: os.path.exists(marker), what="the engine to hold its TaskFinished")
    shoal.cancel(ref)                                # the task is still running there
    wait_for(lambda: _state(ref) == "cancelling", what="the scheduler to mark it cancelling")
    open(release, "w").close()
    assert shoal.get(ref, timeout=60) == "done"
    assert came_direct(ref)

    @shoal.remote
    def echo(x):
        return x

    # Holders get the value, not TaskCancelledError.
    assert shoal.get(echo.remote(ref), timeout=60) == "done"


def test_the_last_call_of_a_dropped_actor_arrives():
    """An actor whose handles are gone is retired as its last call finishes:
    its engine is stopped right after TaskFinished, maybe before it sends the
    value straight; the scheduler then pushes it."""
    @shoal.remote
    class Once:
        def value(self, i):
            return i

    for i in range(10):
        assert shoal.get(Once.remote().value.remote(i), timeout=60) == i


def test_cancel_after_a_direct_result_sends_nothing(monkeypatch):
    """Ray: cancelling a finished task does nothing.  The value came straight
    from the engine, so shoal.cancel does not even ask the scheduler (which
    might not have heard of the task's end: it must not stop a finished
    task's engine)."""
    @shoal.remote
    def plain():
        return 5

    for _ in range(20):        # the scheduler's push can win (an engine's channel being set up)
        ref = plain.remote()
        assert shoal.get(ref, timeout=60) == 5
        if came_direct(ref):
            break
    assert came_direct(ref)
    sent = []
    real_send = client().send
    monkeypatch.setattr(client(), "send", lambda *msgs: (sent.extend(msgs), real_send(*msgs)))
    shoal.cancel(ref, force=True)
    assert not [x for x in sent if isinstance(x, m.CancelTask)]

    @shoal.remote
    def sleeps():
        import time
        time.sleep(60)

    running = sleeps.remote()             # not finished: the cancel goes to the scheduler
    shoal.cancel(running, force=True)
    assert [x.object_id for x in sent if isinstance(x, m.CancelTask)] == [running.id]


def _state(ref):
    story = client().query("story", object_id=ref.id)["story"]
    return story[-1]["to"] if story else None
