"""The public calls: init, get, put, wait, cancel, with Ray's semantics."""
from __future__ import annotations

import inspect
import logging
import numbers
import os
import sys
import threading
import time
from typing import Any, Optional

from .. import session
from ..exceptions import ClusterLostError, GetTimeoutError
from ..protocol import messages as m
from ..protocol.connection import UNIX_PREFIX
from ..protocol.serialization import INLINE_LIMIT, serialize
from . import backend, hooks, runtime, terminal_progress
from . import runtime_env as runtime_env_module
from .actor import ActorClass, is_actor_call
from .client import Client
from .generator import ObjectRefGenerator
from .object_ref import ObjectRef, check_same_cluster, owned_ref
from .remote_function import RemoteFunction, validate_resources

log = logging.getLogger("shoal")
# Ray init arguments that make no sense for shoal but appear in Ray code: accepted, ignored.
_IGNORED_RAY_ARGS = {"include_dashboard", "dashboard_host", "dashboard_port", "log_to_driver",
                     "configure_logging", "logging_level", "logging_format"}


class ClusterContext:
    """What `init` returns: the cluster's address and a way to stop it.  Use
    it as a context manager to shut down on exit."""

    def __init__(self, rt: runtime.Runtime) -> None:
        self._runtime = rt
        self.address = rt.address
        self.cluster_id = rt.client.cluster_id
        self.session_dir = rt.client.session_dir

    @property
    def address_info(self) -> dict:
        return {"address": self.address, "session_dir": self.session_dir}

    def __enter__(self) -> "ClusterContext":
        return self

    def __exit__(self, *exc) -> None:
        if runtime.current_or_none() is self._runtime:
            runtime.shutdown()

    def disconnect(self) -> None:
        self.__exit__()

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        """In a notebook: the live cluster widget (hosts, engines, tasks; add or remove
        engines, stop), with a static HTML snapshot for nbconvert; elsewhere: the text."""
        return hooks.cluster_mimebundle(self, include, exclude)

    def __repr__(self) -> str:
        rt = self._runtime
        kind = "embedded local cluster" if rt.cluster is not None else "connected"
        if rt.client.lost:
            return f"<shoal.ClusterContext {self.address} ({kind}, closed)>"
        try:
            st = rt.client.status(timeout=2)
        except Exception:
            return f"<shoal.ClusterContext {self.address} ({kind})>"
        cpus = sum(h["resources"].get("CPU", 0) for h in st["hosts"])
        gpus = sum(h["resources"].get("GPU", 0) for h in st["hosts"])
        return (f"<shoal.ClusterContext {self.address} ({kind}): {len(st['hosts'])} host(s), "
                f"{len(st['engines'])} engine(s), {cpus:g} CPU, {gpus:g} GPU; "
                f"logs in {self.session_dir}/logs>")


def init(address: Optional[str] = None, *, num_cpus: Optional[int] = None,
         num_gpus: Optional[int] = None, resources: Optional[dict] = None,
         object_store_memory: Optional[int] = None, ignore_reinit_error: bool = False,
         namespace: Optional[str] = None, hosts: Optional[list] = None,
         remote_python: Optional[str] = None, local_mode: bool = False,
         runtime_env: Optional[dict] = None,
         **kwargs) -> ClusterContext:
    """Connect this process to a cluster, starting a local one if needed.

    Address resolution follows Ray: the `address` argument, else the
    SHOAL_ADDRESS environment variable, else a new embedded cluster on this
    machine (scheduler, host agent, one engine per CPU) that stops when this
    process calls `shutdown()` or exits.  `address="auto"` finds a cluster
    started here with `shoal start`; `address="local"` always starts one.

    `hosts=["user@host1:4", "host2"]` also starts a host agent on each of
    those machines over SSH (`ssh HOST REMOTE_PYTHON -m shoal start ...`, the
    key on stdin; SHOAL_SSH_OPTIONS adds ssh options); they stop with the
    cluster or when their SSH session drops.  `remote_python` defaults to
    this interpreter's path, which the hosts must also have.

    `runtime_env` is the job's: every task and actor of this driver starts
    from it (see shoal.core.runtime_env for what is supported).
    """
    if local_mode:
        raise ValueError("local_mode=True is not supported by shoal (Ray deprecated it too): "
                         "tasks always run on engines; use a 1-CPU cluster, init(num_cpus=1), "
                         "to run them one at a time")
    target = address or os.environ.get("SHOAL_ADDRESS") or None
    if backend.active is not None or backend.is_foreign(target):
        # Another engine (address="ray..."): see shoal.core.backend.  Its own
        # arguments (Ray's _credentials=, _temp_dir=, ...) go to it unchecked here:
        # ray.init rejects what it does not know.
        return backend.connect(target, num_cpus=num_cpus, num_gpus=num_gpus,
                               resources=resources, object_store_memory=object_store_memory,
                               ignore_reinit_error=ignore_reinit_error, namespace=namespace,
                               hosts=hosts, remote_python=remote_python,
                               runtime_env=runtime_env, **kwargs)
    unknown = sorted(set(kwargs) - _IGNORED_RAY_ARGS)
    if unknown:
        raise TypeError(f"init() got unexpected keyword argument(s): {', '.join(map(repr, unknown))}")
    with runtime._lock:
        rt = runtime.current_or_none()
        if rt is not None:
            if ignore_reinit_error:
                return ClusterContext(rt)
            if rt.shared_by is not None:
                return _shared_context(rt, address, num_cpus, namespace, num_gpus=num_gpus,
                                       resources=resources, hosts=hosts,
                                       object_store_memory=object_store_memory)
            raise RuntimeError("Maybe you called shoal.init twice by accident? This error can be "
                               "suppressed by passing in 'ignore_reinit_error=True' or by calling "
                               "'shoal.shutdown()' prior to 'shoal.init()'.")
        _check_init_args(num_cpus=num_cpus, num_gpus=num_gpus,
                         object_store_memory=object_store_memory)
        validate_resources({"num_gpus": num_gpus, "resources": resources})
        job_env = runtime_env_module.validate(runtime_env)
        address = target
        _check_address(address)
        if namespace is not None and not isinstance(namespace, str):
            raise TypeError(f"namespace must be a string, got {type(namespace).__name__}")
        if hosts is not None and (not isinstance(hosts, (list, tuple))
                                  or not all(isinstance(h, str) and h for h in hosts)):
            raise ValueError(f"hosts must be a list of \"[user@]host[:num_cpus]\" strings, "
                             f"got {hosts!r}")
        if address in (None, "local"):
            rt = _start_local(num_cpus, num_gpus, resources, object_store_memory, namespace,
                              hosts or (), remote_python)
            rt.init_kwargs = dict(num_cpus=num_cpus, num_gpus=num_gpus, resources=resources,
                                  object_store_memory=object_store_memory, namespace=namespace,
                                  hosts=hosts, remote_python=remote_python,
                                  runtime_env=runtime_env)
        else:
            if num_cpus is not None or num_gpus is not None or resources or hosts:
                raise ValueError("When connecting to an existing cluster, num_cpus, num_gpus and "
                                 "resources must not be provided: the hosts declare them.")
            rt = _connect(address, namespace)
        runtime.set_current(rt)
        try:
            rt.runtime_env = runtime_env_module.merge(
                {"sys_path": runtime_env_module.driver_code_path()},
                runtime_env_module.resolve(rt.client, job_env))
        except BaseException:
            runtime.shutdown()
            raise
        return ClusterContext(rt)


def _shared_context(rt: runtime.Runtime, address, num_cpus, namespace, **others
                    ) -> ClusterContext:
    """init() where the runtime is shared (the shoal kernel's cluster): its
    context when the arguments fit that cluster; else say how to switch."""
    where = f"{rt.shared_by} is already using the shoal cluster at {rt.address}"
    if address not in (None, "auto", rt.address) and not (
            address == "local" and rt.cluster is not None):
        raise RuntimeError(f"{where}; to use the cluster at {address} instead, run "
                           f"`%cluster connect {address}` (or `%cluster stop` first)")
    given = sorted(k for k, v in others.items() if v)
    if given:
        raise RuntimeError(f"{where}; {', '.join(given)} cannot change it: run `%cluster stop` "
                           f"and then init() again (or `%cluster start -n N`)")
    if num_cpus is not None:
        cpus = sum(h["resources"].get("CPU", 0) for h in rt.client.status()["hosts"])
        if cpus != num_cpus:
            raise RuntimeError(f"{where}, with {cpus:g} CPUs, not {num_cpus}; run `%cluster "
                               f"stop` and then `%cluster start -n {num_cpus}` to change it")
    if namespace is not None and namespace != rt.namespace:
        rt.namespace = namespace
    return ClusterContext(rt)


def _check_init_args(**counts) -> None:
    """num_cpus, num_gpus: whole numbers >= 0; object_store_memory: bytes > 0."""
    for name, value in counts.items():
        low = 1 if name == "object_store_memory" else 0
        if value is not None and (not isinstance(value, numbers.Integral)
                                  or isinstance(value, bool) or value < low):
            raise ValueError(f"{name} must be a whole number >= {low}"
                             f"{' (bytes)' if low else ''}, got {value!r}")


def _check_address(address) -> None:
    """"auto", "local", HOST:PORT or unix:PATH (a cluster started with `shoal start`)."""
    if address is None or address in ("auto", "local"):
        return
    if not isinstance(address, str):
        raise TypeError(f"address must be a string, got {type(address).__name__}")
    if not address.startswith(UNIX_PREFIX):
        from ..protocol.connection import parse_address
        parse_address(address)


def _start_local(num_cpus, num_gpus, resources, object_store_memory, namespace,
                 hosts=(), remote_python=None) -> runtime.Runtime:
    from ..launch.launcher import LocalCluster, local_address_towards
    from ..launch.ssh import host_address, parse_host
    bind = "127.0.0.1"
    if hosts:          # listen where the hosts can reach us: our address towards them
        bind = local_address_towards(f"{host_address(parse_host(hosts[0])[0])}:22")
    cluster = LocalCluster(num_cpus=num_cpus, num_gpus=num_gpus, resources=resources,
                           object_store_memory=object_store_memory, host=bind,
                           ssh_hosts=tuple(hosts), remote_python=remote_python)
    try:
        client = Client.connect(cluster.local_address, cluster.key, host_id=cluster.host_id,
                                store=cluster.store)
        _wait_for_host(client, cluster.host_id)
    except BaseException as exc:
        cluster.stop()
        raise RuntimeError(f"the local shoal cluster did not start: {exc}; "
                           f"see the logs in {cluster.session_dir}/logs") from exc
    return runtime.Runtime(client, cluster.address, cluster, namespace or "")


def _wait_for_host(client: Client, host_id: str, timeout: float = 30.0) -> None:
    """Until this machine's host agent has joined, state calls would not see it."""
    deadline = time.monotonic() + timeout
    while not any(h.host_id == host_id for h in client.query("hosts")):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the host agent did not join within {timeout:.0f} s")
        time.sleep(0.005)


def _connect(address: str, namespace) -> runtime.Runtime:
    key_hex = os.environ.get("SHOAL_KEY")
    if key_hex is None or address == "auto":
        info = session.find_cluster(address)
        if info is None:
            where = "any running cluster" if address == "auto" else f"a cluster at {address}"
            raise ConnectionError(
                f"could not find {where} started on this machine (no connection file in "
                f"{session.runtime_dir()}); start one with `shoal start --head`, or set "
                f"SHOAL_KEY (hex) for a cluster elsewhere")
        address, key_hex = info["address"], info["key"]
        local = info.get("local_address", "")
        if local.startswith(UNIX_PREFIX) and os.path.exists(local[len(UNIX_PREFIX):]):
            connect_to = local         # same machine: the faster Unix socket
        else:
            connect_to = address
    else:
        connect_to = address
    try:
        key = bytes.fromhex(key_hex)
    except ValueError:
        raise ValueError("SHOAL_KEY must be the cluster key in hex") from None
    client = Client.connect(connect_to, key)
    return runtime.Runtime(client, address, None, namespace or "")


# --------------------------------------------------------------------- @remote
class RemoteDecoratorError(TypeError, AssertionError):
    """`@shoal.remote` used wrongly.  Ray raises AssertionError here; shoal's
    error is also a TypeError, which is what Python raises for a bad call."""


def remote(*args, **options):
    """Make a function a remote task, or a class an actor: `@shoal.remote` or
    `@shoal.remote(num_cpus=2, ...)` (see shoal.core.options for the keywords)."""
    if len(args) == 1 and not options and callable(args[0]):
        return _make_remote(args[0], {})
    if args or not options:
        from .options import TASK_OPTIONS, ACTOR_OPTIONS
        valid = [k for k in {**TASK_OPTIONS, **ACTOR_OPTIONS} if not k.startswith("_")]
        raise RemoteDecoratorError(
            "The @shoal.remote decorator must be applied either with no arguments and no "
            "parentheses, for example '@shoal.remote', or it must be applied using some of the "
            f"arguments in the list {valid}, for example '@shoal.remote(num_returns=2, "
            "resources={\"CustomResource\": 1})'.")
    return lambda target: _make_remote(target, options)


def _make_remote(target, options: dict):
    if isinstance(target, type):
        return ActorClass(target, options)
    if not inspect.isfunction(target) and not callable(target):
        raise TypeError("The @shoal.remote decorator must be applied to either a function or "
                        f"a class, got {type(target).__name__}.")
    return RemoteFunction(target, options)


def is_initialized() -> bool:
    return runtime.current_or_none() is not None or backend.active is not None


def shutdown() -> None:
    """Disconnect from the cluster; stop it if `init` started it here."""
    backend.disconnect()
    runtime.shutdown()


# --------------------------------------------------------------------- objects
def put(value: Any) -> ObjectRef:
    """Store a value in the cluster and return a ref to it.  Large values go to
    this host's shared-memory store once; numpy arrays read back from it are
    read-only views."""
    foreign = backend.foreign()
    if foreign is not None:
        return foreign.put(value)
    if isinstance(value, ObjectRef):
        raise TypeError("Calling 'put' on an ObjectRef is not allowed. If you really want to do "
                        "this, you can wrap the ObjectRef in a list and call 'put' on it.")
    client = runtime.current().client
    s = serialize(value)
    if s.size >= INLINE_LIMIT:
        client.flush_refs()     # let the scheduler free what we dropped before we add more
    oid = client.new_id("p")
    entry = client.store_value(oid, s)
    ref = owned_ref(client, oid)
    client.send(m.PutObject(entry=entry, nested=s.nested))
    client.seed([entry])                    # our own put is ready at once
    return ref


def _check_timeout(timeout) -> None:
    if timeout is not None and (not isinstance(timeout, numbers.Real) or timeout < 0):
        raise ValueError(f"'timeout' must be a non-negative number or None, got {timeout!r}")


def get(object_refs, *, timeout: Optional[float] = None):
    """The value(s) of one ref or a list of refs, waiting for them.

    If a task failed, its error is raised as soon as it is known, even while
    other refs are still pending.  Raises GetTimeoutError after `timeout`
    seconds (0 means: only what is ready now).
    """
    if backend.active is not None:
        return backend.active.get(object_refs, timeout=timeout)
    single = isinstance(object_refs, ObjectRef)
    refs = [object_refs] if single else object_refs
    if not isinstance(refs, list):
        raise ValueError(f"Invalid type of object refs, {type(object_refs).__name__}, is given. "
                         f"'object_refs' must either be an ObjectRef or a list of ObjectRefs.")
    for r in refs:
        if not isinstance(r, ObjectRef):
            raise TypeError(f"Attempting to call `get` on the value {r!r}, which is not an "
                            f"ObjectRef.")
    _check_timeout(timeout)
    if not refs:
        return []
    client = runtime.current().client
    check_same_cluster(client, refs)
    ids = [r.id for r in refs]
    entries, timed_out = _wait_entries(client, ids, len(set(ids)), timeout, True, "get")
    for e in entries.values():
        if e.error:
            raise client.load(e)
    if timed_out or len(entries) < len(set(ids)):
        raise GetTimeoutError(f"get timed out after {timeout} s: "
                              f"{len(set(ids)) - len(entries)} of {len(set(ids))} objects not ready")
    values = [client.load(entries[i]) for i in ids]
    return values[0] if single else values


def wait(object_refs: list, *, num_returns: int = 1, timeout: Optional[float] = None,
         fetch_local: bool = True) -> tuple[list, list]:
    """Split refs into (ready, not_ready) once `num_returns` are ready or
    `timeout` passes.  Both lists keep the input order; ready holds at most
    `num_returns` refs.  A failed task counts as ready."""
    if backend.active is not None:
        return backend.active.wait(object_refs, num_returns=num_returns, timeout=timeout,
                                   fetch_local=fetch_local)
    if isinstance(object_refs, ObjectRef) or not isinstance(object_refs, list):
        raise TypeError(f"wait() expected a list of ObjectRef, got {type(object_refs).__name__}")
    _check_timeout(timeout)
    for r in object_refs:
        if not isinstance(r, (ObjectRef, ObjectRefGenerator)):
            raise TypeError(f"wait() expected a list of ObjectRef or ObjectRefGenerator, got "
                            f"list containing {type(r).__name__}")
    if not object_refs:
        return [], []
    if len(object_refs) != len(set(object_refs)):
        raise ValueError("Wait requires a list of unique object refs.")
    if not isinstance(num_returns, int) or num_returns <= 0:
        raise ValueError(f"Invalid number of objects to return {num_returns}.")
    if num_returns > len(object_refs):
        raise ValueError("num_returns cannot be greater than the number of objects provided "
                         "to shoal.wait.")
    client = runtime.current().client
    if any(isinstance(r, ObjectRefGenerator) for r in object_refs):
        return _wait_with_generators(client, object_refs, num_returns, timeout)
    check_same_cluster(client, object_refs)
    entries, _ = _wait_entries(client, [r.id for r in object_refs], num_returns, timeout,
                               False, "wait")
    ready = [r for r in object_refs if r.id in entries][:num_returns]
    chosen = set(ready)
    return ready, [r for r in object_refs if r not in chosen]


def _wait_with_generators(client: Client, items: list, num_returns: int,
                          timeout: Optional[float]) -> tuple[list, list]:
    """wait() over refs and streaming generators, as Ray's: a generator is
    ready when its next ref can be taken without blocking, or it has ended."""
    refs = [r for r in items if isinstance(r, ObjectRef)]
    gens = [g for g in items if isinstance(g, ObjectRefGenerator)]
    check_same_cluster(client, refs)
    arrived = threading.Event()             # set by each arrival; the loop looks again
    callbacks = [client.when_ready(r.id, lambda entry: arrived.set()) for r in refs]
    for gen in gens:
        gen._watch(arrived, True)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            arrived.clear()
            ready = [r for r in items if (client.ready(r.id) if isinstance(r, ObjectRef)
                                          else r._has_next())][:num_returns]
            left = None if deadline is None else deadline - time.monotonic()
            if len(ready) >= num_returns or (left is not None and left <= 0):
                chosen = set(map(id, ready))
                return ready, [r for r in items if id(r) not in chosen]
            if client.lost:
                raise ClusterLostError(client.lost)
            with client._blocked():
                arrived.wait(left)
    finally:
        for cb in callbacks:
            client.forget(cb)
        for gen in gens:
            gen._watch(arrived, False)


# A blocking get/wait of at least this many refs that takes longer than this
# shows a progress bar when it runs in a notebook (as ipyparallel's %px does),
# or on stderr when that is a terminal (as tqdm would; SHOAL_PROGRESS=0: off).
AUTO_PROGRESS_AFTER = 2.0
AUTO_PROGRESS_MIN_REFS = 2


def _wait_entries(client: Client, ids: list, needed: int, timeout: Optional[float],
                  stop_on_error: bool, what: str) -> tuple[dict, bool]:
    """client.wait_entries, showing a progress bar (core.hooks) once a wait
    in a notebook's main thread has lasted AUTO_PROGRESS_AFTER seconds."""
    notebook = "ipykernel" in sys.modules
    if (len(ids) < AUTO_PROGRESS_MIN_REFS
            or not (notebook or terminal_progress.wanted(sys.stderr))
            or (timeout is not None and timeout <= AUTO_PROGRESS_AFTER)
            or threading.current_thread() is not threading.main_thread()):
        return client.wait_entries(ids, needed, timeout, stop_on_error)
    started = time.monotonic()
    entries, timed_out = client.wait_entries(ids, needed, AUTO_PROGRESS_AFTER, stop_on_error)
    if not timed_out:
        return entries, False
    if not notebook:                      # a terminal: a tqdm-style bar on stderr
        left = None if timeout is None else max(0.0, timeout - AUTO_PROGRESS_AFTER)
        with terminal_progress.TerminalProgress(ids, client.ready, f"shoal.{what}", sys.stderr,
                                                started):
            return client.wait_entries(ids, needed, left, stop_on_error)
    show = hooks.get(hooks.WAIT_PROGRESS)
    bar = show(client, ids, what) if show is not None else None
    left = None if timeout is None else max(0.0, timeout - AUTO_PROGRESS_AFTER)
    try:
        return client.wait_entries(ids, needed, left, stop_on_error)
    finally:
        if bar is not None:
            bar.settle_ready()


def cancel(ref: ObjectRef, *, force: bool = False, recursive: bool = True) -> None:
    """Cancel the task that makes `ref`.  A queued task never runs; a running
    one gets KeyboardInterrupt (or, with force=True, its engine is killed).
    `get` on its refs then raises TaskCancelledError.  Cancelled tasks are not
    retried.  With recursive=True the tasks it submitted are cancelled too."""
    if backend.active is not None:
        return backend.active.cancel(ref, force=force, recursive=recursive)
    if isinstance(ref, ObjectRefGenerator):
        ref = ref.completed()           # the generator's task
    if not isinstance(ref, ObjectRef):
        raise TypeError("shoal.cancel() only supported for object refs. For actors, try "
                        "shoal.kill().")
    client = runtime.current().client
    check_same_cluster(client, [ref])
    if force and is_actor_call(ref.id):
        raise ValueError("force=True is not supported for actor tasks (as in Ray): cancel "
                         "without force, or kill the actor with shoal.kill()")
    if client.came_direct(ref.id):
        # Its task has finished (the value is here): nothing happens, as in Ray.
        # The scheduler may not know yet, and would stop a finished task's engine.
        return
    client.send(m.CancelTask(object_id=ref.id, force=force, recursive=recursive))


def scale(num_engines: int, host_id: Optional[str] = None) -> None:
    """Set how many engines (and CPUs) a host runs; `host_id` may be left out
    when the cluster has one host.  Busy engines beyond the count stop when
    their task ends.  On Ray the count is the node's CPUs, asked of the
    autoscaler (request_resources); without one, NotImplementedError."""
    if not isinstance(num_engines, int) or isinstance(num_engines, bool) or num_engines < 0:
        raise ValueError(f"scale() takes a number of engines >= 0, not {num_engines!r}")
    backend.current().scale(num_engines, host_id)
