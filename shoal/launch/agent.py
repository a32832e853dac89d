"""The host agent: starts this host's engines, restarts the ones that die,
owns the host's object store directory, and cleans all of it up on exit.

`python -m shoal.launch.agent` reads its configuration (key included) as a JSON
line on stdin.  It exits, taking its engines with it, when the scheduler
connection drops, when its owner pipe closes, on Shutdown, or on SIGTERM.
Engines get the read end of a pipe only the agent writes to, so even a
SIGKILLed agent leaves no engine behind.
"""
from __future__ import annotations

import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from ..protocol import messages as m
from ..protocol.connection import Connection
from ..session import read_config_from_stdin, setup_process_logging, wait_until_closed
from ..store.shm import HostStore
from ..store.transfer import ObjectServer
from .launcher import spawn

log = logging.getLogger("shoal.agent")
# The engine's program: a core client around shoal.engine's task loop.  Started
# by name, as every process is, so this package imports neither.
ENGINE_PROGRAM = "shoal.core.worker"
# Exit status of an agent cut off from the scheduler (connection lost, or the
# scheduler silent past the timeout) rather than stopped: its supervisor starts
# a new one, which rejoins if the scheduler is still there (say after this
# process was suspended) and otherwise stops at once.
EXIT_CUT_OFF = 3
RESTART_BACKOFF = (0.0, 0.5, 1.0, 2.0, 5.0)   # seconds, by recent crash count
HEARTBEAT_INTERVAL = 1.0
KILL_GRACE = 1.0


def available_cpus() -> int:
    """CPUs this process may really use: its affinity mask, and the cgroup's CPU
    quota (a container or a Binder pod reports the node's CPUs otherwise)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    for path, parse in (("/sys/fs/cgroup/cpu.max", lambda t: t.split()),                 # v2
                        ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", lambda t: [t.strip(), None])):
        try:
            with open(path) as f:
                quota, period = parse(f.read())
            if period is None:
                with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
                    period = f.read().strip()
            if quota not in ("max", "-1"):
                cpus = min(cpus, max(1, int(int(quota) / int(period))))
            break
        except (OSError, ValueError):
            continue
    return max(1, cpus)


def detect_gpus(num_gpus) -> list:
    """GPU ids this host offers: the given count, else CUDA_VISIBLE_DEVICES, else
    the NVIDIA driver's list."""
    if num_gpus is not None:
        return list(range(int(num_gpus)))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [int(x) for x in visible.split(",") if x.strip().isdigit()]
    try:
        return list(range(len(os.listdir("/proc/driver/nvidia/gpus"))))
    except OSError:
        return []


def physical_memory() -> int:
    """Bytes of RAM this host has (what Ray's `memory` resource starts from)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


class HostAgent:
    def __init__(self, config: dict) -> None:
        self.config = config
        self.host_id = config["host_id"]
        self.key = bytes.fromhex(config["key"])
        if config.get("store_dir"):
            self.store = HostStore(config["store_dir"], config["spill_dir"], config["store_limit"])
            for path in (self.store.store_dir, self.store.spill_dir):
                os.makedirs(path, mode=0o700, exist_ok=True)
        else:
            self.store = HostStore.create(config["cluster_id"], self.host_id,
                                          config.get("store_limit"))
        num_cpus = available_cpus() if config.get("num_cpus") is None else config["num_cpus"]
        self.gpu_ids = detect_gpus(config.get("num_gpus"))
        self.resources = {"CPU": num_cpus, "GPU": len(self.gpu_ids), **config.get("resources", {})}
        self.num_engines = max(1, int(num_cpus))
        self.engines: dict[str, subprocess.Popen] = {}
        self.stopping_ids: set = set()
        self.crashes: list = []
        self._ids = itertools.count()
        # A restarted agent (same host id) must not reuse its predecessor's engine ids.
        generation = config.get("generation") or 0
        self._engine_prefix = f"{self.host_id}.r{generation}" if generation else self.host_id
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.cut_off = False
        # Engines hold the read end; we never write, we only die (closing it).
        self._engine_owner_r, self._engine_owner_w = os.pipe()
        os.set_inheritable(self._engine_owner_w, False)

    def run(self) -> None:
        owner_fd = self.config.get("owner_fd")
        if owner_fd is not None:
            threading.Thread(target=self._watch_owner, args=(owner_fd,), name="owner-watch",
                             daemon=True).start()
        signal.signal(signal.SIGTERM, lambda *_: self._stopping.set() or self._close_conn())
        try:
            self.conn = Connection.connect(self.config["address"], self.key)
        except OSError as exc:
            log.error("cannot reach the scheduler at %s: %s", self.config["address"], exc)
            self.cleanup()
            return
        self.object_server = ObjectServer(
            self.store, self.key, self.config.get("bind_host") or "127.0.0.1",
            tls_dir=os.path.join(self.config["session_dir"], "tls"))
        # Ray's implicit resources: memory, object_store_memory, node:<address>.
        ip = self.object_server.address.rsplit(":", 1)[0].strip("[]")
        self.resources = {**self.resources,
                          "memory": float(max(0, physical_memory() - self.store.limit)),
                          "object_store_memory": float(self.store.limit), f"node:{ip}": 1.0,
                          **self.config.get("resources", {})}      # the user's word wins
        self.conn.send(m.RegisterHost(
            host_id=self.host_id, hostname=socket.gethostname(), resources=self.resources,
            gpu_ids=self.gpu_ids, store_dir=self.store.store_dir, spill_dir=self.store.spill_dir,
            store_limit=self.store.limit, object_address=self.object_server.address,
            pid=os.getpid(), restartable=bool(self.config.get("restartable"))))
        for _ in range(self.num_engines):
            self.start_engine()
        self.last_heard = time.monotonic()
        threading.Thread(target=self._heartbeats, name="heartbeats", daemon=True).start()
        try:
            while not self._stopping.is_set():
                msg = self.conn.recv()
                self.last_heard = time.monotonic()
                self.handle(msg)
        except (OSError, ConnectionError, ValueError) as exc:
            if not self._stopping.is_set():
                log.warning("lost the scheduler (%s); stopping this host", exc)
                self.cut_off = True
        finally:
            self.cleanup()

    def _heartbeats(self) -> None:
        """Beat every second; a scheduler silent past the timeout is gone or cut
        off, and this host stops (its engines with it) rather than linger."""
        timeout = self.config.get("heartbeat_timeout") or 6.0
        while not self._stopping.wait(HEARTBEAT_INTERVAL):
            if time.monotonic() - self.last_heard > timeout:
                log.warning("no word from the scheduler for %.0f s; stopping this host", timeout)
                self.cut_off = True
                self._stopping.set()
                self._close_conn()
                return
            try:
                self.conn.send(m.Heartbeat())
            except OSError:
                return

    def handle(self, msg) -> None:
        if isinstance(msg, m.Heartbeat):
            return
        if isinstance(msg, m.StartEngines):
            for _ in range(msg.count):
                self.start_engine(msg.actor_id)
        elif isinstance(msg, m.StopEngine):
            self.stop_engine(msg.engine_id, restart=msg.restart)
        elif isinstance(msg, m.FreeObjects):
            for oid in msg.object_ids:
                self.store.delete(oid)
        elif isinstance(msg, m.SpillObjects):
            for oid in msg.object_ids:
                self.store.spill(oid)
        elif isinstance(msg, m.Shutdown):
            log.info("shutdown requested: %s", msg.reason)
            self._stopping.set()
        else:
            log.warning("unexpected message %s", type(msg).__name__)

    def start_engine(self, actor_id: str | None = None) -> str:
        """Start a pool engine, or one dedicated to an actor (`actor_id`)."""
        engine_id = f"{self._engine_prefix}.{'a' if actor_id else 'e'}{next(self._ids)}"
        config = {k: self.config[k] for k in ("address", "key", "cluster_id", "session_dir")}
        proc = spawn(ENGINE_PROGRAM, {
            **config, "engine_id": engine_id, "host_id": self.host_id, "actor_id": actor_id,
            "store_dir": self.store.store_dir, "spill_dir": self.store.spill_dir,
            "store_limit": self.store.limit, "owner_fd": self._engine_owner_r,
        }, (self._engine_owner_r,))
        with self._lock:
            self.engines[engine_id] = proc
        threading.Thread(target=self._watch_engine, args=(engine_id, proc, actor_id),
                         name=f"watch-{engine_id}", daemon=True).start()
        log.info("started engine %s (pid %s)", engine_id, proc.pid)
        return engine_id

    def stop_engine(self, engine_id: str, restart: bool = False) -> None:
        with self._lock:
            proc = self.engines.get(engine_id)
            if proc is None:
                return
            if not restart:
                self.stopping_ids.add(engine_id)
        # A force-cancel kills at once; the watcher starts the replacement.
        proc.kill() if restart else proc.terminate()

    def _watch_engine(self, engine_id: str, proc: subprocess.Popen, actor_id) -> None:
        code = proc.wait()
        with self._lock:
            self.engines.pop(engine_id, None)
            intended = engine_id in self.stopping_ids
            self.stopping_ids.discard(engine_id)
        if self._stopping.is_set() or intended:
            return
        log.warning("engine %s (pid %s) exited with %s%s", engine_id, proc.pid, code,
                    "" if actor_id else "; starting a replacement")
        try:
            self.conn.send(m.EngineExited(engine_id=engine_id, returncode=code))
        except OSError:
            return
        if actor_id:
            return           # the scheduler decides whether and where an actor restarts
        now = time.monotonic()
        self.crashes = [t for t in self.crashes if now - t < 30] + [now]
        delay = RESTART_BACKOFF[min(len(self.crashes) - 1, len(RESTART_BACKOFF) - 1)]
        if self._stopping.wait(delay):
            return
        self.start_engine()

    def _watch_owner(self, fd: int) -> None:
        wait_until_closed(fd)
        log.info("the owner process is gone; stopping this host")
        self._stopping.set()
        self._close_conn()

    def _close_conn(self) -> None:
        conn = getattr(self, "conn", None)
        if conn is not None:
            conn.close()

    def cleanup(self) -> None:
        """Stop every engine and remove the store.  Runs once, on the way out."""
        self._stopping.set()
        with self._lock:
            procs = list(self.engines.values())
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + KILL_GRACE
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        os.close(self._engine_owner_w)
        if getattr(self, "object_server", None) is not None:
            self.object_server.close()
        if not (self.cut_off and self.config.get("restartable")):
            self.store.remove_all()          # else the next agent of this host keeps it
        self._close_conn()
        log.info("host %s stopped", self.host_id)


def main() -> None:
    config = read_config_from_stdin()
    setup_process_logging(config["session_dir"], f"agent-{config['host_id']}")
    agent = HostAgent(config)
    agent.run()
    sys.exit(EXIT_CUT_OFF if agent.cut_off else 0)


if __name__ == "__main__":
    main()
