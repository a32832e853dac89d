"""The SSH launcher: hosts join a cluster through `ssh HOST python -m shoal start
--address HEAD --block`, with the key on stdin (never on a command line).

`python -m shoal.launch.ssh` runs beside the scheduler and owns the SSH
sessions.  It connects to the scheduler like any client, so when the cluster
stops (or the scheduler dies) it goes, and closing each session's stdin tells
the remote `shoal start --block` to stop its host: an EOF on stdin is the
remote side's "owner gone".  A session that drops takes its host down the
same way.  Each host's output (its agent's log lines) is kept in the head's
session log directory as ssh-HOST.log.
"""
from __future__ import annotations

import logging
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
from typing import Optional

from ..protocol.connection import Connection
from ..session import read_config_from_stdin, setup_process_logging
from .launcher import spawn

log = logging.getLogger("shoal.ssh")
HOST_SPEC = re.compile(r"^(?P<target>(?:[^@:\s]+@)?[^@:\s]+)(?::(?P<cpus>\d+))?$")


def parse_host(spec: str) -> tuple[str, Optional[int]]:
    """"user@host:4" -> ("user@host", 4); "host" -> ("host", None)."""
    m = HOST_SPEC.match(spec.strip())
    if not m:
        raise ValueError(f"a host is [user@]host[:num_cpus], got {spec!r}")
    return m["target"], int(m["cpus"]) if m["cpus"] else None


def ssh_command() -> list[str]:
    """`ssh` plus options from SHOAL_SSH_OPTIONS (e.g. "-F /path/config")."""
    return ["ssh", "-o", "BatchMode=yes", *shlex.split(os.environ.get("SHOAL_SSH_OPTIONS", ""))]


def host_address(target: str) -> str:
    """The IP address ssh would connect to for `target` (honouring ssh config)."""
    host = target.rpartition("@")[2]
    try:
        out = subprocess.run([*ssh_command(), "-G", target], capture_output=True, text=True,
                             timeout=10).stdout
        host = next((line.split()[1] for line in out.splitlines()
                     if line.startswith("hostname ")), host)
    except (OSError, subprocess.SubprocessError):
        pass
    return socket.gethostbyname(host)


class SSHLauncher:
    def __init__(self, config: dict) -> None:
        self.config = config
        self.sessions: dict[str, subprocess.Popen] = {}
        self._stopping = threading.Event()

    def start(self) -> None:
        for spec in self.config["hosts"]:
            target, cpus = parse_host(spec)
            remote = [self.config["remote_python"], "-m", "shoal", "start",
                      "--address", self.config["head_address"], "--block"]
            if cpus:
                remote += ["--num-cpus", str(cpus)]
            cmd = [*self.config.get("ssh", ssh_command()), target, shlex.join(remote)]
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            proc.stdin.write(self.config["key"].encode() + b"\n")   # the key, on stdin only
            proc.stdin.flush()                                     # ...and stdin stays open
            self.sessions[target] = proc
            threading.Thread(target=self._forward, args=(target, proc), daemon=True,
                             name=f"ssh-{target}").start()
            log.info("started host %s over SSH (pid %s)", target, proc.pid)

    def _forward(self, target: str, proc: subprocess.Popen) -> None:
        path = os.path.join(self.config["session_dir"], "logs", f"ssh-{target}.log")
        with open(path, "ab", buffering=0) as out:
            for line in proc.stdout:
                out.write(line)
        code = proc.wait()
        if not self._stopping.is_set():
            log.warning("the SSH session to %s ended (exit %s); that host is gone", target, code)

    def stop(self) -> None:
        """Close every session's stdin (the remote host stops), then reap."""
        self._stopping.set()
        for proc in self.sessions.values():
            try:
                proc.stdin.close()
            except OSError:
                pass
        for target, proc in self.sessions.items():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                log.warning("the SSH session to %s did not end; killing it", target)
                proc.kill()
                proc.wait()


def launch(config: dict, owner_fd: Optional[int] = None) -> subprocess.Popen:
    """Start the launcher process for `config` (see main)."""
    return spawn("shoal.launch.ssh", {**config, "owner_fd": owner_fd},
                 (owner_fd,) if owner_fd is not None else ())


def main() -> None:
    config = read_config_from_stdin()
    setup_process_logging(config["session_dir"], "ssh-launcher")
    conn = Connection.connect(config["address"], bytes.fromhex(config["key"]))
    launcher = SSHLauncher(config)
    signal.signal(signal.SIGTERM, lambda *_: conn.close())
    launcher.start()
    from ..protocol import messages as m
    conn.send(m.ClientHello(client_id="ssh-launcher", kind="launcher", pid=os.getpid(),
                            hostname=os.uname().nodename))
    try:
        while True:
            conn.recv()            # Welcome, then nothing: we only wait for the end
    except (OSError, ConnectionError, ValueError):
        pass
    launcher.stop()


if __name__ == "__main__":
    sys.exit(main())
