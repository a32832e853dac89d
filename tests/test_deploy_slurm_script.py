"""The Slurm recipe's batch script (examples/deploy/slurm/ray-cluster.sbatch) run for real on
this machine, with stand-ins for `srun` (runs the step's command here) and `scontrol` (names
two nodes): it starts a Ray head and a worker with Ray's token authentication, writes the
.env file, and the SHOAL_ADDRESS in it takes a notebook-side `shoal.init()` holding the token
through Ray Client to both nodes.  Runs in the Ray interpreter's venv (tests/ray_env.py).
"""
from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from ray_env import CLIENT_PORT_TAKEN, ray_env, require_ray_python

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
ROOT = Path(__file__).resolve().parent.parent
SBATCH = ROOT / "examples" / "deploy" / "slurm" / "ray-cluster.sbatch"

SRUN = """#!/usr/bin/env bash
# srun on one machine: drop the step's options, run its command here
while [[ $# -gt 0 ]]; do case $1 in -w) shift 2;; --*=*) shift;; *) break;; esac; done
exec "$@"
"""
SCONTROL = """#!/usr/bin/env bash
[[ "$1 $2" == "show hostnames" ]] && printf 'nodeA\\nnodeB\\n'
"""

DRIVER = f"PORT_TAKEN = {CLIENT_PORT_TAKEN!r}\n" + """
import json, shoal
for tries in range(4):
    try:
        shoal.init()                       # SHOAL_ADDRESS=ray://HEAD:CLIENT_PORT, from the .env
        break
    except ConnectionAbortedError as exc:  # Ray's client proxy ports (23000+) are machine-wide:
        if not any(s in str(exc) for s in PORT_TAKEN) or tries == 3:
            raise                          # another Ray here may hold one; connect again
@shoal.remote
def node(i):
    import shoal
    return shoal.get_runtime_context().get_node_id()
ids = shoal.get([node.remote(i) for i in range(40)])
print(json.dumps({"nodes": len(shoal.nodes()), "ran_on": len(set(ids))}))
shoal.shutdown()
"""


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_naming(marker: str) -> list[int]:
    """This test's Ray processes: their command lines name the job's own temp dir."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def stop(script: subprocess.Popen, ray_tmp: str) -> None:
    """What Slurm does when the job ends: signal the job's processes, then kill what is left.
    Only processes of this job's cluster are touched (they name its temp dir)."""
    if script.poll() is None:
        os.killpg(script.pid, signal.SIGTERM)
    try:
        script.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(script.pid, signal.SIGKILL)
        script.wait()
    deadline = time.monotonic() + 15
    while processes_naming(ray_tmp) and time.monotonic() < deadline:
        time.sleep(0.5)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in processes_naming(ray_tmp):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(1)


def test_the_sbatch_script_starts_a_ray_that_shoal_reaches_with_the_token(tmp_path):
    python = require_ray_python("import ray, grpc")
    venv = Path(python).parent.parent
    if not (venv / "bin" / "activate").exists() or not (venv / "bin" / "ray").exists():
        pytest.skip(f"{python} is not in a venv with the `ray` command, which the script activates")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", SRUN), ("scontrol", SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    token = tmp_path / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    job = str(random.randint(700000, 799999))
    ray_tmp = f"/tmp/ray-{os.environ.get('USER') or 'user'}-{job}"
    env = ray_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", SHOAL_ENV=str(venv),
                  RAY_AUTH_TOKEN_PATH=str(token), SLURM_JOB_NODELIST="nodeA,nodeB",
                  SLURM_CPUS_PER_TASK="1", SLURM_JOB_ID=job, SLURM_SUBMIT_DIR=str(tmp_path),
                  USER=os.environ.get("USER") or "user",
                  GCS_PORT=str(free_port()), CLIENT_PORT=str(free_port()))
    env.pop("RAY_AUTH_MODE", None)           # the script must set it itself
    env.pop("RAY_AUTH_TOKEN", None)
    info = tmp_path / f"shoal-ray-{job}.env"
    with open(tmp_path / "sbatch.log", "w") as log:
        script = subprocess.Popen(["bash", str(SBATCH)], env=env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not info.exists() and script.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert info.exists(), (tmp_path / "sbatch.log").read_text()[-3000:]
        settings = dict(line.split("=", 1) for line in info.read_text().splitlines()
                        if line and not line.startswith("#"))
        driver = subprocess.run([python, "-c", DRIVER], capture_output=True, text=True,
                                timeout=200, env=dict(env, RAY_AUTH_MODE="token",
                                                      SHOAL_ADDRESS=settings["SHOAL_ADDRESS"]))
        assert driver.returncode == 0, driver.stderr[-4000:]
        assert json.loads(driver.stdout.strip().splitlines()[-1]) == {"nodes": 2, "ran_on": 2}
    finally:
        stop(script, ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)    # the job's Ray temp dir, ours only
    assert not processes_naming(ray_tmp)

