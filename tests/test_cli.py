"""Level 1-2: the CLI refuses bad input in one line, and acts only on clusters
started with `shoal start` unless given an address."""
import json
import os
import subprocess
import sys
import time

import pytest

import shoal
from shoal import cli, session
from shoal.core import runtime

from conftest import wait_for



def run_cli(capsys, *argv):
    """`shoal ARGV` in this process: (exit status, stdout, stderr)."""
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:           # argparse: bad flags, --help, --version
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def runtime_dir(tmp_path, monkeypatch):
    """A runtime dir of the test's own: only its connection files are seen."""
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("argv, says", [
    (["start", "--head", "--num-cpus", "-3"], "--num-cpus: '-3' is not a whole number >= 1"),
    (["start", "--head", "--num-cpus", "two"], "--num-cpus: 'two' is not a whole number"),
    (["start", "--head", "--num-gpus", "-1"], "--num-gpus: '-1'"),
    (["start", "--head", "--heartbeat-timeout", "-1"], "from 2 to 3600"),
    (["start", "--head", "--heartbeat-timeout", "nan"], "from 2 to 3600"),
    (["start", "--head", "--port", "99999"], "'99999' is not a port from 0 to 65535"),
    (["start", "--head", "--host", "no such host"], "not an IP address or a host name"),
    (["start", "--head", "--resources", "{oops"], "not JSON"),
    (["start", "--head", "--resources", "[1]"], "JSON object of names to non-negative numbers"),
    (["start", "--head", "--resources", '{"B": -1}'], "non-negative"),
    (["start", "--head", "--resources", '{"CPU": 2}'], "--num-cpus"),
    (["start", "--head", "--ssh", "a b"], "[user@]host[:num_cpus]"),
    (["start", "--address", "nohostport"], "HOST:PORT"),
    (["start", "--address", "h:0"], "port from 1 to 65535"),
    (["start"], "say --head"),
    (["start", "--head", "--address", "h:1"], "say --head"),
    (["start", "--head", "--block"], "--block goes with --address"),
    (["status", "--address", "h:70000"], "HOST:PORT"),
    (["logs", "--tail", "-2"], "--tail: '-2'"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_flags_exit_2_with_one_line(capsys, runtime_dir, argv, says):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and says in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert not list(runtime_dir.iterdir())             # nothing was started


def test_version_and_help_with_examples(capsys):
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out.strip() == f"shoal {shoal.__version__}"
    for command in ("", "start", "stop", "status", "memory", "logs", "kernel"):
        code, out, _ = run_cli(capsys, *([command] if command else []), "--help")
        assert code == 0 and "examples:" in out and "shoal " in out.split("examples:")[1]


def test_stop_when_nothing_runs_is_fine_and_says_so(capsys, runtime_dir):
    for _ in range(2):
        code, out, err = run_cli(capsys, "stop")
        assert code == 0 and "nothing to stop" in out
    code, _, err = run_cli(capsys, "status")
    assert code == 1 and "no shoal cluster started with `shoal start`" in err


def test_connection_and_bind_failures_name_the_address(capsys, runtime_dir):
    code, _, err = run_cli(capsys, "start", "--head", "--host", "203.0.113.1")
    assert code == 1 and err.startswith("shoal start: cannot listen on 203.0.113.1:0: ")
    os.environ["SHOAL_KEY"] = "00" * 32
    try:
        code, _, err = run_cli(capsys, "start", "--address", "127.0.0.1:1")
    finally:
        del os.environ["SHOAL_KEY"]
    assert code == 1 and "cannot connect to a shoal scheduler at 127.0.0.1:1" in err
    assert "Traceback" not in err


def _fake_connection_file(directory, name, address, owned):
    """A live-looking cluster (our own pid stands in for its scheduler)."""
    info = {"address": address, "key": "ab" * 32, "cluster_id": name, "session_dir": "/nowhere",
            "pid": os.getpid(), "owned": owned, "started": time.time()}
    (directory / f"shoal-cluster-{name}.json").write_text(json.dumps(info))


def test_several_started_clusters_are_listed_never_guessed(capsys, runtime_dir):
    _fake_connection_file(runtime_dir, "one", "127.0.0.1:4001", owned=False)
    _fake_connection_file(runtime_dir, "two", "127.0.0.1:4002", owned=False)
    _fake_connection_file(runtime_dir, "nb", "127.0.0.1:4003", owned=True)
    for command in ("stop", "status", "memory", "logs"):
        code, out, err = run_cli(capsys, command)
        assert code == 2 and "2 shoal clusters" in err, (command, err)
        assert "127.0.0.1:4001" in err and "127.0.0.1:4002" in err and "4003" not in err
    with pytest.raises(ValueError, match="Say which one"):
        session.find_cluster("auto")
    assert session.find_cluster("127.0.0.1:4003")["cluster_id"] == "nb"   # by address: yes


@pytest.mark.parametrize("kwargs, error, says", [
    ({"num_cpus": -1}, ValueError, "num_cpus must be a whole number >= 0"),
    ({"num_cpus": 1.5}, ValueError, "num_cpus"),
    ({"num_gpus": -1}, ValueError, "num_gpus"),
    ({"object_store_memory": 0}, ValueError, "object_store_memory must be a whole number >= 1"),
    ({"object_store_memory": "1GB"}, ValueError, "object_store_memory"),
    ({"resources": {"B": -1}}, ValueError, "cannot be negative"),
    ({"resources": [1]}, TypeError, "must be one of \\(dict"),
    ({"address": "nohostport"}, ValueError, "HOST:PORT"),
    ({"address": 6379}, TypeError, "address must be a string"),
    ({"namespace": 3}, TypeError, "namespace"),
    ({"hosts": "host1"}, ValueError, "hosts must be a list"),
])
def test_init_arguments_are_checked_before_anything_starts(kwargs, error, says):
    shoal.shutdown()
    with pytest.raises(error, match=says):
        shoal.init(**kwargs)
    assert not shoal.is_initialized()


def test_an_embedded_cluster_is_invisible_without_its_address(capsys, runtime_dir, fresh_cluster):
    ctx = fresh_cluster(num_cpus=1)
    assert list(runtime_dir.glob("shoal-cluster-*.json"))     # it has a connection file
    code, out, _ = run_cli(capsys, "stop")
    assert code == 0 and "nothing to stop" in out
    for command in ("status", "memory", "logs", "story t1"):
        code, _, err = run_cli(capsys, *command.split())
        assert code == 1 and "no shoal cluster started with `shoal start`" in err
    auto = subprocess.run([sys.executable, "-c", "import shoal; shoal.init(address='auto')"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert auto.returncode == 1 and "could not find any running cluster" in auto.stderr
    code, out, _ = run_cli(capsys, "status", "--address", ctx.address)   # by address: yes
    assert code == 0 and ctx.address in out
    assert shoal.get(shoal.put(5)) == 5 and runtime.current().client.lost is None


def test_a_tasks_story_from_python_and_from_the_shell(capsys, runtime_dir, fresh_cluster):
    from shoal.util.state import task_story
    ctx = fresh_cluster(num_cpus=1)

    @shoal.remote(max_retries=1, retry_exceptions=True)
    def flaky(marker):
        if not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError("first try fails")
        return 3

    ref = flaky.remote(str(runtime_dir / "tried"))
    assert shoal.get(ref) == 3
    # The result may reach the driver straight from the engine, a moment before the
    # scheduler hears that the task finished.
    story = wait_for(lambda: (lambda s: s if s[-1]["to"] == "finished" else None)(task_story(ref)),
                     what="the story's end")
    assert [r["to"] for r in story] == ["waiting", "ready", "running", "ready", "running",
                                         "finished"]
    assert "retryable error; 0 retries left" in story[3]["why"]
    assert task_story(ref.task_id()) == story
    code, out, err = run_cli(capsys, "story", "--address", ctx.address, ref.task_id())
    assert code == 0, err
    assert out.splitlines()[0] == f"task {ref.task_id()}: 6 transitions, oldest first"
    assert "running -> ready" in out and "TaskFinished-" in out
    code, out, _ = run_cli(capsys, "story", "--address", ctx.address, "--json", ref.id)
    assert code == 0 and json.loads(out)["story"] == story
    code, _, err = run_cli(capsys, "story", "--address", ctx.address, "no-such-task")
    assert code == 2 and "no story for task no-such-task" in err
    with pytest.raises(TypeError, match="task id, an ObjectRef"):
        task_story(42)


def test_a_story_prints_one_line_per_transition_with_milliseconds():
    t = 1765017599.9996                       # rounds down, never to the next second's .000
    out = cli.format_story("t1", [
        {"time": t, "stimulus": "SubmitTask-1", "from": None, "to": "waiting",
         "why": "submitted", "engine_id": None},
        {"time": t, "stimulus": "SubmitTask-1", "from": "ready", "to": "running",
         "why": "dispatched", "engine_id": "h1.e0"}])
    stamp = time.strftime("%H:%M:%S", time.localtime(int(t))) + ".999"
    assert out.splitlines() == [
        "task t1: 2 transitions, oldest first",
        f"  {stamp}  SubmitTask-1                    - -> waiting    submitted",
        f"  {stamp}  SubmitTask-1                ready -> running    dispatched [h1.e0]"]
