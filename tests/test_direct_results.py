"""Results straight from a same-host engine to its driver (core/reply_channel.py,
engine/replies.py): the design's points 4-6 end to end, on a real cluster.

Several tests make a task's engine misbehave at the one moment that matters,
between sending the value to the driver and telling the scheduler: the task
wraps its own engine's `client.send` (the engine sends TaskFinished through it)."""
import os
import stat
import threading

import cloudpickle
import pytest

import shoal
from shoal.core import runtime
from shoal.core.client import Client
from shoal.protocol import messages as m
from shoal.protocol.serialization import serialize
from shoal.exceptions import WorkerCrashedError

from conftest import wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", autouse=True)
def cluster():
    shoal.shutdown()
    before = os.environ.get("SHOAL_DIRECT_RESULTS")
    os.environ["SHOAL_DIRECT_RESULTS"] = "1"        # on, whatever the shell says
    try:
        ctx = shoal.init(num_cpus=2)
    finally:
        if before is None:
            del os.environ["SHOAL_DIRECT_RESULTS"]
        else:
            os.environ["SHOAL_DIRECT_RESULTS"] = before
    yield ctx
    shoal.shutdown()


def client():
    return runtime.current().client


def came_direct(ref) -> bool:
    return client().came_direct(ref.id)


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
        fid = "direct-test-fn"
        tid = other.new_id("t")
        other.send(*other.register_function(fid, "inc", cloudpickle.dumps(lambda x: x + 1)))
        other.own(f"{tid}/0")
        other.submit(m.SubmitTask(task_id=tid, func_id=fid, name="inc",
                                  args=serialize(((41,), {})).packed(), deps=[], nested=[],
                                  return_ids=[f"{tid}/0"], resources={"CPU": 1.0}))
        entries, timed_out = other.wait_entries([f"{tid}/0"], 1, 30, stop_on_error=True)
        assert not timed_out and other.load(entries[f"{tid}/0"]) == 42
        assert not other._direct_ids
    finally:
        other.close()


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
    """A task whose first run's engine dies right after sending the result to
    the driver, before the scheduler hears of it; a re-run returns "rerun"."""
    marker = str(tmp_path / "crashed")

    @shoal.remote
    def first_run_crashes(marker):
        import os
        from shoal.core import runtime
        if os.path.exists(marker):
            return "rerun"
        engine_client = runtime.current().client
        real_send = engine_client.send

        def send(*msgs):
            if any(type(m).__name__ == "TaskFinished" and m.delivered for m in msgs):
                open(marker, "w").close()
                os._exit(1)
            return real_send(*msgs)

        engine_client.send = send
        return "first"

    return marker, first_run_crashes


def test_engine_killed_between_the_sends_loses_nothing(tmp_path):
    marker, task = _crash_once(tmp_path)
    ref = task.remote(marker)
    assert shoal.get(ref, timeout=60) == "first"      # the value that came straight
    # The driver may read the value before the engine gets to its next send.
    wait_for(lambda: os.path.exists(marker), what="the engine to die after its direct send")
    assert came_direct(ref)

    @shoal.remote
    def echo(x):
        return x

    # The scheduler re-ran the task (its engine died running it): its copy
    # comes from the re-run, and nothing waits forever.
    assert shoal.get(echo.remote(ref), timeout=60) == "rerun"
    assert shoal.get(ref, timeout=5) == "first"      # first entry wins on the driver


def test_engine_killed_between_the_sends_without_retries(tmp_path):
    marker, task = _crash_once(tmp_path)
    ref = task.options(max_retries=0).remote(marker)
    assert shoal.get(ref, timeout=60) == "first"

    @shoal.remote
    def echo(x):
        return x

    with pytest.raises(WorkerCrashedError):           # the scheduler's view: it crashed
        shoal.get(echo.remote(ref), timeout=60)
    assert shoal.get(ref, timeout=5) == "first"       # the driver keeps what it got


@pytest.mark.parametrize("kind", ["task", "actor call"])
def test_a_cancel_racing_the_delivery_does_nothing(tmp_path, kind):
    release = str(tmp_path / "release")

    def work(release):
        """Its engine holds the TaskFinished that says the result went straight
        to the driver until the file `release` exists."""
        import os
        import time
        from shoal.core import runtime
        engine_client = runtime.current().client
        real_send = engine_client.send

        def send(*msgs):
            if any(type(m).__name__ == "TaskFinished" and m.delivered for m in msgs):
                engine_client.send = real_send
                while not os.path.exists(release):
                    time.sleep(0.01)
            return real_send(*msgs)

        engine_client.send = send
        return "done"

    if kind == "task":
        ref = shoal.remote(work).remote(release)
    else:
        @shoal.remote
        class Worker:
            def work(self, release):
                return work(release)

        ref = Worker.remote().work.remote(release)
    assert shoal.get(ref, timeout=60) == "done"       # it came straight; the scheduler waits
    # A cancel from elsewhere (shoal.cancel here does nothing: the value is here)
    # reaches the scheduler while the task still runs there.
    client().send(m.CancelTask(object_id=ref.id, force=False, recursive=True))
    wait_for(lambda: _state(ref) == "cancelling", what="the scheduler to mark it cancelling")
    open(release, "w").close()

    @shoal.remote
    def echo(x):
        return x

    # The late TaskFinished counts: holders get the value, not TaskCancelledError.
    assert shoal.get(echo.remote(ref), timeout=60) == "done"
    assert shoal.get(ref, timeout=5) == "done"


def _engine_pids():
    return {e["pid"] for e in client().query("status")["engines"]}


def test_a_driver_that_leaves_with_its_direct_result_does_not_cancel_it(tmp_path):
    """The driver reads the value straight from the engine and disconnects
    before the engine's TaskFinished reaches the scheduler: the task still
    counts as finished, and its engine is not replaced."""
    release = str(tmp_path / "release")

    def work(release):
        import os
        import time
        from shoal.core import runtime
        engine_client = runtime.current().client
        real_send = engine_client.send

        def send(*msgs):
            if any(type(m).__name__ == "TaskFinished" and m.delivered for m in msgs):
                engine_client.send = real_send
                while not os.path.exists(release):
                    time.sleep(0.01)
            return real_send(*msgs)

        engine_client.send = send
        return 42

    pids = _engine_pids()
    other = Client.connect(runtime.current().address, client()._key)
    try:
        assert other._channel is not None
        fid, tid = "leaver-fn", other.new_id("t")
        other.send(*other.register_function(fid, "work", cloudpickle.dumps(work)))
        other.own(f"{tid}/0")
        other.submit(m.SubmitTask(task_id=tid, func_id=fid, name="work",
                                  args=serialize(((release,), {})).packed(), deps=[], nested=[],
                                  return_ids=[f"{tid}/0"], resources={"CPU": 1.0}))
        entries, timed_out = other.wait_entries([f"{tid}/0"], 1, 30, stop_on_error=True)
        assert not timed_out and other.load(entries[f"{tid}/0"]) == 42
        assert other._direct_ids == {f"{tid}/0"}
    finally:
        other.close()
    wait_for(lambda: other.client_id not in {c["client_id"] for c in client().query(
        "status")["clients"]}, what="the scheduler to see the driver leave")
    open(release, "w").close()
    wait_for(lambda: _story_end(tid) is not None, what="the task to end")
    assert _story_end(tid) == "finished"
    assert _engine_pids() == pids


def _story_end(tid):
    story = client().query("story", task_id=tid)["story"]
    return story[-1]["to"] if story and story[-1]["to"] in ("finished", "cancelled") else None


def test_cancel_after_a_direct_result_does_nothing(tmp_path):
    """Ray: cancelling a finished task does nothing.  The value came straight
    from the engine, so the scheduler may still count the task as running; even
    with force its engine is not stopped, and dependents get the value."""
    release = str(tmp_path / "release")

    @shoal.remote
    def work(release):
        import os
        import time
        from shoal.core import runtime
        engine_client = runtime.current().client
        real_send = engine_client.send

        def send(*msgs):
            if any(type(m).__name__ == "TaskFinished" and m.delivered for m in msgs):
                engine_client.send = real_send
                while not os.path.exists(release):
                    time.sleep(0.01)
            return real_send(*msgs)

        engine_client.send = send
        return "done"

    pids = _engine_pids()
    ref = work.remote(release)
    assert shoal.get(ref, timeout=60) == "done" and came_direct(ref)
    assert _state(ref) == "running"
    shoal.cancel(ref, force=True)
    open(release, "w").close()
    wait_for(lambda: _state(ref) == "finished", what="the task to finish")

    @shoal.remote
    def echo(x):
        return x

    assert shoal.get(echo.remote(ref), timeout=60) == "done"
    assert _engine_pids() == pids


def _state(ref):
    story = client().query("story", object_id=ref.id)["story"]
    return story[-1]["to"] if story else None
