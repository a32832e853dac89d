"""The terminal progress bar of a long blocking get: drawn under a pty, not
into a pipe, not with SHOAL_PROGRESS=0."""
import os
import pty
import select
import subprocess
import sys
import time

import pytest

from shoal.core.terminal_progress import render

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = """
import time, shoal
shoal.init(num_cpus=2)
@shoal.remote
def nap(i):
    time.sleep(0.7)
    return i
print("sum", sum(shoal.get([nap.remote(i) for i in range(8)])), flush=True)
shoal.shutdown()
"""


def test_render_reads_like_tqdm():
    assert render("shoal.get", 0, 8, 0.0) == \
        "shoal.get:   0%|                         | 0/8 [00:00<?, 0.0 refs/s]"
    line = render("shoal.get", 3, 8, 1.5)
    assert line.startswith("shoal.get:  38%|█████████▍") and "| 3/8 [00:01<00:02, 2.0 refs/s]" in line
    assert render("shoal.wait", 8, 8, 61.0).endswith("| 8/8 [01:01<00:00, 0.1 refs/s]")


def run_script(tty: bool, env: dict) -> tuple:
    """(stdout, stderr) of SCRIPT, stderr on a pty when `tty`."""
    env = {**os.environ, "PYTHONPATH": ROOT, **env}
    if not tty:
        done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                              text=True, timeout=60)
        return done.stdout, done.stderr
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], env=env, stdout=subprocess.PIPE,
                            stderr=follower, text=True)
    os.close(follower)
    chunks, deadline = [], time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    data = os.read(leader, 65536)
                except OSError:                  # the child closed its end
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        out = proc.stdout.read()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        os.close(leader)
    return out, b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_long_get_draws_a_bar_on_a_terminal_only():
    out, err = run_script(tty=True, env={})
    assert out == "sum 28\n"
    frames = [f for f in err.replace("\r\n", "\n").split("\r") if "shoal.get:" in f]
    assert len(frames) >= 2, err                    # redrawn while it waits
    assert frames[-1].strip().startswith("shoal.get: 100%|" + "█" * 25 + "| 8/8 [00:0"), err
    assert err.endswith("\n")
    assert "shoal.get" not in run_script(tty=True, env={"SHOAL_PROGRESS": "0"})[1]
    out, err = run_script(tty=False, env={})
    assert out == "sum 28\n" and "shoal.get" not in err
