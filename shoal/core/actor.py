"""Actors: `@shoal.remote` on a class, handles, method calls, get_actor, kill."""
from __future__ import annotations

import inspect
from typing import Any

from ..exceptions import ActorAlreadyExistsError, PendingCallsLimitExceeded
from ..protocol import messages as m
from ..protocol.serialization import note_ref
from . import runtime
from .object_ref import owned_ref
from .generator import GENERATOR_MODES
from .remote_function import (
    check_num_returns, default_num_returns, pack_arguments, resource_request, returned, ship,
    validate_resources,
)

ACTOR_DEFAULTS: dict[str, Any] = {
    "num_cpus": None, "num_gpus": None, "resources": None, "name": None, "namespace": None,
    "get_if_exists": False, "lifetime": None, "max_restarts": 0, "max_task_retries": 0,
    "max_concurrency": None, "max_pending_calls": -1,
}
METHOD_OPTIONS = "__shoal_method_options__"


def method(*, num_returns=None):
    """Options for one actor method: `@shoal.method(num_returns=2)` (or
    "streaming" / "dynamic" for a generator method)."""
    if num_returns is not None:
        check_num_returns(num_returns)

    def decorate(fn):
        n = default_num_returns(fn) if num_returns is None else num_returns
        setattr(fn, METHOD_OPTIONS, {"num_returns": n})
        return fn
    return decorate


def validate_actor_options(options: dict) -> dict:
    unknown = sorted(set(options) - set(ACTOR_DEFAULTS))
    if unknown:
        raise ValueError(f"Invalid option keyword {unknown[0]!r} for actors. "
                         f"Valid ones are {sorted(ACTOR_DEFAULTS)}.")
    validate_resources(options)
    for key, low in (("max_restarts", -1), ("max_task_retries", -1), ("max_pending_calls", -1)):
        value = options.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"'{key}' must be an integer >= {low}, got {value!r}")
    concurrency = options.get("max_concurrency")
    if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
        raise ValueError(f"'max_concurrency' must be a positive integer, got {concurrency!r}")
    if options.get("lifetime") not in (None, "detached", "non_detached"):
        raise ValueError("'lifetime' must be None, 'detached' or 'non_detached', got "
                         f"{options['lifetime']!r}")
    name = options.get("name")
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError(f"'name' must be a non-empty string, got {name!r}")
    if options.get("get_if_exists") and not name:
        raise ValueError("get_if_exists=True needs a name for the actor")
    return options


def _methods(cls: type) -> dict:
    """Public method names of a class -> their num_returns."""
    out = {}
    for name, member in inspect.getmembers(cls, callable):
        if name.startswith("__") or isinstance(member, type):
            continue
        out[name] = getattr(member, METHOD_OPTIONS, {}).get("num_returns",
                                                            default_num_returns(member))
    return out


class ActorClass:
    """What `@shoal.remote` makes of a class.  `Cls.remote(...)` starts an actor."""

    def __init__(self, cls: type, options: dict) -> None:
        self._cls = cls
        self._options = {**ACTOR_DEFAULTS, **validate_actor_options(dict(options))}
        self._methods = _methods(cls)
        self._shipped: tuple[str, bytes] | None = None
        self.__name__ = cls.__name__
        self.__doc__ = cls.__doc__

    def __call__(self, *args, **kwargs):
        raise TypeError(f"Actors cannot be instantiated directly. Instead of "
                        f"'{self.__name__}()', use '{self.__name__}.remote()'.")

    def options(self, **options) -> "ActorClass":
        validate_actor_options(dict(options))
        clone = ActorClass.__new__(ActorClass)
        clone.__dict__.update(self.__dict__)
        clone._options = validate_actor_options({**self._options, **options})
        return clone

    def _ship(self) -> tuple[str, bytes]:
        if self._shipped is None:
            self._shipped = ship(self._cls)
        return self._shipped

    def remote(self, *args, **kwargs) -> "ActorHandle":
        rt = runtime.current()
        client = rt.client
        opts = self._options
        namespace = opts["namespace"] or rt.namespace or "default"
        if opts["name"]:
            existing = _lookup(client, opts["name"], namespace)
            if existing is not None:
                if opts["get_if_exists"]:
                    return existing
                raise ActorAlreadyExistsError(
                    f"The name {opts['name']} (namespace={namespace}) is already taken. Use "
                    f"another name, or get the existing actor with "
                    f"shoal.get_actor({opts['name']!r}, namespace={namespace!r}).")
        func_id, blob = self._ship()
        actor_id = client.new_id("A")
        held = {}
        if opts["num_cpus"] is not None or opts["num_gpus"] is not None or opts["resources"]:
            held = resource_request({"num_cpus": opts["num_cpus"] or 0,
                                     "num_gpus": opts["num_gpus"] or 0,
                                     "resources": opts["resources"]})
        schedule = held or {"CPU": 1.0}        # 1 CPU to place, none held unless asked (Ray)
        concurrency = opts["max_concurrency"]
        actor_options = {
            "class_name": self.__name__, "name": opts["name"], "namespace": namespace,
            "detached": opts["lifetime"] == "detached", "max_restarts": opts["max_restarts"],
            "max_task_retries": opts["max_task_retries"], "max_concurrency": concurrency,
            "max_pending_calls": opts["max_pending_calls"], "held_resources": held,
            "methods": self._methods,
        }
        args_blob, deps, nested, puts, keep = pack_arguments(client, args, kwargs)
        spec = m.SubmitTask(
            task_id=f"{actor_id}.init", func_id=func_id, name=f"{self.__name__}.__init__",
            args=args_blob, deps=deps, nested=nested, return_ids=[f"{actor_id}/created"],
            resources=schedule, max_retries=0, actor_id=actor_id, method="__init__",
            actor_options=actor_options)
        client.own(actor_id)
        handle = ActorHandle(actor_id, actor_options, client)
        client.send(*client.register_function(func_id, self.__name__, blob), *puts, spec)
        del keep
        return handle

    def __repr__(self) -> str:
        return f"<shoal actor class {self.__name__}>"


class ActorMethod:
    """`handle.method`: call it with `.remote(...)`."""

    def __init__(self, handle: "ActorHandle", name: str, num_returns: int) -> None:
        self._handle = handle
        self._name = name
        self._num_returns = num_returns

    def __call__(self, *args, **kwargs):
        raise TypeError(f"Actor methods cannot be called directly. Instead of running "
                        f"'object.{self._name}()', try 'object.{self._name}.remote()'.")

    def options(self, *, num_returns=None, name: str | None = None) -> "ActorMethod":
        if num_returns is not None:
            check_num_returns(num_returns)
        clone = ActorMethod(self._handle, self._name,
                            self._num_returns if num_returns is None else num_returns)
        return clone

    def remote(self, *args, **kwargs):
        return self._handle._call(self._name, self._num_returns, args, kwargs)


class ActorHandle:
    """A handle to a running actor: call its methods with `.method.remote()`.
    Handles can be passed to tasks and other actors; a non-detached actor
    lives while any handle to it exists, anywhere in the cluster."""

    def __new__(cls, actor_id: str, options: dict, client):
        # One subclass per actor class, with a property per method: `handle.incr`
        # is explicit and introspectable, and no handle<->method cycle delays
        # the handle's release when the user drops it.
        key = (options["class_name"], tuple(sorted(options["methods"].items())))
        sub = _HANDLE_CLASSES.get(key)
        if sub is None:
            props = {name: property(lambda self, name=name, n=n: ActorMethod(self, name, n))
                     for name, n in options["methods"].items()}
            sub = _HANDLE_CLASSES[key] = type(f"ActorHandle[{options['class_name']}]",
                                              (ActorHandle,), props)
        return object.__new__(sub)

    def __init__(self, actor_id: str, options: dict, client) -> None:
        self._actor_id = actor_id
        self._options = options
        self._client = client
        self._pending: set = set()

    def _call(self, method_name: str, num_returns: int, args: tuple, kwargs: dict):
        client = self._client
        limit = self._options.get("max_pending_calls", -1)
        if limit != -1 and len(self._pending) >= limit:
            self._pending = {i for i in self._pending if client.holds(i) and not client.ready(i)}
            if len(self._pending) >= limit:
                raise PendingCallsLimitExceeded(
                    f"the actor {self._options['class_name']} ({self._actor_id}) already has "
                    f"{len(self._pending)} pending calls from this handle "
                    f"(max_pending_calls={limit}); get some results first")
        task_id = client.new_id("c")        # "c": an actor call (see cancel)
        generator = num_returns if num_returns in GENERATOR_MODES else None
        return_ids = [f"{task_id}/0"] if generator else [f"{task_id}/{i}" for i in range(num_returns)]
        args_blob, deps, nested, puts, keep = pack_arguments(client, args, kwargs)
        spec = m.SubmitTask(
            task_id=task_id, func_id=None, name=f"{self._options['class_name']}.{method_name}",
            args=args_blob, deps=deps, nested=nested, return_ids=return_ids, resources={},
            max_retries=0, parent_task_id=client.current_task_id, actor_id=self._actor_id,
            method=method_name, generator=generator)
        refs = [owned_ref(client, oid) for oid in return_ids]
        client.remember_context(task_id)
        client.send(*puts, spec)
        del keep
        if limit != -1:
            self._pending.update(return_ids)
        return returned(client, task_id, generator, refs)

    def __reduce__(self):
        note_ref(self._actor_id)
        return (_rebuild_handle, (self._actor_id, self._options))

    def __del__(self) -> None:
        client = self._client
        if client is not None:
            try:
                client.release(self._actor_id)
            except Exception:
                pass

    def __eq__(self, other) -> bool:
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __hash__(self) -> int:
        return hash(self._actor_id)

    def __repr__(self) -> str:
        name = f", name={self._options['name']!r}" if self._options.get("name") else ""
        return f"Actor({self._options['class_name']}, {self._actor_id}{name})"


_HANDLE_CLASSES: dict = {}


def _rebuild_handle(actor_id: str, options: dict) -> ActorHandle:
    client = runtime.current().client
    client.adopt(actor_id)
    return ActorHandle(actor_id, options, client)


def _lookup(client, name: str, namespace: str) -> ActorHandle | None:
    try:
        info = client.query("get_actor", name=name, namespace=namespace)
    except ValueError:
        return None
    client.adopt(info["actor_id"])
    return ActorHandle(info["actor_id"], info["options"], client)


def get_actor(name: str, namespace: str | None = None) -> ActorHandle:
    """A handle to the live actor with this name; ValueError if there is none."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"get_actor needs a non-empty name, got {name!r}")
    rt = runtime.current()
    info = rt.client.query("get_actor", name=name, namespace=namespace or rt.namespace or "default")
    rt.client.adopt(info["actor_id"])
    return ActorHandle(info["actor_id"], info["options"], rt.client)


def kill(actor: ActorHandle, *, no_restart: bool = True) -> None:
    """Kill an actor at once: running and pending calls fail with
    ActorDiedError.  With no_restart=False it restarts if max_restarts allows."""
    if not isinstance(actor, ActorHandle):
        raise TypeError("shoal.kill() only supported for actors. For tasks, try shoal.cancel(). "
                        f"Got {type(actor).__name__}.")
    runtime.current().client.send(m.KillActor(actor_id=actor._actor_id, no_restart=no_restart))


def list_actors() -> list[dict]:
    """Every actor the cluster knows: id, class, name, state, engine, host, restarts."""
    return runtime.current().client.query("list_actors")
