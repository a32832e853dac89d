"""The process's one well-known runtime: its Client and, for an embedded
cluster, the processes it started.  `init` makes it, `shutdown` ends it; tests
can reset it with `shutdown()`.  Nothing else in shoal keeps global state."""
from __future__ import annotations

import atexit
import logging
import sys
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
        self.placement: Optional[dict] = None        # an actor's engine: where it was placed
        # Who shares this runtime with plain `init()` calls (the shoal kernel
        # sets it): init() then returns its context instead of raising.
        self.shared_by: Optional[str] = None
        self.init_kwargs: dict = {}       # how init() made it, to make it again

    def close(self) -> None:
        """Disconnect; stop the cluster if we started it.  Idempotent."""
        if self.cluster is not None:
            self.cluster.stop(self.client)
        self.client.close()


def current() -> Runtime:
    """The runtime, starting a local cluster on first use (as Ray does).

    In a notebook, an embedded cluster whose scheduler was lost is replaced:
    the next call that needs the cluster starts a fresh one and says so on
    stderr (the lost cluster's refs and actors are gone).  Elsewhere the
    calls keep raising ClusterLostError, as a Ray driver dies with its GCS."""
    rt = _current
    if rt is not None and not (rt.client.lost and _replaceable(rt)):
        return rt
    from .api import init
    with _lock:
        if _current is not None and _current.client.lost and _replaceable(_current):
            lost, kwargs, shared_by = _current.client.lost, _current.init_kwargs, _current.shared_by
            shutdown()
            init(**kwargs)
            _current.shared_by = shared_by          # still the kernel's cluster, if it was
            print(f"shoal: the cluster was lost ({lost}); started a fresh local cluster at "
                  f"{_current.address}. Refs and actors of the lost cluster are gone: run the "
                  f"cells that made them again.", file=sys.stderr, flush=True)
        elif _current is None:
            from . import backend
            if backend.active is None:
                init()           # SHOAL_ADDRESS may name another engine: then still None
            if _current is None and backend.active is not None:
                raise NotImplementedError(
                    f"this needs shoal's own scheduler, and this process uses the "
                    f"{backend.active.name} backend at {backend.active.address}: not available "
                    f"on {backend.active.name} yet (see docs/backends.md)")
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


def _replaceable(rt: Runtime) -> bool:
    """An embedded cluster in a notebook kernel (not closed by us)."""
    if rt.cluster is None or rt.client._closing or "ipykernel" not in sys.modules:
        return False
    try:
        from IPython import get_ipython
        return get_ipython() is not None
    except ImportError:
        return False


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
