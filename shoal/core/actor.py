"""Actors: `@shoal.remote` on a class, handles, method calls, get_actor, kill."""
from __future__ import annotations

import inspect
from typing import Any

from ..exceptions import ActorAlreadyExistsError, PendingCallsLimitExceeded
from ..protocol import messages as m
from ..protocol.serialization import note_ref
from . import backend, direct_calls, runtime, runtime_env
from .object_ref import owned_ref
from .placement_group import placement_of
from .generator import GENERATOR_MODES
from .options import METHOD_OPTIONS as METHOD_OPTION_TABLE
from .options import validate_actor_options, validate_method_options
from .remote_function import (
    default_num_returns, inherited_env, pack_arguments, resource_request, returned, ship,
)
from .signature import check_call, constructor_spec, method_spec

ACTOR_DEFAULTS: dict[str, Any] = {
    "num_cpus": None, "num_gpus": None, "resources": None, "name": None, "namespace": None,
    "get_if_exists": False, "lifetime": None, "max_restarts": 0, "max_task_retries": 0,
    "max_concurrency": None, "max_pending_calls": -1, "runtime_env": None,
}
METHOD_OPTIONS = "__shoal_method_options__"


def method(*args, **options):
    """Options for one actor method: `@shoal.method(num_returns=2)` (or
    "streaming" / "dynamic" for a generator method)."""
    if args or not options:
        raise TypeError("The @shoal.method decorator must be applied using at least one of the "
                        f"arguments in the list {[k for k in METHOD_OPTION_TABLE if k[0] != '_']}, "
                        "for example '@shoal.method(num_returns=2)'.")
    validate_method_options(options)

    def decorate(fn):
        setattr(fn, METHOD_OPTIONS, dict(options))
        return fn
    return decorate


def is_actor_call(object_id: str) -> bool:
    """Whether a ref is the result of an actor method call (its task id says so)."""
    return object_id.rpartition("/")[0].rpartition(".")[2][:1] == "c"


def _methods(cls: type) -> dict:
    """Public method names of a class -> their num_returns."""
    out = {}
    for name, member in inspect.getmembers(cls, callable):
        if name.startswith("__") or isinstance(member, type):
            continue
        out[name] = getattr(member, METHOD_OPTIONS, {}).get("num_returns",
                                                            default_num_returns(member))
    return out


def _signatures(cls: type, methods) -> dict:
    """Each method's parameters (and the constructor's, under "__init__")."""
    specs = {name: method_spec(cls, name) for name in methods}
    specs["__init__"] = constructor_spec(cls)
    return specs


class ActorClass:
    """What `@shoal.remote` makes of a class.  `Cls.remote(...)` starts an actor.

    As in Ray, the object is an instance of a class derived from both
    ActorClass and the user's class, so the user's class attributes, static
    methods and class methods (inherited ones too) read through it, and
    dir() shows them next to remote/options.  The user's instance hooks
    (__setattr__, __eq__, __hash__, __del__, __bool__, pickling) are ActorClass's.
    """

    def __new__(cls, user_cls=None, options=None):
        if cls is ActorClass and isinstance(user_cls, type):
            derived = _derived_class(user_cls)
            if derived is not None:
                try:
                    return object.__new__(derived)
                except TypeError:        # a builtin or abstract base: no derived class
                    pass
        return object.__new__(cls)

    __setattr__ = object.__setattr__
    __getattribute__ = object.__getattribute__
    __eq__ = object.__eq__
    __hash__ = object.__hash__

    def __bool__(self) -> bool:
        return True

    def __del__(self) -> None:
        pass                             # not the user's __del__: no instance was made here

    def __reduce__(self):
        return (_rebuild_actor_class, (self._cls, self._options))

    def __reduce_ex__(self, protocol):
        return self.__reduce__()

    def bind(self, *args, **kwargs):
        raise NotImplementedError(_NO_DAG)

    def __init__(self, cls: type, options: dict) -> None:
        self._cls = cls
        self._options = {**ACTOR_DEFAULTS, **validate_actor_options(dict(options))}
        self._methods = _methods(cls)
        self._signatures = _signatures(cls, self._methods)
        self._method_groups = {name: group for name in self._methods
                               if (group := getattr(getattr(cls, name, None), METHOD_OPTIONS,
                                                    {}).get("concurrency_group"))}
        self._methods_async = any(inspect.iscoroutinefunction(getattr(cls, name, None))
                                  for name in self._methods)
        self._shipped: tuple[str, bytes] | None = None
        self.__name__ = cls.__name__
        self.__doc__ = cls.__doc__

    def __call__(self, *args, **kwargs):
        raise TypeError(f"Actors cannot be instantiated directly. Instead of "
                        f"'{self.__name__}()', use '{self.__name__}.remote()'.")

    def options(self, **options) -> "ActorClass":
        validate_actor_options(dict(options), in_options=True)
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone._options = {**self._options, **options}
        validate_actor_options(clone._options)
        return clone

    def _ship(self) -> tuple[str, bytes]:
        if self._shipped is None:
            self._shipped = ship(self._cls)
        return self._shipped

    def remote(self, *args, **kwargs) -> "ActorHandle":
        check_call(self._signatures["__init__"], self.__name__, args, kwargs)
        foreign = backend.foreign()
        if foreign is not None:
            return foreign.create_actor(self, args, kwargs)
        rt = runtime.current()
        client = rt.client
        opts = self._options
        namespace = opts["namespace"] or runtime.job()[1]
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
        if opts["num_cpus"] is not None or opts["num_gpus"] is not None or opts["resources"] \
                or opts.get("memory"):
            held = resource_request({"num_cpus": opts["num_cpus"] or 0,
                                     "num_gpus": opts["num_gpus"] or 0,
                                     "resources": opts["resources"],
                                     "memory": opts.get("memory")})
        schedule = held or {"CPU": 1.0}        # 1 CPU to place, none held unless asked (Ray)
        concurrency = _concurrency(opts["max_concurrency"], opts.get("concurrency_groups"),
                                   self._methods_async)
        actor_options = {
            "class_name": self.__name__, "name": opts["name"], "namespace": namespace,
            "detached": opts["lifetime"] == "detached", "max_restarts": opts["max_restarts"],
            "max_task_retries": opts["max_task_retries"], "max_concurrency": concurrency,
            "max_pending_calls": opts["max_pending_calls"], "held_resources": held,
            "methods": self._methods, "signatures": self._signatures,
            "concurrency_groups": _groups(opts.get("concurrency_groups"), self._method_groups),
            "method_groups": self._method_groups,
        }
        args_blob, deps, nested, puts, keep = pack_arguments(client, args, kwargs)
        spec = m.SubmitTask(
            task_id=f"{actor_id}.init", func_id=func_id, name=f"{self.__name__}.__init__",
            args=args_blob, deps=deps, nested=nested, return_ids=[f"{actor_id}/created"],
            resources=schedule, max_retries=0, actor_id=actor_id, method="__init__",
            actor_options=actor_options, job=runtime.job(), runtime_env=runtime_env.merge(
                inherited_env(), runtime_env.resolve(client, opts["runtime_env"])),
            placement=placement_of(opts))
        client.own(actor_id)
        handle = ActorHandle(actor_id, actor_options, client)
        client.submit(*client.register_function(func_id, self.__name__, blob), *puts, spec)
        del keep
        return handle

    def __repr__(self) -> str:
        return f"<shoal actor class {self.__name__}>"


_NO_DAG = ("Ray's DAG API (.bind) is not supported by shoal: call .remote() instead "
           "(see docs/ray-compatibility.md)")


def _groups(groups, method_groups: dict) -> dict:
    """The actor's concurrency groups ({name: max calls at once}), checked
    against the groups its methods name (Ray raises at creation too)."""
    groups = dict(groups or {})
    unknown = sorted(set(method_groups.values()) - set(groups))
    if unknown:
        raise ValueError(f"concurrency group {unknown[0]!r} is used by a method but not "
                         f"defined; the actor defines {sorted(groups) or 'none'} "
                         f"(concurrency_groups={{...}} in @remote)")
    return groups


def _concurrency(max_concurrency, groups, is_async: bool):
    """How many calls the scheduler lets the actor run at once: room for the
    default group (max_concurrency) and every concurrency group together; the
    engine holds each group to its own limit (engine.ConcurrencyGroups)."""
    if not groups:
        return max_concurrency
    if max_concurrency is None and is_async:
        return None                      # an async actor's default (1000) covers them
    return (max_concurrency or 1) + sum(groups.values())


def _derived_class(user_cls: type):
    """ActorClass(Name): ActorClass first, then the user's class; None when
    Python refuses the combination (e.g. an __init_subclass__ that objects)."""
    name = f"ActorClass({user_cls.__name__})"
    namespace = {"__module__": user_cls.__module__, "__qualname__": name,
                 "__doc__": user_cls.__doc__}
    # Static methods read through wrappers: were `module.Name.f` the function
    # itself, cloudpickle would ship it by reference, to engines that may not
    # import the user's module.
    for klass in reversed(user_cls.__mro__):
        for attr, member in vars(klass).items():
            if isinstance(member, staticmethod) and not attr.startswith("__") \
                    and not hasattr(ActorClass, attr):
                namespace[attr] = staticmethod(_static_wrapper(member.__func__, name))
    try:
        return type(user_cls)(name, (ActorClass, user_cls), namespace)
    except Exception:
        return None


def _static_wrapper(fn, owner: str):
    def call(*args, **kwargs):
        return fn(*args, **kwargs)
    call.__name__, call.__doc__, call.__wrapped__ = fn.__name__, fn.__doc__, fn
    call.__qualname__ = f"{owner}.{fn.__name__}"
    return call


def _rebuild_actor_class(cls: type, options: dict) -> ActorClass:
    clone = ActorClass(cls, {})
    clone._options = options
    return clone


class ActorMethod:
    """`handle.method`: call it with `.remote(...)`."""

    def __init__(self, handle: "ActorHandle", name: str, num_returns: int,
                 concurrency_group: str | None = None) -> None:
        self._handle = handle
        self._name = name
        self._num_returns = num_returns
        self._group = concurrency_group

    def __call__(self, *args, **kwargs):
        raise TypeError(f"Actor methods cannot be called directly. Instead of running "
                        f"'object.{self._name}()', try 'object.{self._name}.remote()'.")

    def options(self, **options) -> "ActorMethod":
        validate_method_options(options)
        num_returns = options.get("num_returns")
        group = options.get("concurrency_group", self._group)
        if group is not None and group not in self._handle._options.get("concurrency_groups", {}):
            raise ValueError(f"concurrency group {group!r} is not defined by the actor "
                             f"{self._handle._options['class_name']}")
        return ActorMethod(self._handle, self._name,
                           self._num_returns if num_returns is None else num_returns, group)

    def bind(self, *args, **kwargs):
        raise NotImplementedError(_NO_DAG)

    def remote(self, *args, **kwargs):
        handle = self._handle
        spec = handle._options.get("signatures", {}).get(self._name)
        check_call(spec, f"{handle._options['class_name']}.{self._name}", args, kwargs)
        return handle._call(self._name, self._num_returns, args, kwargs, self._group)


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

    def _call(self, method_name: str, num_returns: int, args: tuple, kwargs: dict,
              concurrency_group: str | None = None):
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
        name = f"{self._options['class_name']}.{method_name}"
        result = returned(client, task_id, generator,
                          [owned_ref(client, oid) for oid in return_ids])
        client.remember_context(task_id)
        straight = direct_to = None
        if client.direct_calls is not None:
            target = client.direct_calls.route(
                self._actor_id, return_ids,
                direct_calls.eligible(deps, nested, generator) and not puts)
            if target is not None:
                straight = (target[0], direct_calls.call_message(
                    task_id, name, args_blob, return_ids, method_name, concurrency_group))
                direct_to = target[1]
        spec = m.SubmitTask(
            task_id=task_id, func_id=None, name=name,
            args=args_blob, deps=deps, nested=nested, return_ids=return_ids, resources={},
            max_retries=0, parent_task_id=client.current_task_id, actor_id=self._actor_id,
            method=method_name, generator=generator, concurrency_group=concurrency_group,
            direct_to=direct_to)
        client.submit(*puts, spec, straight=straight)
        del keep
        if limit != -1:
            self._pending.update(return_ids)
        return result

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


    # Ray's built-in methods of every actor.
    __ray_ready__ = property(lambda self: ActorMethod(self, "__ray_ready__", 1))
    __ray_terminate__ = property(lambda self: ActorMethod(self, "__ray_terminate__", 1))


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
    foreign = backend.foreign()
    if foreign is not None:
        return foreign.get_actor(name, namespace)
    rt = runtime.current()
    info = rt.client.query("get_actor", name=name, namespace=namespace or runtime.job()[1])
    rt.client.adopt(info["actor_id"])
    return ActorHandle(info["actor_id"], info["options"], rt.client)


def kill(actor: ActorHandle, *, no_restart: bool = True) -> None:
    """Kill an actor at once: running and pending calls fail with
    ActorDiedError.  With no_restart=False it restarts if max_restarts allows."""
    if backend.active is not None:
        return backend.active.kill(actor, no_restart=no_restart)
    if not isinstance(actor, ActorHandle):
        raise TypeError("shoal.kill() only supported for actors. For tasks, try shoal.cancel(). "
                        f"Got {type(actor).__name__}.")
    client = runtime.current().client
    if client.direct_calls is not None:
        client.direct_calls.killed(actor._actor_id, restarts=not no_restart)
    client.send(m.KillActor(actor_id=actor._actor_id, no_restart=no_restart))


def exit_actor(*, reason: str = "it exited with shoal.actor.exit_actor()") -> None:
    """Inside an actor: stop it now, for good (no restart).  The call that
    runs this and every call still queued fail with ActorDiedError, as in Ray.
    Raises SystemExit (AsyncioActorExit in an async method) to leave the call."""
    rt = runtime.current_or_none()
    client = rt.client if rt is not None else None
    if client is None or client.actor_id is None:
        raise TypeError("exit_actor API is called on a non-actor worker: call it only inside "
                        "an actor's methods (use shoal.kill(handle) from outside)")
    client.send(m.KillActor(actor_id=client.actor_id, no_restart=True, reason=reason))
    try:
        import asyncio
        asyncio.get_running_loop()
    except RuntimeError:
        raise SystemExit(0) from None
    from ..exceptions import AsyncioActorExit
    raise AsyncioActorExit(reason)


def list_actors() -> list[dict]:
    """Every actor the cluster knows: id, class, name, state, engine, host, restarts."""
    return backend.current().list_actors()
