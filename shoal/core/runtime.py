"""The process's one well-known runtime: its Client and, for an embedded
cluster, the processes it started.  `init` makes it, `shutdown` ends it; tests
can reset it with `shutdown()`.  Nothing else in shoal keeps global state."""
from __future__ import annotations

import atexit
import logging
import threading
from typing import Optional

from ..exceptions import ShoalError
from .client import Client, current_task

log = logging.getLogger("shoal")
_current: Optional["Runtime"] = None
_lock = threading.RLock()


class Runtime:
    def __init__(self, client: Client, address: str, cluster=None, namespace: str = "") -> None:
        self.client = client
        self.address = address
        self.cluster = cluster            # LocalCluster we started, or None
        self.namespace = namespace
        self.runtime_env: Optional[dict] = None      # init(runtime_env=...), wire form
        # Who shares this runtime with plain `init()` calls (the shoal kernel
        # sets it): init() then returns its context instead of raising.
        self.shared_by: Optional[str] = None

    def close(self) -> None:
        """Disconnect; stop the cluster if we started it.  Idempotent."""
        if self.cluster is not None:
            self.cluster.stop(self.client)
        self.client.close()


def current() -> Runtime:
    """The runtime, starting a local cluster on first use (as Ray does)."""
    rt = _current
    if rt is not None:
        return rt
    from .api import init
    with _lock:
        if _current is None:
            init()
        return _current


DEFAULT_NAMESPACE = "default"


def job() -> tuple:
    """(job id, namespace) that work submitted from here belongs to: in a task
    or actor, its driver's (so named actors resolve where the driver's do)."""
    rt = current()
    task = current_task.get()
    if task is not None and task.job[0]:
        return task.job
    return rt.client.client_id, rt.namespace or DEFAULT_NAMESPACE


def current_or_none() -> Optional[Runtime]:
    return _current


def set_current(rt: Optional[Runtime]) -> None:
    global _current
    with _lock:
        if rt is not None and _current is not None:
            raise ShoalError("a shoal runtime is already active in this process")
        _current = rt


def shutdown() -> None:
    """Disconnect from the cluster, stopping it if this process started it.
    Safe to call when not initialized, and more than once."""
    global _current
    with _lock:
        rt, _current = _current, None
    if rt is not None:
        rt.close()


atexit.register(shutdown)
