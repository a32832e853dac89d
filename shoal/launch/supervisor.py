"""Restarting a host agent (or a head's scheduler) that dies.

A host agent's owner restarts it when it dies unexpectedly: the embedded
cluster's driver (a thread of `LocalCluster`) and, for `shoal start`, a small
supervisor process (`python -m shoal.launch.supervisor`, the form below).
The new agent takes the same host id and the same store directory, so the
objects already in that host's store stay readable; the scheduler holds the
host's place for it (see SchedulerState._await_agent), treats the old agent's
engines as lost and retries their tasks.

Contract: an agent that exits with status 0 stopped on purpose (Shutdown, its
owner gone, SIGTERM, no scheduler to join) and is not restarted; any other exit
(a signal such as SIGKILL, a crash, EXIT_CUT_OFF after losing the scheduler) is,
at once, up to MAX_RESTARTS times per RESTART_WINDOW seconds.  The watcher blocks in wait(), so a death is noticed
as it happens (well within a second).
"""
from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from typing import Callable, Optional

log = logging.getLogger("shoal.supervisor")
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0


class Supervisor:
    """Owns one agent process: `spawn(generation)` starts it (generation 0
    first, then 1, 2, ... for restarts); a watcher thread restarts it when it
    dies unexpectedly.  `stop()` ends the supervision (not the agent)."""

    def __init__(self, spawn: Callable[[int], subprocess.Popen], name: str = "agent") -> None:
        self._spawn = spawn
        self._name = name
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.generation = 0
        self.restarts: list = []           # monotonic times of restarts
        self.proc = spawn(0)
        self._watcher = threading.Thread(target=self._watch, name=f"shoal-supervise-{name}",
                                         daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while True:
            proc = self.proc
            code = proc.wait()
            died = time.monotonic()
            if self._stopping.is_set() or code == 0:
                return
            self.restarts = [t for t in self.restarts if died - t < RESTART_WINDOW]
            if len(self.restarts) >= MAX_RESTARTS:
                log.error("%s (pid %s) died with %s; it died %d times in %.0f s, so it is not "
                          "restarted again", self._name, proc.pid, code, MAX_RESTARTS,
                          RESTART_WINDOW)
                return
            self.restarts.append(died)
            with self._lock:
                if self._stopping.is_set():
                    return
                self.generation += 1
                try:
                    self.proc = self._spawn(self.generation)
                except OSError as exc:
                    log.error("could not restart %s: %s", self._name, exc)
                    return
            log.warning("%s (pid %s) died with %s; restarted it as pid %s", self._name,
                        proc.pid, code, self.proc.pid)

    def stop(self) -> None:
        """No more restarts (idempotent); the caller then stops the agent itself."""
        with self._lock:
            self._stopping.set()

    def join(self, timeout: Optional[float] = None) -> None:
        if self._watcher is not threading.current_thread():
            self._watcher.join(timeout)


def main() -> None:
    """The supervisor process of `shoal start`: starts its child -- a host agent,
    or with --restart-scheduler the head's scheduler (config "supervise") --
    with the configuration read on stdin, restarts it when it dies, and exits
    when it stops on purpose.  The child's owner pipe is ours, so it dies with
    us; our own owner (if any) is the config's owner_fd, watched here.
    Listening sockets (a scheduler's "listen_fds") stay open here, so a new
    scheduler serves the same address and clients' connects just wait."""
    from ..session import read_config_from_stdin, setup_process_logging, wait_until_closed
    from ..store.shm import HostStore
    from .launcher import spawn
    config = read_config_from_stdin()
    module = config.pop("supervise", "shoal.launch.agent")
    is_agent = module == "shoal.launch.agent"
    name = f"agent-{config['host_id']}" if is_agent else "scheduler"
    setup_process_logging(config["session_dir"], f"supervisor-{name}")
    owner_fd = config.pop("owner_fd", None)
    child_r, child_w = os.pipe()
    os.set_inheritable(child_w, False)
    fds = (*config.get("listen_fds", ()), child_r)
    supervisor = Supervisor(
        lambda gen: spawn(module, {**config, "owner_fd": child_r, "generation": gen,
                                   "restartable": True}, fds), name=name.replace("-", " "))

    def on_owner_gone() -> None:
        wait_until_closed(owner_fd)
        log.info("the owner process is gone; stopping the %s", name)
        supervisor.stop()
        os.close(child_w)              # the child sees its owner go and stops

    if owner_fd is not None:
        threading.Thread(target=on_owner_gone, name="owner-watch", daemon=True).start()
    supervisor.join()
    supervisor.proc.wait()
    if is_agent:                       # no agent of this host will need its store again
        HostStore(config["store_dir"], config["spill_dir"], 0).remove_all()
    log.info("the %s stopped; so does its supervisor", name)


if __name__ == "__main__":
    main()
