"""The backend interface: what shoal's API, magics and widgets need from a cluster.

shoal runs on a *backend*.  The default is shoal's own scheduler (scheduler,
host agents, engines; `NativeBackend` below is its face to the layers above).
Another engine (Ray today; Dask could follow) plugs in by implementing
`Backend` and being made `active` by `shoal.init(address=...)`:

    shoal.init(address="ray")       # shoal.backends.ray: the API now delegates to Ray

Who calls what:

- The public API (`shoal.get/put/wait/cancel/kill/get_actor`, `.remote()` of
  remote functions and actor classes, `nodes`, `cluster_resources`,
  `available_resources`, `get_runtime_context`) checks `active` first: when a
  foreign backend is active, the call is handed to it unchanged, and its
  return values (refs, handles) are that backend's own.  With no foreign
  backend (`active is None`) the API runs shoal's own code inline: the native
  fast path costs one attribute read more than before.
- The magics and widgets reach the cluster only through `current()` (and the
  public API): which refs are refs (`is_ref`), where `--all` runs
  (`workers`, `pin`), how task output reaches the cell that started the work
  (`route_output`), logs (`logs_dir`).  The widgets hold `current().bind()`
  and use its event stream (`subscribe`) and state queries (`status`,
  `list_objects`, `memory`, `ready`, `scale`; shapes in core.cluster_info).

Contract for an implementation (see docs/backends.md for the Ray one):

- Methods may be called from any thread; blocking ones (`get`, `wait`)
  raise KeyboardInterrupt promptly when the main thread is interrupted.
- Errors are shoal's (shoal.exceptions) or the backend's own exceptions
  that are also instances of the user's exception class, as Ray's are.
- `close()` releases everything the backend started for this process
  (a local cluster it launched, threads, connections); it is idempotent.
- A backend that cannot do something raises NotImplementedError naming the
  feature and the backend, never silently does less.

Optional methods, for an engine that has its own (shoal.util hands the
calls over; without them, NotImplementedError names the feature and the
backend): `placement_group(bundles, strategy=, name=, lifetime=, **more)`,
`remove_placement_group(pg)`, `placement_group_table(pg)`,
`get_current_placement_group()`, `multiprocessing_pool(**pool_args)`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol, runtime_checkable

from . import runtime

if TYPE_CHECKING:
    from .cluster_info import ClusterKind, ClusterStatus

# The foreign backend this process uses, or None for shoal's own scheduler.
# Set only by shoal.init / shoal.shutdown (and, inside a foreign backend's
# worker processes, by that backend's worker setup).
active: Optional["Backend"] = None


@runtime_checkable
class Backend(Protocol):
    """A cluster engine that runs shoal's API.  `name` ("shoal", "ray") and
    `address` (what init() was given, resolved) identify it."""

    name: str
    address: str

    # ---------------------------------------------------------------- tasks and actors
    def submit_task(self, function, args: tuple, kwargs: dict) -> Any:
        """Run `function` (a shoal RemoteFunction: `_function` and its validated
        `_options`) with these arguments; return what Ray's `.remote()` returns
        (a ref, a list of refs, a generator of refs, or None)."""

    def create_actor(self, actor_class, args: tuple, kwargs: dict) -> Any:
        """Start an actor of `actor_class` (a shoal ActorClass: `_cls`, `_options`);
        return a handle whose methods have `.remote()`."""

    def get_actor(self, name: str, namespace: Optional[str]) -> Any:
        """The handle of a named actor; ValueError if there is none."""

    def kill(self, actor, *, no_restart: bool) -> None: ...

    # ---------------------------------------------------------------- objects
    def get(self, refs, *, timeout: Optional[float]) -> Any: ...

    def put(self, value: Any) -> Any: ...

    def wait(self, refs: list, *, num_returns: int, timeout: Optional[float],
             fetch_local: bool) -> tuple[list, list]: ...

    def cancel(self, ref, *, force: bool, recursive: bool) -> None: ...

    def is_ref(self, value: Any) -> bool:
        """Whether `value` is one of this backend's object refs (the magics
        send refs by reference)."""

    # ---------------------------------------------------------------- cluster state
    def nodes(self) -> list[dict]:
        """Ray's `nodes()`: one dict per host (NodeID, Alive, Resources, ...)."""

    def cluster_resources(self) -> dict: ...

    def available_resources(self) -> dict: ...

    def runtime_context(self) -> Any:
        """Ray's RuntimeContext (get_job_id, get_node_id, get_task_id, ...)."""

    def gpu_ids(self) -> list:
        """The GPUs assigned to the running task or actor ([] in the driver)."""

    def workers(self) -> list[dict]:
        """Where `%%remote --all` runs one copy: [{"id", "host", "state"}], one
        entry per engine (shoal) or per node (Ray)."""

    def pin(self, worker: dict) -> dict:
        """Task options that run a task on `worker` (one of `workers()`)."""

    # ---------------------------------------------------------------- the notebook layer
    def route_output(self, router) -> None:
        """Send the output (stdout, stderr, displays) of work submitted from
        here to `router` (shoal.magics.output.OutputRouter), tagged with the
        context `router.context()` gave at submission; idempotent."""

    def unroute_output(self, router) -> None: ...

    def output_route(self, router) -> Any:
        """A picklable object that a `%%remote` cell's code enters on the
        worker (`with route:`) to send its output to `router`'s current cell;
        None where the backend routes task output by itself."""

    def flush_output(self) -> None:
        """Return once the output of work that has finished has been handed to
        the routers (called before a cell's results are shown)."""

    def cancel_cell(self, router) -> int:
        """Cancel the unfinished plain tasks the router's current cell
        submitted; returns how many (the kernel's interrupt)."""

    def logs_dir(self) -> Optional[str]:
        """The directory of this cluster's log files on this machine, if any."""

    # ---------------------------------------------------------------- the widgets' view
    # The live widgets (shoal.widgets) hold what bind() returns and call only
    # these, from their feed's thread (queries) or the kernel's (buttons).
    # Shapes: shoal.core.cluster_info.
    def bind(self) -> "Backend":
        """This backend tied to the cluster it talks to now, for a widget to keep
        (shoal's own: the current runtime's client, so a widget keeps showing
        that cluster after another starts; others: themselves)."""

    @property
    def lost(self) -> Optional[str]:
        """Why the (bound) cluster can no longer be reached, or None while it can."""

    def subscribe(self, handler: Callable) -> Any:
        """Call `handler(batch)` with the cluster's task events: batches shaped as
        shoal.protocol.messages.Events (TaskEvent tuples; objects_changed,
        cluster_changed), the first a snapshot of the remembered history, then
        news at most ~10 times a second, from a thread the backend owns;
        handlers must be quick.  Returns a subscription with an idempotent
        `close()` (the last one closed stops whatever polls or listens)."""

    def status(self, timeout: float = 5.0) -> "ClusterStatus":
        """Hosts, engines (the timeline's lanes), store memory, task counts, actors."""

    def list_objects(self) -> list:
        """The objects the cluster holds: [ObjectInfo]."""

    def memory(self) -> list:
        """Each host's object store: [StoreMemory]."""

    def list_actors(self) -> list:
        """Every actor the cluster knows, this job's and others': [ActorInfo]."""

    def object_id(self, ref) -> str:
        """The id task events and list_objects use for `ref` (a ref or an id)."""

    def task_of(self, object_id: str) -> str:
        """The id of the task that makes `object_id` (as TaskEvent.task_id)."""

    def ready(self, refs: list) -> list:
        """The ids of those of `refs` (refs or ids) whose values are ready,
        without blocking (a progress bar settles them)."""

    def describe(self) -> "ClusterKind":
        """Address, kind, whether stopping is ours and whether `scale` works."""

    def scale(self, count: int, host_id: Optional[str]) -> None:
        """Make `host_id` run `count` engines (CPUs): shoal's own adds or stops
        engines; an engine with an autoscaler asks it for that many CPUs in all;
        NotImplementedError where describe()["scalable"] is False."""

    # ---------------------------------------------------------------- lifecycle
    def context(self) -> Any:
        """What `shoal.init()` returns for this backend (address, disconnect,
        a context manager)."""

    def close(self) -> None:
        """Disconnect; stop what this backend started; idempotent."""


# Address schemes of other engines -> the module that implements their backend
# (imported only when such an address is used: `import shoal` never imports Ray).
SCHEMES = {"ray": "shoal.backends.ray"}


def scheme_of(address) -> Optional[str]:
    """"ray" for "ray", "ray:auto", "ray://HOST:PORT", ...; None for shoal's own
    addresses (None, "auto", "local", HOST:PORT, unix:PATH)."""
    if not isinstance(address, str):
        return None
    for scheme in SCHEMES:
        if address == scheme or address.startswith(scheme + ":"):
            return scheme
    return None


def is_foreign(address) -> bool:
    return scheme_of(address) is not None


def connect(address: Optional[str], **init_kwargs):
    """shoal.init() for a foreign address (or again while a foreign backend is
    active): the backend module's `connect(address, **init_kwargs)` makes the
    backend; it becomes `active`; returns its context."""
    import importlib
    if active is not None:
        if init_kwargs.get("ignore_reinit_error") or (
                getattr(active, "shared_by", None) and address in (None, active.address)):
            return active.context()
        raise RuntimeError(f"Maybe you called shoal.init twice by accident? This process is "
                           f"connected to the {active.name} backend at {active.address}; pass "
                           f"ignore_reinit_error=True or call shoal.shutdown() first.")
    if runtime.current_or_none() is not None:
        raise RuntimeError(f"this process already uses a shoal cluster at "
                           f"{runtime.current().address}: call shoal.shutdown() before "
                           f"shoal.init(address={address!r})")
    module = importlib.import_module(SCHEMES[scheme_of(address)])
    made = module.connect(address, **init_kwargs)
    set_active(made)
    return made.context()


def connect_from_env() -> bool:
    """The first call of the API with no cluster yet: where SHOAL_ADDRESS names
    another engine, connect to it now, as Ray's API auto-initializes (else the
    caller starts shoal's own cluster).  True if a foreign backend is active."""
    import os
    if active is None and is_foreign(os.environ.get("SHOAL_ADDRESS")):
        from .api import init
        init()
    return active is not None


def foreign() -> Optional["Backend"]:
    """The foreign backend the API delegates to, or None for shoal's own.  On
    the API's first call with no cluster yet, connects to the engine that
    SHOAL_ADDRESS names (connect_from_env)."""
    if active is None and runtime.current_or_none() is None:
        connect_from_env()
    return active


def disconnect() -> None:
    """shoal.shutdown() of a foreign backend: closes it (idempotent)."""
    global active
    made, active = active, None
    if made is not None:
        made.close()


def current() -> "Backend":
    """The backend work goes to now: the foreign one, else shoal's own."""
    return active if active is not None else NATIVE


def set_active(backend: Optional["Backend"]) -> None:
    """Make `backend` the one the API delegates to (None: shoal's own)."""
    global active
    active = backend


class NativeBackend:
    """shoal's own scheduler seen through the interface (used by the magics and
    widgets; the public API calls shoal's code directly, without this hop).

    `NATIVE` follows the current runtime; `bind()` (or `NativeBackend(client)`)
    gives one tied to a client, whose widget queries go to that cluster."""

    name = "shoal"

    def __init__(self, client=None) -> None:
        self.client = client

    @property
    def address(self) -> str:
        """The cluster's address ("" before one runs: reading it starts none)."""
        rt = self._runtime()
        if rt is not None:
            return rt.address
        return getattr(self.client, "address", "") or ""

    def _runtime(self):
        """The runtime this backend talks to (None: none, or a client of another)."""
        rt = runtime.current_or_none()
        if rt is None or (self.client is not None and rt.client is not self.client):
            return None
        return rt

    def _client(self):
        if self.client is not None:
            return self.client
        return runtime.current().client

    def submit_task(self, function, args, kwargs):
        return function.remote(*args, **kwargs)

    def create_actor(self, actor_class, args, kwargs):
        return actor_class.remote(*args, **kwargs)

    def get_actor(self, name, namespace):
        from .actor import get_actor
        return get_actor(name, namespace)

    def kill(self, actor, *, no_restart):
        from .actor import kill
        kill(actor, no_restart=no_restart)

    def get(self, refs, *, timeout):
        from .api import get
        return get(refs, timeout=timeout)

    def put(self, value):
        from .api import put
        return put(value)

    def wait(self, refs, *, num_returns, timeout, fetch_local=True):
        from .api import wait
        return wait(refs, num_returns=num_returns, timeout=timeout, fetch_local=fetch_local)

    def cancel(self, ref, *, force=False, recursive=True):
        from .api import cancel
        cancel(ref, force=force, recursive=recursive)

    def is_ref(self, value) -> bool:
        from .object_ref import ObjectRef
        return type(value) is ObjectRef

    def nodes(self):
        from .context import nodes
        return nodes()

    def cluster_resources(self):
        from .context import cluster_resources
        return cluster_resources()

    def available_resources(self):
        from .context import available_resources
        return available_resources()

    def runtime_context(self):
        from .context import get_runtime_context
        return get_runtime_context()

    def gpu_ids(self) -> list:
        from .context import get_gpu_ids
        return get_gpu_ids()

    def workers(self) -> list[dict]:
        engines = runtime.current().client.status()["engines"]
        return [{"id": e["engine_id"], "host": e["host_id"], "state": e["state"]}
                for e in engines if e["state"] in ("idle", "busy")]

    def pin(self, worker: dict) -> dict:
        return {"_engine_id": worker["id"]}

    def route_output(self, router) -> None:
        rt = runtime.current_or_none()
        if rt is not None and not router.attached(rt.client):
            router.attach(rt.client)

    def unroute_output(self, router) -> None:
        rt = runtime.current_or_none()
        if rt is not None:
            router.detach(rt.client)

    def output_route(self, router):
        return None            # engines send output tagged with the task; the client routes it

    def flush_output(self) -> None:
        pass                   # an engine's output comes before its result, on one connection

    def cancel_cell(self, router) -> int:
        rt = runtime.current_or_none()
        if rt is None or rt.client.lost or not router.attached(rt.client):
            return 0
        return router.cancel_cell(rt.client)

    # ---------------------------------------------------------------- the widgets' view
    def bind(self) -> "NativeBackend":
        """One per client (kept on it), so that every widget of a cluster shares a feed."""
        client = self._client()
        bound = client.__dict__.get("_native_backend")
        if bound is None:
            bound = self if self.client is not None else NativeBackend(client)
            client.__dict__["_native_backend"] = bound
        return bound

    @property
    def lost(self) -> Optional[str]:
        if self.client is not None:
            return self.client.lost
        rt = runtime.current_or_none()
        return rt.client.lost if rt is not None else None

    def subscribe(self, handler):
        from . import events
        return events.Subscription(self._client(), handler)

    def status(self, timeout: float = 5.0) -> dict:
        return self._client().status(timeout=timeout)

    def list_objects(self) -> list:
        return self._client().query("objects")

    def memory(self) -> list:
        return self._client().query("memory")

    def list_actors(self) -> list:
        return self._client().query("list_actors")

    def object_id(self, ref) -> str:
        return ref if isinstance(ref, str) else ref.id

    def task_of(self, object_id: str) -> str:
        from ..protocol.object_ids import task_of
        return task_of(object_id)

    def ready(self, refs: list) -> list:
        """A dict lookup each: the scheduler pushes every result to its owner
        as soon as it is ready."""
        ready = self._client().ready
        ids = [r if isinstance(r, str) else r.id for r in refs]
        return [i for i in ids if ready(i)]

    def describe(self) -> dict:
        rt = self._runtime()
        owned = rt is not None and rt.cluster is not None
        return {"address": self.address, "owned": owned, "scalable": True,
                "kind": "embedded local cluster" if owned else "connected"}

    def scale(self, count: int, host_id: Optional[str]) -> None:
        self._client().query("scale", count=count, host_id=host_id)

    def logs_dir(self) -> Optional[str]:
        import os
        rt = runtime.current_or_none()
        return os.path.join(rt.client.session_dir, "logs") if rt is not None else None

    def context(self):
        from .api import ClusterContext
        return ClusterContext(runtime.current())

    def close(self) -> None:
        runtime.shutdown()


NATIVE = NativeBackend()

__all__ = ["Backend", "NativeBackend", "NATIVE", "SCHEMES", "active", "connect",
           "connect_from_env", "current",
           "disconnect", "is_foreign", "scheme_of", "set_active"]
