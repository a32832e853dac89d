"""Level 2: every process has an owner; nothing outlives it.  And the CLI."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

import shoal
from shoal.core import runtime

from conftest import alive, cluster_pids, wait_for

DRIVER = textwrap.dedent("""
    import json, sys, shoal
    from shoal.core import runtime
    shoal.init(num_cpus=2)

    @shoal.remote
    def f(x):
        return x + 1

    assert shoal.get(f.remote(1)) == 2
    rt = runtime.current()
    while len(rt.client.status()["engines"]) < 2:
        pass
    pids = [p.pid for p in rt.cluster.processes] + [e["pid"] for e in rt.client.status()["engines"]]
    print(json.dumps({"pids": pids, "store": rt.client.store.store_dir}), flush=True)
    MODE
""")


def run_driver(mode: str):
    proc = subprocess.Popen([sys.executable, "-c", DRIVER.replace("MODE", mode)],
                            stdout=subprocess.PIPE, text=True)
    info = json.loads(proc.stdout.readline())
    return proc, info


def test_shutdown_leaves_nothing_behind(fresh_cluster):
    fresh_cluster()
    pids = cluster_pids()
    store = runtime.current().client.store.store_dir
    assert len(pids) == 4 and all(alive(p) for p in pids)
    shoal.shutdown()
    wait_for(lambda: not any(alive(p) for p in pids), timeout=10, what="processes to exit")
    assert not os.path.exists(store)
    shoal.shutdown()                                  # idempotent
    assert not shoal.is_initialized()


def test_interpreter_exit_leaves_nothing_behind():
    proc, info = run_driver("")
    assert proc.wait(timeout=30) == 0
    wait_for(lambda: not any(alive(p) for p in info["pids"]), timeout=10, what="processes to exit")
    assert not os.path.exists(info["store"])


def test_sigkill_of_the_driver_leaves_nothing_behind():
    proc, info = run_driver("import time; time.sleep(600)")
    proc.kill()
    proc.wait()
    wait_for(lambda: not any(alive(p) for p in info["pids"]), timeout=10, what="processes to exit")
    wait_for(lambda: not os.path.exists(info["store"]), timeout=10, what="the store to go")


def test_work_submitted_while_engines_start_always_finishes():
    # Regression: an engine's first messages could arrive before it was ready
    # for them, leaving a task queued behind a revoke forever.
    @shoal.remote
    def pid():
        return os.getpid()

    for _ in range(8):
        shoal.init(num_cpus=2)
        try:
            assert len(shoal.get([pid.remote() for _ in range(8)], timeout=20)) == 8
        finally:
            shoal.shutdown()


def test_init_rules(fresh_cluster):
    with pytest.raises(TypeError, match="num_cpu"):
        shoal.init(num_cpu=2)
    with pytest.raises(ValueError):
        shoal.init(num_cpus=-1)
    ctx = fresh_cluster()
    assert shoal.is_initialized() and ctx.address in repr(ctx)
    with pytest.raises(RuntimeError, match="ignore_reinit_error"):
        shoal.init()
    assert shoal.init(ignore_reinit_error=True).address == ctx.address
    with ctx:
        pass
    assert not shoal.is_initialized()
    assert "closed" in repr(ctx)


def test_first_remote_call_starts_a_cluster():
    shoal.shutdown()

    @shoal.remote
    def one():
        return 1

    try:
        assert shoal.get(one.remote()) == 1 and shoal.is_initialized()
    finally:
        shoal.shutdown()


def test_gpus_are_assigned_through_cuda_visible_devices(fresh_cluster):
    fresh_cluster(num_gpus=2)

    @shoal.remote(num_gpus=1)
    def visible():
        import time
        time.sleep(0.3)
        return os.environ.get("CUDA_VISIBLE_DEVICES")

    assert sorted(shoal.get([visible.remote(), visible.remote()])) == ["0", "1"]
    assert shoal.cluster_resources()["GPU"] == 2


def test_a_crash_leaves_its_traceback_in_the_engine_log(fresh_cluster):
    fresh_cluster()

    @shoal.remote(max_retries=0)
    def segfault():
        import ctypes
        ctypes.string_at(0)

    with pytest.raises(shoal.exceptions.WorkerCrashedError):
        shoal.get(segfault.remote(), timeout=60)
    logs = os.path.join(runtime.current().client.session_dir, "logs")
    text = "".join(open(os.path.join(logs, f)).read() for f in os.listdir(logs)
                   if f.startswith("engine"))
    assert "Segmentation fault" in text and "segfault" in text


def shoal_cli(*args, env=None, check=True):
    return subprocess.run([sys.executable, "-m", "shoal", *args], capture_output=True, text=True,
                          timeout=60, check=check, env={**os.environ, **(env or {})})


@pytest.mark.slow
def test_cli_start_status_connect_logs_stop(tmp_path):
    env = {"JUPYTER_RUNTIME_DIR": str(tmp_path)}
    out = shoal_cli("start", "--head", "--num-cpus", "2", env=env).stdout
    address = out.split("Started a shoal cluster at ")[1].split()[0]
    info = json.load(open(next(tmp_path.glob("shoal-cluster-*.json"))))
    try:
        assert "shoal.init(address=" in out and info["address"] == address
        status = shoal_cli("status", env=env).stdout
        assert "2 engines" in status and address in status
        client = textwrap.dedent("""
            import shoal
            shoal.init(address=ADDRESS)
            @shoal.remote
            def f(x):
                return x * 2
            print(shoal.get([f.remote(i) for i in range(10)]))
        """)
        for how, extra_env in ((repr(address), {}), ("None", {"SHOAL_ADDRESS": address}),
                               ('"auto"', {})):
            result = subprocess.run([sys.executable, "-c", client.replace("ADDRESS", how)],
                                    capture_output=True, text=True, timeout=60,
                                    env={**os.environ, **env, **extra_env})
            assert result.stdout.strip() == str([i * 2 for i in range(10)]), result.stderr
        holder = textwrap.dedent("""
            import subprocess, sys, numpy, shoal
            shoal.init(address="auto")
            ref = shoal.put(numpy.ones(1_000_000))
            print(subprocess.run([sys.executable, "-m", "shoal", "memory"], capture_output=True,
                                 text=True, check=True).stdout)
        """)
        memory = subprocess.run([sys.executable, "-c", holder], capture_output=True, text=True,
                                timeout=60, env={**os.environ, **env}).stdout
        assert "8.0 MB" in memory and "numpy.ndarray" in memory and "put by driver" in memory
        # A second host joins: the key from stdin, then from SHOAL_KEY, never argv.
        join = subprocess.run([sys.executable, "-m", "shoal", "start", "--address", address,
                               "--num-cpus", "1", "--resources", '{"B": 1}'],
                              input=info["key"] + "\n", capture_output=True, text=True,
                              timeout=60, env={**os.environ, **env})
        assert join.returncode == 0 and "Joined the shoal cluster" in join.stdout, join.stderr
        wrong = subprocess.run([sys.executable, "-m", "shoal", "start", "--address", address],
                               capture_output=True, text=True, timeout=60,
                               env={**os.environ, **env, "SHOAL_KEY": "00" * 32})
        assert wrong.returncode == 1 and "key" in wrong.stderr
        status = json.loads(shoal_cli("status", "--json", env=env).stdout)
        assert len(status["hosts"]) == 2
        joined_agent = next(h["pid"] for h in status["hosts"] if h["resources"].get("B"))
        on_b = textwrap.dedent("""
            import socket, shoal
            shoal.init(address="auto")
            @shoal.remote(resources={"B": 1})
            def where():
                return "ran on B"
            print(shoal.get(where.remote()))
        """)
        assert subprocess.run([sys.executable, "-c", on_b], capture_output=True, text=True,
                              timeout=60, env={**os.environ, **env}).stdout.strip() == "ran on B"
        logs = shoal_cli("logs", env=env, check=False)
        assert logs.returncode == 0, logs.stderr
        logs = logs.stdout
        assert "scheduler serving on" in logs and "engine" in logs
        engine_id = json.loads(shoal_cli("status", "--json", env=env).stdout)["engines"][0]["engine_id"]
        assert f"engine-{engine_id}.log" in shoal_cli("logs", "--engine", engine_id, env=env).stdout
        sections = shoal_cli("logs", "--tail", "1", env=env).stdout.split("==> ")[1:]
        assert all(len(part.strip().splitlines()) <= 2 for part in sections)   # name, last line
        assert any("scheduler serving on" in part for part in
                   shoal_cli("logs", "--tail", "100", env=env).stdout.split("==> ")[1:])
        follow = subprocess.Popen([sys.executable, "-m", "shoal", "logs", "--follow", "--tail",
                                   "0"], stdout=subprocess.PIPE, text=True,
                                  env={**os.environ, **env})
        # Its first header means it has found the logs' ends: what follows is new.
        assert follow.stdout.readline().startswith("==> ")
    finally:
        stopped = shoal_cli("stop", env=env)
    assert "Stopped" in stopped.stdout
    followed, _ = follow.communicate(timeout=30)     # it ends when the cluster does
    assert "shutdown requested: shoal stop" in followed and "(the cluster has stopped)" in followed
    again = shoal_cli("stop", env=env)
    assert again.returncode == 0 and "nothing to stop" in again.stdout
    wait_for(lambda: not alive(info["pid"]) and not alive(info["agent_pid"])
             and not alive(joined_agent), what="the cluster and its joined host to stop")
    assert shoal_cli("status", env=env, check=False).returncode == 1
