"""Starting a cluster's processes on this machine.

`LocalCluster` starts a scheduler and this host's agent side by side: it binds
the listening socket itself and hands it to the scheduler, so the agent and
the driver can connect at once (the kernel queues them) instead of waiting
for the scheduler to come up first.  Configuration, key included, goes to each
child on stdin.

Ownership: an embedded cluster (`owned=True`) gives both children the read end
of a pipe whose write end only this process holds; when this process dies,
even by SIGKILL, they read EOF and stop the cluster.  `shoal start --head`
starts an unowned cluster that lives until `shoal stop`.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import uuid
from typing import Optional

from .. import session
from ..protocol import messages as m
from ..protocol.connection import UNIX_PREFIX
from ..store.shm import HostStore, store_paths
from .supervisor import Supervisor

log = logging.getLogger("shoal.launcher")
STOP_TIMEOUT = 5.0
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def spawn(module: str, config: dict, pass_fds: tuple = ()) -> subprocess.Popen:
    """Start `python -m module` in its own session (so a notebook's SIGINT to its
    process group does not reach it) with `config` as a JSON line on stdin."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for var in THREAD_VARS:      # one CPU per engine: numeric libraries must not oversubscribe
        env.setdefault(var, "1")
    proc = subprocess.Popen(
        [sys.executable, "-m", module], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, pass_fds=pass_fds, start_new_session=True, env=env)
    proc.stdin.write(json.dumps(config).encode() + b"\n")
    proc.stdin.close()
    return proc


def remove_cluster_stores(cluster_id: str) -> None:
    """Remove every store directory of this cluster on this machine."""
    for pattern in store_paths(cluster_id, "*"):
        for path in glob.glob(pattern):
            shutil.rmtree(path, ignore_errors=True)


def _env_timeout() -> Optional[float]:
    value = os.environ.get("SHOAL_HEARTBEAT_TIMEOUT")
    return float(value) if value else None


def _env_queue_max() -> Optional[int]:
    """SHOAL_QUEUE_MAX: the most tasks a scheduler queues behind an engine's running one."""
    value = os.environ.get("SHOAL_QUEUE_MAX", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"SHOAL_QUEUE_MAX is the most tasks queued behind an engine's running "
                         f"one: a whole number, 1 or more, not {value!r}")
    return int(value)


def local_address_towards(address: str) -> str:
    """This machine's address on the route to `address` (what other hosts can reach)."""
    from ..protocol.connection import parse_address
    host, port = parse_address(address)
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                       socket.SOCK_DGRAM) as s:
        s.connect((host, port))          # UDP: picks the route, sends nothing
        return s.getsockname()[0]


def new_host_id() -> str:
    return "h" + uuid.uuid4().hex[:6]


class LocalCluster:
    def __init__(self, *, num_cpus: Optional[int] = None, num_gpus: Optional[int] = None,
                 resources: Optional[dict] = None, object_store_memory: Optional[int] = None,
                 host: str = "127.0.0.1", port: int = 0, owned: bool = True,
                 heartbeat_timeout: Optional[float] = None, ssh_hosts: tuple = (),
                 remote_python: Optional[str] = None, restart_scheduler: bool = False) -> None:
        """`restart_scheduler` (unowned clusters): a supervisor process holds the
        listening sockets and starts a new scheduler there if it dies; hosts
        rejoin it, drivers must connect again (the old one's state is gone)."""
        if restart_scheduler and owned:
            raise ValueError("restart_scheduler is for clusters started with `shoal start`")
        queue_max = _env_queue_max()
        self.cluster_id = uuid.uuid4().hex[:8]
        self.key = secrets.token_bytes(32)
        self.session_dir = session.new_session_dir(self.cluster_id)
        self.host_id = new_host_id()
        self.store = HostStore.create(self.cluster_id, self.host_id, object_store_memory)
        self.owned = owned
        self.scheduler: Optional[subprocess.Popen] = None
        self.agent: Optional[Supervisor] = None        # owned: we restart the agent
        self.agent_supervisor: Optional[subprocess.Popen] = None   # unowned: a process does
        self.ssh: Optional[subprocess.Popen] = None
        self._owner_r: Optional[int] = None
        self._owner_w: Optional[int] = None
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        unix_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                sock.bind((host, port))
            except OSError as exc:
                error = OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
                error.errno = exc.errno
                raise error from None
            sock.listen(512)
            bound_host, bound_port = sock.getsockname()[:2]
            if bound_host in ("0.0.0.0", "::"):      # all interfaces: name one others can reach
                bound_host = socket.gethostbyname(socket.gethostname())
            self.address = f"{bound_host}:{bound_port}"
            unix_path = os.path.join(self.session_dir, "scheduler.sock")
            unix_sock.bind(unix_path)
            os.chmod(unix_path, 0o600)
            unix_sock.listen(512)
            self.local_address = UNIX_PREFIX + unix_path
            if owned:      # we keep the read end too, to hand it to a restarted agent
                self._owner_r, self._owner_w = os.pipe()
            listen = (sock.fileno(), unix_sock.fileno())
            owner = (self._owner_r,) if owned else ()
            common = {"key": self.key.hex(), "cluster_id": self.cluster_id,
                      "session_dir": self.session_dir, "owner_fd": self._owner_r,
                      "heartbeat_timeout": heartbeat_timeout or _env_timeout(),
                      "queue_max": queue_max}
            if restart_scheduler:      # self.scheduler is then its supervisor
                self.scheduler = spawn("shoal.launch.supervisor", {
                    **common, "listen_fds": listen, "supervise": "shoal.scheduler"}, listen)
            else:
                self.scheduler = spawn("shoal.scheduler", {**common, "listen_fds": listen},
                                       listen + owner)
            agent_config = {
                **common, "address": self.local_address, "host_id": self.host_id,
                "store_dir": self.store.store_dir, "spill_dir": self.store.spill_dir,
                "store_limit": self.store.limit, "num_cpus": num_cpus, "num_gpus": num_gpus,
                "resources": resources or {}, "bind_host": host}
            if owned:
                self.agent = Supervisor(lambda gen: spawn("shoal.launch.agent", {
                    **agent_config, "generation": gen, "restartable": True}, owner),
                    name=f"agent {self.host_id}")
            else:
                self.agent_supervisor = spawn("shoal.launch.supervisor", agent_config)
        except BaseException:
            self._kill_all()
            self.store.remove_all()
            raise
        finally:
            sock.close()
            unix_sock.close()
        if ssh_hosts:
            from .ssh import launch
            self.ssh = launch({
                "address": self.local_address, "key": self.key.hex(), "hosts": list(ssh_hosts),
                "head_address": self.address, "session_dir": self.session_dir,
                "remote_python": remote_python or sys.executable})
        self.connection_file = session.connection_file_path(self.cluster_id)
        session.write_connection_file(self.connection_file, {
            "address": self.address, "local_address": self.local_address,
            "key": self.key.hex(), "cluster_id": self.cluster_id,
            "session_dir": self.session_dir, "pid": self.scheduler.pid,
            "agent_pid": self.processes[1].pid, "owned": owned, "started": time.time(),
        })

    @property
    def processes(self) -> list:
        """The processes we started, as they are now: scheduler, agent (or its
        supervisor process), and the SSH launcher if any."""
        agent = self.agent.proc if self.agent is not None else self.agent_supervisor
        return [p for p in (self.scheduler, agent, self.ssh) if p is not None]

    def stop(self, client=None, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the scheduler and agent (which stops its engines); idempotent."""
        if client is not None and not client.lost:
            try:
                client.send(m.Shutdown(reason="shutdown() called by the driver"))
            except Exception:
                pass
        if self.agent is not None:
            self.agent.stop()              # it stops now; no restart
        if self._owner_w is not None:
            os.close(self._owner_w)        # the same signal a crash of ours would give
            os.close(self._owner_r)
            self._owner_w = self._owner_r = None
        deadline = time.monotonic() + timeout
        for proc in self.processes:
            try:
                proc.wait(max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("process %s did not stop in time; killing it", proc.pid)
        self._kill_all()
        self.store.remove_all()
        remove_cluster_stores(self.cluster_id)      # those of hosts that died here, too
        try:
            os.unlink(self.connection_file)
        except (FileNotFoundError, AttributeError):
            pass

    def _kill_all(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


class HostProcess:
    """A host agent (and its engines) joining an existing cluster from this
    machine: how `shoal start --address` adds a host, and how tests make a
    second "host" with a store of its own.  With owned=True it dies with us."""

    def __init__(self, address: str, key: bytes, cluster_id: str, session_dir: str, *,
                 num_cpus: Optional[int] = None, num_gpus: Optional[int] = None,
                 resources: Optional[dict] = None, object_store_memory: Optional[int] = None,
                 bind_host: str = "127.0.0.1", owned: bool = True,
                 heartbeat_timeout: Optional[float] = None, restart: bool = True) -> None:
        """`restart=False` (owned only): nobody restarts the agent, so its death
        is the loss of the host, at once (how tests model a machine that dies)."""
        self.host_id = new_host_id()
        self.log_path = os.path.join(session_dir, "logs", f"agent-{self.host_id}.log")
        self.store = HostStore.create(cluster_id, self.host_id, object_store_memory)
        self._owner_r: Optional[int] = None
        self._owner_w: Optional[int] = None
        os.makedirs(os.path.join(session_dir, "logs"), mode=0o700, exist_ok=True)
        config = {
            "address": address, "key": key.hex(), "cluster_id": cluster_id,
            "session_dir": session_dir, "host_id": self.host_id,
            "store_dir": self.store.store_dir, "spill_dir": self.store.spill_dir,
            "store_limit": self.store.limit, "num_cpus": num_cpus, "num_gpus": num_gpus,
            "resources": resources or {}, "bind_host": bind_host,
            "heartbeat_timeout": heartbeat_timeout or _env_timeout(),
        }
        self.agent: Optional[Supervisor] = None
        self.supervisor_process: Optional[subprocess.Popen] = None
        if owned:           # we restart it; it dies with us
            self._owner_r, self._owner_w = os.pipe()
            self.agent = Supervisor(lambda gen: spawn("shoal.launch.agent", {
                **config, "owner_fd": self._owner_r, "generation": gen, "restartable": restart},
                (self._owner_r,)), name=f"agent {self.host_id}")
            if not restart:
                self.agent.stop()
        else:               # a supervisor process restarts it, and lives as long as it does
            self.supervisor_process = spawn("shoal.launch.supervisor", config)

    @property
    def process(self) -> subprocess.Popen:
        """The agent process now (or, unowned, the supervisor that runs it)."""
        return self.agent.proc if self.agent is not None else self.supervisor_process

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the agent and its engines; idempotent."""
        if self.agent is not None:
            self.agent.stop()
        if self._owner_w is not None:
            os.close(self._owner_w)
            os.close(self._owner_r)
            self._owner_w = self._owner_r = None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.store.remove_all()
