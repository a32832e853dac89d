"""Level 3 and 4: kernels that are restarted and killed (no shoal process may
survive them), a plain `python3` kernel with `%load_ext shoal`, and the
example notebooks executed with nbclient on the shoal kernel."""
import json
import os
import re
import signal
import subprocess
import sys

import pytest

from shoal.kernel.testing import KernelSession

from conftest import alive, ok, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIDS_CELL = (
    "%%remote\n1\n"                      # make sure the cluster runs and its engines joined
)
LIST_PIDS = (
    "import json, time\nfrom shoal.core import runtime\nfrom shoal.util import state\n"
    "rt = runtime.current()\n"
    "deadline = time.monotonic() + 20\n"
    "while len(state.list_engines()) < 2 and time.monotonic() < deadline:\n"
    "    time.sleep(0.02)\n"
    "print(json.dumps([p.pid for p in rt.cluster.processes] + "
    "[e['pid'] for e in state.list_engines()]))"
)


def cluster_pids(k: KernelSession) -> list:
    assert k.execute(PIDS_CELL, timeout=60).result == "1"
    run = k.execute(LIST_PIDS, timeout=30)
    pids = json.loads(run.stdout)
    assert len(pids) >= 4 and all(alive(p) for p in pids), pids
    return pids


@pytest.mark.slow
def test_restart_and_sigkill_leave_no_shoal_process():
    with KernelSession("shoal", extra_arguments=["--ShoalKernel.num_cpus=2"]) as k:
        before = cluster_pids(k)
        k.restart()
        wait_for(lambda: not any(alive(p) for p in before), timeout=10,
                 what="the cluster to stop with the kernel's restart")
        after = cluster_pids(k)                   # the new kernel starts a new cluster
        assert not set(after) & set(before)
        kernel_pid = k.pid
        k.kill()                                  # SIGKILL: no chance to clean up
        wait_for(lambda: not alive(kernel_pid), timeout=10, what="the kernel to die")
        wait_for(lambda: not any(alive(p) for p in after), timeout=10,
                 what="the cluster to die with its killed kernel")


def test_plain_python3_kernel_with_load_ext():
    with KernelSession("python3") as k:
        assert k.execute("%load_ext shoal").reply["status"] == "ok"
        k.execute("import os\nn = 4\nkernel_pid = os.getpid()")
        run = k.execute("%%remote\nimport os\nsquares = [i * i for i in range(n)]\n"
                        "print('on', os.getpid() != kernel_pid)\nsum(squares)", timeout=60)
        assert run.reply["status"] == "ok", run
        assert run.stdout == "on True\n" and run.result == "14"
        assert k.execute("squares").result == "[0, 1, 4, 9]"
        bg = k.execute("%%remote --bg\nimport time\ntime.sleep(0.5)\nprint('late')")
        k.execute("pass")
        k.pump_until(lambda: "late" in bg.stdout, 20, "the background print")
        err = k.execute("%%remote\nraise ValueError('nope')")
        assert err.error["ename"] == "ValueError" and "raise ValueError('nope')" in \
            err.error["traceback_text"]
        # a plain task launched from a cell prints with Ray's prefix, in that cell
        plain = k.execute("import shoal\n@shoal.remote\ndef hello():\n    print('hi')\n"
                          "shoal.get(hello.remote())")
        assert "(hello pid=" in plain.stdout and plain.stdout.endswith("hi\n")
        k.execute("%unload_ext shoal")
        assert k.execute("%%remote\n1").reply["status"] == "error"


def test_example_notebooks_run_on_the_shoal_kernel(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    # The numbered examples run in tests/test_examples.py; this one is the magics tour.
    notebooks = [os.path.join(ROOT, "examples", "remote_cells.ipynb")]
    session = KernelSession("shoal")
    try:
        for path in notebooks:
            nb = nbformat.read(path, as_version=4)
            km = session.kernel_manager()          # ours, so nbclient leaves it running
            client = nbclient.NotebookClient(
                nb, km=km, timeout=60, startup_timeout=60,
                extra_arguments=["--ShoalKernel.num_cpus=2"],
                resources={"metadata": {"path": str(tmp_path)}})
            try:
                client.execute(env=session.env)
            finally:
                if km.has_kernel:
                    km.shutdown_kernel()
            outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
            assert not [o for o in outputs if o.output_type == "error"], path
            if os.path.basename(path) == "remote_cells.ipynb":
                text = json.dumps([c.outputs for c in nb.cells if c.cell_type == "code"])
                assert "computed by engine process True" in text
                assert "made on the cluster" in text and "285" in text
    finally:
        session.shutdown()


def test_kernel_install_cli(tmp_path):
    out = subprocess.run([sys.executable, "-m", "shoal", "kernel", "install", "--prefix",
                          str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    spec_dir = tmp_path / "share" / "jupyter" / "kernels" / "shoal"
    spec = json.loads((spec_dir / "kernel.json").read_text())
    assert spec["display_name"] == "Python 3 (shoal)"
    assert spec["argv"][1:3] == ["-m", "shoal.kernel"]
    assert (spec_dir / "logo-64x64.png").exists()
    bad = subprocess.run([sys.executable, "-m", "shoal", "kernel", "install", "--user",
                          "--prefix", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "not allowed with" in bad.stderr


@pytest.mark.slow
def test_kernel_connects_to_a_running_cluster_and_leaves_it_running():
    session = KernelSession("shoal")
    env = session.env

    def shoal_cli(*args):
        return subprocess.run([sys.executable, "-m", "shoal", *args], env=env,
                              capture_output=True, text=True, timeout=60)

    started = shoal_cli("start", "--head", "--num-cpus", "1")
    assert started.returncode == 0, started.stderr
    address = re.search(r"cluster at (\S+) with", started.stdout).group(1)
    try:
        session.extra_arguments = [f"--ShoalKernel.address={address}"]
        session.start()
        assert session.execute("%%remote\n6 * 7", timeout=60).result == "42"
        view = session.execute("%cluster").result
        assert f"at {address} (connected)" in view and "1 engine(s)" in view
        assert "Stopped" in session.execute("%cluster stop").stdout
        assert shoal_cli("status", "--address", address).returncode == 0   # still there
        started_here = session.execute("%cluster start -n 1", timeout=60)
        assert "embedded local cluster" in started_here.stdout, started_here
        assert "Stopped" in session.execute("%cluster stop").stdout
        assert address in session.execute(f"%cluster connect {address}").stdout
        assert session.execute("%%remote\n'again'", timeout=60).result == "'again'"
        session.kc.stop_channels()
        session.km.shutdown_kernel()              # disconnects; does not stop the cluster
        session.kc = session.km = None
        assert shoal_cli("status", "--address", address).returncode == 0
    finally:
        stopped = shoal_cli("stop", "--address", address)
        session.shutdown()
    assert stopped.returncode == 0, stopped.stderr


@pytest.mark.slow
def test_many_kernel_restarts_leak_nothing():
    """Issue 9: restarts in a row leave no shoal process, store or open file behind."""
    with KernelSession("shoal", extra_arguments=["--ShoalKernel.num_cpus=1"]) as k:
        seen, stores = set(), set()
        fds = len(os.listdir("/proc/self/fd"))
        for _ in range(12):
            assert k.execute("%%remote\n1", timeout=60).result == "1"
            run = k.execute("import json\nfrom shoal.core import runtime\n"
                            "rt = runtime.current()\n"
                            "print(json.dumps([[p.pid for p in rt.cluster.processes], "
                            "rt.client.store.store_dir]))", timeout=30)
            pids, store = json.loads(run.stdout)
            seen.update(pids)
            stores.add(store)
            k.restart()
        wait_for(lambda: not any(alive(p) for p in seen), timeout=20,
                 what="every restarted kernel's cluster to stop")
        assert not any(os.path.exists(s) for s in stores)
        assert len(os.listdir("/proc/self/fd")) <= fds + 4


@pytest.mark.slow
def test_a_background_cell_whose_engine_is_killed_is_retried_and_finishes(tmp_path):
    """The fault matrix's --bg row: SIGKILL of the engine running a background cell
    retries the cell (a crash, as for any task); its names and status line arrive."""
    pid_file = str(tmp_path / "pid")
    cell = ("%%remote --bg\n"
            "import os, time\n"
            "first = not os.path.exists(pid_file)\n"
            "open(pid_file, 'a').write(f'{os.getpid()}\\n')\n"
            "time.sleep(30 if first else 0)\n"
            "print('bg attempt done')\n"
            "attempts = 2")

    def first_pid():
        return os.path.exists(pid_file) and open(pid_file).read().split()
    with KernelSession("shoal", extra_arguments=["--ShoalKernel.num_cpus=2"]) as k:
        ok(k.execute(f"pid_file = {pid_file!r}"))
        bg = ok(k.execute(cell))
        os.kill(int(k.pump_until(first_pid, 30, "the cell to start")[0]), signal.SIGKILL)
        k.pump_until(lambda: "bg attempt done" in bg.stdout, 30, "the retried cell")
        k.pump_until(lambda: any("done" in m["content"]["data"]["text/plain"]
                                 for m in bg.of_type("update_display_data")), 10, "the status line")
        assert ok(k.execute("import shoal\nshoal.get(attempts)")).result == "2"
    assert len(open(pid_file).read().split()) == 2
