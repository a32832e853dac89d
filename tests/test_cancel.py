"""Cancellation and exits with Ray's semantics, against a real cluster."""
import os
import sys
import time

import pytest

import shoal
from shoal.exceptions import TaskCancelledError, WorkerCrashedError

from conftest import wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", autouse=True)
def cluster():
    shoal.shutdown()
    ctx = shoal.init(num_cpus=2)
    yield ctx
    shoal.shutdown()


def started(path):
    wait_for(lambda: os.path.exists(path), timeout=30, what=f"{path} to appear")


def test_a_cancelled_task_gets_keyboard_interrupt_and_get_raises_cancelled(tmp_path):
    mark = str(tmp_path / "started")

    @shoal.remote
    def spin(path):
        open(path, "w").close()
        while True:
            time.sleep(0.01)

    ref = spin.remote(mark)
    started(mark)
    shoal.cancel(ref)
    with pytest.raises(TaskCancelledError):
        shoal.get(ref, timeout=30)


def test_a_task_that_catches_the_interrupt_returns_its_value(tmp_path):
    mark = str(tmp_path / "started")

    @shoal.remote
    def stubborn(path):
        open(path, "w").close()
        try:
            while True:
                time.sleep(0.01)
        except KeyboardInterrupt:
            return "caught"

    ref = stubborn.remote(mark)
    started(mark)
    shoal.cancel(ref)
    assert shoal.get(ref, timeout=30) == "caught"


@shoal.remote
class Worker:
    def work(self, path, seconds):
        open(path, "w").close()
        time.sleep(seconds)         # not interrupted: a plain actor's call runs to its end
        self.done = getattr(self, "done", 0) + 1
        return "finished"

    def count(self):
        return getattr(self, "done", 0)


def test_force_on_an_actor_call_is_refused_at_the_call(tmp_path):
    actor = Worker.remote()
    ref = actor.count.remote()
    with pytest.raises(ValueError, match="force=True is not supported for actor tasks"):
        shoal.cancel(ref, force=True)
    assert shoal.get(ref) == 0


def test_a_running_call_of_a_plain_actor_finishes_and_reports_cancelled(tmp_path):
    mark = str(tmp_path / "started")
    actor = Worker.remote()
    running = actor.work.remote(mark, 1.0)
    queued = actor.work.remote(str(tmp_path / "never"), 0)
    started(mark)
    shoal.cancel(queued)
    shoal.cancel(running)
    for ref in (running, queued):
        with pytest.raises(TaskCancelledError):
            shoal.get(ref, timeout=30)
    assert shoal.get(actor.count.remote()) == 1     # it ran to its end; the queued one never ran
    assert not os.path.exists(str(tmp_path / "never"))


def test_sys_exit_in_a_task_is_a_crash_retried_then_worker_crashed(tmp_path):
    @shoal.remote(max_retries=1)
    def leave(path):
        with open(path, "a") as f:
            f.write("x")
        sys.exit(0)

    runs = str(tmp_path / "runs")
    with pytest.raises(WorkerCrashedError):
        shoal.get(leave.remote(runs), timeout=60)
    assert open(runs).read() == "xx"                      # the first run and one retry

    @shoal.remote(max_retries=0)
    def hard_exit():
        os._exit(3)

    with pytest.raises(WorkerCrashedError):
        shoal.get(hard_exit.remote(), timeout=60)

    @shoal.remote
    def fine():
        return 1
    assert shoal.get(fine.remote(), timeout=60) == 1      # the engines came back
