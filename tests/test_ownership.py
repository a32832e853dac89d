"""Who owns what, against a real cluster: actors made inside tasks outlive
their creator, restartable kills retry queued calls, engines that ran GPU
tasks stay away from CPU-only ones, the driver's folder is importable."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import shoal
from shoal.core import runtime

from conftest import wait_for

pytestmark = pytest.mark.timeout(180)


@shoal.remote
class Pinger:
    def ping(self):
        return os.getpid()


@shoal.remote
def make_pinger():
    return Pinger.remote(), os.getpid()


def test_an_actor_returned_by_its_creating_task_outlives_that_engine(fresh_cluster):
    fresh_cluster()
    handle, creator = shoal.get(make_pinger.remote())
    actor_pid = shoal.get(handle.ping.remote())
    os.kill(creator, signal.SIGKILL)               # the creator's engine is gone
    wait_for(lambda: all(e["pid"] != creator for e in runtime.current().client.status()["engines"]),
             what="the scheduler to notice")
    assert shoal.get(handle.ping.remote(), timeout=30) == actor_pid
    info = next(a for a in shoal.core.actor.list_actors() if a["actor_id"] == handle._actor_id)
    assert info["state"] == "ALIVE"
    del handle                                      # the new owner lets go: the actor goes
    wait_for(lambda: next(a for a in shoal.core.actor.list_actors()
                          if a["actor_id"] == info["actor_id"])["state"] == "DEAD",
             what="the actor to go with its last handle")


def test_actors_made_in_tasks_survive_engine_churn(fresh_cluster):
    fresh_cluster()

    @shoal.remote
    def wait_then_make(seconds):
        time.sleep(seconds)           # blocked callers make extra engines, retired after
        return Pinger.remote()

    @shoal.remote
    def fan_out(n):
        return shoal.get([wait_then_make.remote(0.05 * i) for i in range(n)])

    for _ in range(3):
        handles = shoal.get(fan_out.remote(6))
        assert len(set(shoal.get([h.ping.remote() for h in handles], timeout=60))) == 6


def test_a_restartable_kill_retries_the_queued_calls(fresh_cluster):
    fresh_cluster()

    @shoal.remote(max_restarts=1, max_task_retries=-1)
    class Slow:
        def __init__(self):
            self.calls = 0

        def work(self, seconds):
            time.sleep(seconds)
            self.calls += 1
            return os.getpid()

        def count(self):
            return self.calls

    actor = Slow.remote()
    first = shoal.get(actor.work.remote(0))
    queued = [actor.work.remote(0.3) for _ in range(4)]
    wait_for(lambda: any(a["pending_calls"] >= 3 for a in shoal.core.actor.list_actors()),
             what="calls to queue")
    shoal.kill(actor, no_restart=False)
    pids = shoal.get(queued, timeout=60)
    assert first not in pids and len(set(pids)) == 1         # all ran, on the restarted actor
    assert shoal.get(actor.count.remote()) == 4


def test_engines_that_ran_gpu_tasks_do_not_take_cpu_tasks(fresh_cluster):
    fresh_cluster(num_gpus=1)

    @shoal.remote(num_gpus=1)
    def on_gpu():
        return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES")

    @shoal.remote
    def on_cpu():
        return os.getpid()

    gpu_pid, visible = shoal.get(on_gpu.remote())
    assert visible == "0"
    cpu_pids = set(shoal.get([on_cpu.remote() for _ in range(20)], timeout=60))
    assert gpu_pid not in cpu_pids
    assert shoal.get(on_gpu.remote(), timeout=60)[1] == "0"


def test_the_driver_scripts_folder_is_on_the_engines_path(tmp_path):
    (tmp_path / "helper_next_to_script.py").write_text("def triple(x):\n    return 3 * x\n")
    (tmp_path / "script.py").write_text(textwrap.dedent("""
        import shoal
        import helper_next_to_script

        shoal.init(num_cpus=1)
        task = shoal.remote(helper_next_to_script.triple)   # pickled by reference
        print("result", shoal.get(task.remote(14)))
        shoal.shutdown()
    """))
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(shoal.__file__))}
    out = subprocess.run([sys.executable, str(tmp_path / "script.py")], cwd="/", env=env,
                         capture_output=True, text=True, timeout=120)
    assert "result 42" in out.stdout, out.stderr
