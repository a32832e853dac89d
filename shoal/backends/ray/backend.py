"""RayBackend: shoal's API on a Ray cluster (the interface of shoal.core.backend).

Addresses (what `shoal.init(address=...)` and SHOAL_ADDRESS take):

    "ray"              ray.init(): the Ray cluster running on this machine, else a new local one
    "ray:auto"         ray.init(address="auto"): a running cluster, ConnectionError if none
    "ray:local"        ray.init(address="local"): always a new local Ray for this process
    "ray:HOST:PORT"    ray.init(address="HOST:PORT"): a driver on a node of that cluster
    "ray://HOST:PORT"  Ray Client (ray.init("ray://HOST:PORT")): from outside the cluster

Remote functions and actor classes made with `@shoal.remote` become Ray's
(`ray.remote`, made once per function or class and options) when called;
refs and actor handles are Ray's own, so `get`/`wait`/`cancel`/`kill` hand
them to Ray unchanged.  Every Ray worker of the job runs
`shoal.backends.ray.worker.setup` first (Ray's worker_process_setup_hook),
so shoal's API works inside tasks and actors too (nested tasks).
"""
from __future__ import annotations

import inspect
import logging
import os
import threading
import time
from typing import Optional

from ...core import hooks
from ...core.scheduling_strategies import (
    NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy,
)
from .cluster_view import ClusterView

log = logging.getLogger("shoal.backends.ray")
SETUP_HOOK = "shoal.backends.ray.worker.setup"
INTERRUPT_CHECK = 0.1    # seconds between the driver's looks for Ctrl-C while it waits on Ray
EXTRA_HINT = "pip install 'shoal[ray]'"

# The options Ray's ray.remote / .options take, of those shoal validates.
TASK_OPTIONS = frozenset({
    "num_cpus", "num_gpus", "resources", "num_returns", "max_retries", "retry_exceptions",
    "name", "runtime_env", "scheduling_strategy", "memory", "max_calls", "accelerator_type",
    "label_selector", "enable_task_events", "_metadata", "_generator_backpressure_num_objects",
})
ACTOR_OPTIONS = frozenset({
    "num_cpus", "num_gpus", "resources", "name", "namespace", "get_if_exists", "lifetime",
    "max_restarts", "max_task_retries", "max_concurrency", "max_pending_calls", "runtime_env",
    "concurrency_groups", "memory", "scheduling_strategy", "accelerator_type",
    "label_selector", "enable_task_events", "allow_out_of_order_execution", "_metadata",
})
METHOD_OPTIONS = frozenset({"num_returns", "concurrency_group", "max_task_retries",
                            "retry_exceptions", "enable_task_events", "_metadata",
                            "_generator_backpressure_num_objects"})
# init() arguments shoal takes that mean nothing to Ray: refused, saying why.
_SHOAL_ONLY_INIT = {"hosts": "Ray's nodes join with `ray start`",
                    "remote_python": "Ray's nodes join with `ray start`"}


def import_ray():
    """Ray, or ImportError naming the extra that brings it."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError(f"shoal's Ray backend needs Ray, which is not installed: "
                          f"{EXTRA_HINT} (or pip install ray)") from exc
    return ray


def ray_address(address: Optional[str]) -> Optional[str]:
    """What ray.init(address=...) gets for a shoal address (see the module doc)."""
    if address in (None, "ray"):
        return None
    if address.startswith("ray://"):
        return address
    rest = address[len("ray:"):]
    if rest in ("auto", "local"):
        return rest
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"bad Ray address {address!r}: use \"ray\", \"ray:auto\", "
                         f"\"ray:local\", \"ray:HOST:PORT\" or \"ray://HOST:PORT\"")
    return rest


def connect(address: Optional[str], *, num_cpus=None, num_gpus=None, resources=None,
            object_store_memory=None, ignore_reinit_error=False, namespace=None,
            runtime_env=None, **others) -> "RayBackend":
    """ray.init() for shoal.init(address="ray..."); the backend, not yet active."""
    for key, why in _SHOAL_ONLY_INIT.items():
        if others.pop(key, None) is not None:
            raise ValueError(f"init({key}=...) is shoal's own cluster's; on Ray: {why}")
    target = ray_address(address)          # a bad address fails before Ray is imported
    ray = import_ray()
    if ray.is_initialized():
        raise RuntimeError("Ray is already initialized in this process (ray.init was called): "
                           "call ray.shutdown() first, or keep using ray directly")
    kwargs = {k: v for k, v in dict(num_cpus=num_cpus, num_gpus=num_gpus, resources=resources,
                                     object_store_memory=object_store_memory,
                                     namespace=namespace).items() if v is not None}
    kwargs.update(others)       # init() let through only Ray's own arguments it ignores
    env = dict(runtime_env or {})
    if "worker_process_setup_hook" in env:
        raise ValueError("runtime_env['worker_process_setup_hook'] is shoal's on the Ray "
                         "backend (it makes shoal's API work in Ray's workers)")
    env["worker_process_setup_hook"] = SETUP_HOOK
    env.setdefault("env_vars", {})
    if "PYTHONPATH" not in env["env_vars"] and os.environ.get("PYTHONPATH"):
        env["env_vars"]["PYTHONPATH"] = os.environ["PYTHONPATH"]   # shoal from a source tree
    info = ray.init(address=target, runtime_env=env, **kwargs)
    return RayBackend(address or "ray", info)


class RayBackend(ClusterView):
    """shoal's backend interface on Ray (see shoal.core.backend.Backend; the
    widgets' view of the cluster is ClusterView's, in cluster_view.py)."""

    name = "ray"

    def __init__(self, address: str, init_info=None, *, in_worker: bool = False) -> None:
        self.ray = import_ray()
        self.address = address
        self.init_info = init_info
        self.in_worker = in_worker
        self.shared_by: Optional[str] = None      # the shoal kernel, as for shoal's runtime
        self._relay = None                          # relay.DriverRelay, made on first routing
        self._router = None                         # the notebook's OutputRouter, if routed
        self._unflushed = False                     # routed work went out since flush_output
        self._cell_tasks = CellTasks(self.ray)      # what an interrupt of the cell cancels
        # What Ray made of each function or class (shoal's copies share it; held
        # as long as this connection, as Ray holds what it exported).
        self._made: dict = {}
        self._closed = False

    # ---------------------------------------------------------------- tasks and actors
    def submit_task(self, function, args: tuple, kwargs: dict):
        route = self.call_route(function._name)
        if route is None:
            return self._ray_function(function, False).remote(*args, **kwargs)
        result = self._ray_function(function, True).remote(route, *args, **kwargs)
        if not self.in_worker:
            self._cell_tasks.add(self._router, result)
        return result

    def call_route(self, name: str):
        """Where the output of a task or actor call (named `name`) submitted
        now goes: the notebook cell submitting it (a driver whose output is
        routed), or the cell of the task or call submitting it (in a worker);
        None: Ray's own log forwarding."""
        if self.in_worker:
            from .worker import route_now
            parent = route_now()
            return parent.child(name) if parent is not None else None
        if self._relay is not None and self._router is not None:
            self._unflushed = True
            return self._relay.route(self._router, name)
        return None

    def _ray_function(self, function, routed: bool):
        """ray.remote(fn).options(...) for a shoal RemoteFunction (`routed`: its
        output goes to a CellOutput given first).  What Ray made is kept per
        underlying function, not per shoal object: the copies `.options()`
        makes (one per `%%remote` cell) share it, so Ray exports the function
        once, not once per copy."""
        made = self._made.get(function._function)
        if made is None:
            made = self._made[function._function] = {}
        base = made.get(routed)
        if base is None:
            fn = function._function
            if not inspect.isfunction(fn):          # a builtin, a partial: Ray takes functions
                fn = _as_function(fn)
            if routed:
                from .worker import routed as wrap
                fn = wrap(fn)
            base = made[routed] = self.ray.remote(fn)
        options = task_options(function._options)
        return base.options(**options) if options else base

    def create_actor(self, actor_class, args: tuple, kwargs: dict):
        cls = actor_class._cls
        base = self._made.get(cls)
        if base is None:
            _method_options(self.ray, cls, actor_class._methods)
            from .worker import interruptible, routed_actor
            if getattr(cls, "__shoal_interruptible__", False):     # routes its own output
                base = self.ray.remote(interruptible(cls))
            else:
                base = self.ray.remote(routed_actor(cls))
            self._made[cls] = base
        options = actor_options(actor_class._options)
        from .worker import ROUTE_KEYWORD, routes_init
        if routes_init(cls) and not getattr(cls, "__shoal_interruptible__", False):
            route = self.call_route(cls.__name__)      # __init__'s output: the creating cell
            if route is not None:
                kwargs = {**kwargs, ROUTE_KEYWORD: route}
        return (base.options(**options) if options else base).remote(*args, **kwargs)

    def get_actor(self, name: str, namespace: Optional[str]):
        return self.ray.get_actor(name, namespace=namespace)

    def kill(self, actor, *, no_restart: bool) -> None:
        self.ray.kill(actor, no_restart=no_restart)

    # ---------------------------------------------------------------- objects
    def get(self, refs, *, timeout):
        try:
            return self._get_watched(refs, timeout)       # (auto progress: cluster_view.py)
        except self.ray.exceptions.RayError as exc:
            raise as_shoal_error(exc) from None

    def put(self, value):
        return self.ray.put(value)

    def wait(self, refs, *, num_returns, timeout, fetch_local=True):
        return self._wait_watched(refs, num_returns, timeout, fetch_local)

    def _ray_get(self, refs, timeout):
        """ray.get, interruptible from the notebook (see _interruptible)."""
        if self._interruptible():
            timeout = self._until_ready(refs, timeout)
        return self.ray.get(refs, timeout=timeout)

    def _ray_wait(self, refs, num_returns, timeout, fetch_local):
        """ray.wait, interruptible from the notebook (see _interruptible)."""
        if not self._interruptible() or (timeout is not None and timeout <= INTERRUPT_CHECK):
            return self.ray.wait(refs, num_returns=num_returns, timeout=timeout,
                                 fetch_local=fetch_local)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            step = INTERRUPT_CHECK if left is None else min(INTERRUPT_CHECK, left)
            ready, rest = self.ray.wait(refs, num_returns=num_returns, timeout=step,
                                        fetch_local=fetch_local)
            if len(ready) >= num_returns or left is not None and left <= step:
                return ready, rest

    # Ray's get and wait notice a KeyboardInterrupt about once a second
    # (RAY_get_check_signal_interval_milliseconds); a notebook's Ctrl-C should
    # stop them at once, as on shoal's own scheduler.  So the driver's main
    # thread waits in slices of INTERRUPT_CHECK, in Python between them.
    def _interruptible(self) -> bool:
        return not self.in_worker and threading.current_thread() is threading.main_thread()

    def _until_ready(self, refs, timeout):
        """Wait, in slices, until `refs` (a ref or a list of refs) are ready or
        `timeout` passes; the timeout left for ray.get."""
        flat = refs if isinstance(refs, list) else [refs]
        if not flat or not all(isinstance(r, self.ray.ObjectRef) for r in flat):
            return timeout
        pending = list(dict.fromkeys(flat))         # ray.wait refuses duplicates
        deadline = None if timeout is None else time.monotonic() + timeout
        while pending:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return 0
            step = INTERRUPT_CHECK if left is None else min(INTERRUPT_CHECK, left)
            ready, pending = self.ray.wait(pending, num_returns=len(pending), timeout=step,
                                           fetch_local=False)
            if ready and pending:
                self.ray.get(ready)     # Ray's get raises at the first failure: so do we
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def cancel(self, ref, *, force=False, recursive=True) -> None:
        self.ray.cancel(ref, force=force, recursive=recursive)

    def is_ref(self, value) -> bool:
        return isinstance(value, self.ray.ObjectRef)

    # ---------------------------------------------------------------- cluster state
    def nodes(self) -> list:
        return self.ray.nodes()

    def cluster_resources(self) -> dict:
        return self.ray.cluster_resources()

    def available_resources(self) -> dict:
        return self.ray.available_resources()

    def runtime_context(self):
        return self.ray.get_runtime_context()

    def gpu_ids(self) -> list:
        return self.ray.get_gpu_ids()

    def workers(self) -> list:
        """One per alive node that has CPUs (`%%remote --all` runs a copy on each)."""
        return [{"id": n["NodeID"], "host": n.get("NodeManagerAddress", ""), "state": "idle"}
                for n in sorted(self.ray.nodes(), key=lambda n: n["NodeID"])
                if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]

    def pin(self, worker: dict) -> dict:
        return {"scheduling_strategy": NodeAffinitySchedulingStrategy(worker["id"], soft=False)}

    # ---------------------------------------------------------------- placement groups
    # Ray's own (shoal.util.placement_group's functions hand their calls here).
    def placement_group(self, bundles, strategy="PACK", name="", lifetime=None, **more):
        from ray.util import placement_group
        return placement_group(bundles, strategy=strategy, name=name, lifetime=lifetime, **more)

    def remove_placement_group(self, placement_group) -> None:
        from ray.util import remove_placement_group
        remove_placement_group(placement_group)

    def placement_group_table(self, placement_group=None) -> dict:
        from ray.util import placement_group_table
        return placement_group_table(placement_group)

    def get_current_placement_group(self):
        from ray.util import get_current_placement_group
        return get_current_placement_group()

    def multiprocessing_pool(self, **kwargs):
        """Ray's own multiprocessing.Pool (shoal.util.multiprocessing.Pool's, on Ray)."""
        from ray.util.multiprocessing import Pool
        return Pool(**kwargs)

    # ---------------------------------------------------------------- the notebook layer
    def _driver_relay(self):
        if self._relay is None:
            from .relay import DriverRelay
            self._relay = DriverRelay(self.ray)
        return self._relay

    def route_output(self, router) -> None:
        """The output of tasks submitted from now on (and of the tasks they
        submit) comes through the relay to the cell that submitted them."""
        self._driver_relay()
        self._router = router

    def unroute_output(self, router) -> None:
        if self._router is router:
            self._router = None

    def output_route(self, router):
        return self._driver_relay().route(router).for_cell()

    def flush_output(self, timeout: float = 5.0) -> None:
        """The relay thread has delivered what the relay holds (finished tasks
        and calls waited for the relay before returning): one relay call, made
        only if routed work went out since the last flush."""
        if self._relay is not None and self._unflushed:
            self._unflushed = False
            self._relay.flush(timeout)

    def cancel_cell(self, router) -> int:
        return self._cell_tasks.cancel(router)

    def logs_dir(self) -> Optional[str]:
        info = getattr(self.init_info, "address_info", None)
        session = info.get("session_dir") if info is not None else None
        return os.path.join(session, "logs") if session else None

    # ---------------------------------------------------------------- lifecycle
    def context(self) -> "RayContext":
        return RayContext(self)

    def close(self) -> None:
        """Stop the relay thread; ray.shutdown() (a local Ray we started stops with it)."""
        if self._closed:
            return
        self._closed = True
        self._close_view()
        if self._relay is not None:
            self._relay.close()
            self._relay = None
        if not self.in_worker and self.ray.is_initialized():
            self.ray.shutdown()


def _as_function(fn):
    """A Python function calling `fn` (a builtin, a partial, a callable object),
    named as it, for ray.remote."""
    def call(*args, **kwargs):
        return fn(*args, **kwargs)
    call.__name__ = call.__qualname__ = getattr(fn, "__name__", type(fn).__name__)
    return call


class CellTasks:
    """The unfinished plain tasks the notebook's current cell submitted, so that
    interrupting the cell cancels them (as on shoal's own scheduler).

    Ray cancels by ref only, so their refs are held: until the task finishes
    (finished ones are dropped as more are added) or another cell submits
    work.  `%%remote` cells are left out: they cancel their own, with a grace."""

    PRUNE_AT = 1000

    def __init__(self, ray) -> None:
        self.ray = ray
        self._lock = threading.Lock()
        self._cell = None
        self._refs: list = []
        self._prune_at = self.PRUNE_AT

    def add(self, router, result) -> None:
        if router is None or router.context()[1] is not None:   # a %%remote cell's
            return
        refs = result if isinstance(result, list) else [result]
        refs = [r for r in refs if isinstance(r, self.ray.ObjectRef)]
        with self._lock:
            if router.cell is not self._cell:
                self._cell, self._refs, self._prune_at = router.cell, [], self.PRUNE_AT
            self._refs.extend(refs)
            if len(self._refs) >= self._prune_at:
                _, self._refs = self.ray.wait(self._refs, num_returns=len(self._refs),
                                              timeout=0, fetch_local=False)
                self._prune_at = max(self.PRUNE_AT, 2 * len(self._refs))

    def cancel(self, router) -> int:
        """Cancel the router's current cell's unfinished tasks (newest first,
        with the tasks they started); how many."""
        with self._lock:
            refs = self._refs if router.cell is self._cell else []
            self._refs = []
        if not refs:
            return 0
        _, pending = self.ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)
        for ref in reversed(pending):
            try:
                self.ray.cancel(ref, recursive=True)
            except Exception:
                log.debug("cancelling %s failed", ref, exc_info=True)
        return len(pending)


class RayContext:
    """What shoal.init(address="ray...") returns: as shoal's ClusterContext (address,
    address_info, a context manager that shuts down on exit, disconnect)."""

    def __init__(self, backend: RayBackend) -> None:
        self._backend = backend
        self.address = backend.address
        info = backend.init_info
        self.address_info = dict(info.address_info) if hasattr(info, "address_info") else {}
        self.session_dir = self.address_info.get("session_dir")

    def __enter__(self) -> "RayContext":
        return self

    def __exit__(self, *exc) -> None:
        from ...core import backend as core_backend
        if core_backend.active is self._backend:
            core_backend.disconnect()

    def disconnect(self) -> None:
        self.__exit__()

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        """In a notebook: the live cluster widget (Ray's nodes, resources, tasks),
        as for shoal's own ClusterContext; elsewhere: the text."""
        return hooks.cluster_mimebundle(self, include, exclude)

    def __repr__(self) -> str:
        ray = self._backend.ray
        if self._backend._closed or not ray.is_initialized():
            return f"<shoal.RayContext {self.address} (closed)>"
        try:
            nodes = [n for n in ray.nodes() if n.get("Alive")]
            total = ray.cluster_resources()
        except Exception:
            return f"<shoal.RayContext {self.address}>"
        return (f"<shoal.RayContext {self.address} (Ray {ray.__version__}): {len(nodes)} "
                f"node(s), {total.get('CPU', 0):g} CPU, {total.get('GPU', 0):g} GPU>")


# ------------------------------------------------------------------- errors
_MIXED: dict = {}


def as_shoal_error(exc: BaseException) -> BaseException:
    """`exc`, a Ray error, made an instance of shoal's class of the same name
    too (shoal.exceptions keeps Ray's names), so that code written against
    `import shoal as ray` catches it as `ray.exceptions.X` (and Ray code,
    as Ray's)."""
    from ... import exceptions
    cls = type(exc)
    mixed = _MIXED.get(cls)
    if mixed is None:
        named = [getattr(exceptions, c.__name__) for c in cls.__mro__
                 if c.__module__.startswith("ray")
                 and isinstance(getattr(exceptions, c.__name__, None), type)]
        # The most derived of them (RayTaskError(TaskCancelledError): TaskError
        # and TaskCancelledError, not their common base).
        ours = tuple(dict.fromkeys(c for c in named
                                   if not any(o is not c and issubclass(o, c) for o in named)))
        if not ours:
            return exc
        try:
            mixed = type(cls.__name__, (cls, *ours), {"__module__": cls.__module__})
        except TypeError:              # layouts that cannot mix: Ray's class alone
            _MIXED[cls] = cls
            return exc
        _MIXED[cls] = mixed
    if mixed is not cls:
        try:
            exc.__class__ = mixed
        except TypeError:
            _MIXED[cls] = cls
    return exc


# ------------------------------------------------------------------- options
def task_options(options: dict) -> dict:
    """Ray's keywords for a remote function's validated shoal options."""
    out = {k: v for k, v in options.items() if k in TASK_OPTIONS and v is not None}
    if options.get("_engine_id") is not None:
        raise NotImplementedError("_engine_id is shoal's own scheduler's; on Ray use "
                                  "scheduling_strategy=NodeAffinitySchedulingStrategy(...)")
    return _strategy(out, options)


def actor_options(options: dict) -> dict:
    out = {k: v for k, v in options.items() if k in ACTOR_OPTIONS and v is not None}
    if out.get("get_if_exists") is False:
        del out["get_if_exists"]
    return _strategy(out, options)


def _strategy(out: dict, options: dict) -> dict:
    """shoal's scheduling strategy objects (and the older `placement_group=`
    options, which Ray no longer takes) as Ray's."""
    strategy = out.get("scheduling_strategy")
    if strategy is None and options.get("placement_group") not in (None, "default"):
        index = options.get("placement_group_bundle_index")
        strategy = PlacementGroupSchedulingStrategy(
            options["placement_group"], -1 if index is None else index,
            options.get("placement_group_capture_child_tasks"))
    if isinstance(strategy, NodeAffinitySchedulingStrategy):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy as RayAffinity
        out["scheduling_strategy"] = RayAffinity(strategy.node_id, soft=strategy.soft)
    elif isinstance(strategy, PlacementGroupSchedulingStrategy):
        from ray.util.placement_group import PlacementGroup as RayGroup
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy as RayInGroup
        if not isinstance(strategy.placement_group, RayGroup):
            raise ValueError(f"{strategy.placement_group!r} is not a Ray placement group: on "
                             f"the Ray backend, make it with shoal.util.placement_group "
                             f"(ray.util.placement_group) while connected to Ray")
        out["scheduling_strategy"] = RayInGroup(
            strategy.placement_group, strategy.placement_group_bundle_index,
            strategy.placement_group_capture_child_tasks)
    return out


def _method_options(ray, cls: type, methods: dict) -> None:
    """`@shoal.method(...)` options of an actor class's methods, as `@ray.method`'s."""
    from ...core.actor import METHOD_OPTIONS as MARK
    for name in methods:
        fn = getattr(cls, name, None)
        opts = getattr(fn, MARK, None)
        if opts:
            ray.method(**{k: v for k, v in opts.items() if k in METHOD_OPTIONS})(fn)


__all__ = ["RayBackend", "RayContext", "connect", "import_ray", "ray_address",
           "task_options", "actor_options"]
