"""Remote functions: `@shoal.remote` on a function, `.remote()`, `.options()`."""
from __future__ import annotations

import hashlib
import inspect
import warnings
from typing import Any, Callable

import cloudpickle

from ..protocol import messages as m
from ..protocol.serialization import INLINE_LIMIT, dumps_function, serialize
from . import backend, leases, runtime, runtime_env
from .generator import GENERATOR_MODES, ObjectRefGenerator
from .object_ref import ObjectRef, check_same_cluster, owned_ref
from .placement_group import placement_of
from .options import COMMON_OPTIONS, TASK_OPTIONS, validate_task_options
from .signature import check_call, param_spec

TASK_DEFAULTS: dict[str, Any] = {
    "num_cpus": 1, "num_gpus": 0, "resources": None, "num_returns": 1,
    "max_retries": 3, "retry_exceptions": False, "name": None, "runtime_env": None,
    "_engine_id": None,     # shoal only: run on this engine (see shoal.util.state.list_engines)
}


def validate_resources(options: dict) -> None:
    """Ray's checks for the resource options shared by tasks, actors and init()."""
    for key in ("num_cpus", "num_gpus", "resources"):
        if key in options:
            COMMON_OPTIONS[key].validate(key, options[key])


def check_num_returns(n) -> None:
    """TypeError/ValueError unless `n` is a num_returns Ray accepts."""
    TASK_OPTIONS["num_returns"].validate("num_returns", n)


def default_num_returns(fn) -> object:
    """Ray's default: a generator function streams its items, others return one value."""
    return "streaming" if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn) else 1


def resource_request(options: dict) -> dict:
    request = {"CPU": float(options.get("num_cpus", 1) or 0),
               "GPU": float(options.get("num_gpus", 0) or 0)}
    request.update({k: float(v) for k, v in (options.get("resources") or {}).items()})
    if options.get("memory"):            # bytes, a logical resource each host declares (Ray)
        request["memory"] = float(options["memory"])
    return {k: v for k, v in request.items() if v}


class RemoteFunction:
    """What `@shoal.remote` makes of a function.  Call `.remote(...)` to run it."""

    def __init__(self, fn: Callable, options: dict) -> None:
        if inspect.iscoroutinefunction(fn):
            raise ValueError("'async def' should not be used for remote tasks. You can wrap the "
                             "async function with `asyncio.run(f())`, or make it a method of an "
                             "actor (async actors run coroutines).")
        self._function = fn
        self._options = {**TASK_DEFAULTS, "num_returns": default_num_returns(fn),
                         **validate_task_options(dict(options))}
        self._params = param_spec(fn)
        self._name = self._options["name"] or getattr(fn, "__name__", repr(fn))
        self._blob: bytes | None = None
        self._func_id: str | None = None
        self._captures_refs = False         # its code holds refs (see _ship)
        self._constants = None              # see _call_constants
        self._env_wire = None               # the runtime_env option, uploaded (once)
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", self._name)
        self.__wrapped__ = fn

    def __call__(self, *args, **kwargs):
        raise TypeError(f"Remote functions cannot be called directly. Instead of running "
                        f"'{self.__name__}()', try '{self.__name__}.remote()'.")

    def options(self, **options) -> "RemoteFunction":
        """A copy of this remote function with some options changed."""
        validate_task_options(dict(options), in_options=True)
        clone = RemoteFunction.__new__(RemoteFunction)
        clone.__dict__.update(self.__dict__)
        clone._options = {**self._options, **options}
        clone._name = clone._options["name"] or self._name
        clone._constants = None
        if "runtime_env" in options:
            clone._env_wire = None
        return clone

    def bind(self, *args, **kwargs):
        raise NotImplementedError("Ray's DAG API (.bind) is not supported by shoal: call "
                                  ".remote() instead (see docs/ray-compatibility.md)")

    def _ship(self) -> tuple[str, bytes]:
        if self._blob is None:
            captured: list = []
            self._func_id, self._blob = ship(self._function, captured)
            # An engine looks up what it captures through the scheduler: not
            # sent straight, ahead of a put the scheduler may not have yet.
            self._captures_refs = bool(captured)
        return self._func_id, self._blob

    def _call_constants(self) -> tuple:
        """What every call of this function (with these options) shares, made
        once: its id, retry policy and resource request.  The id names the code
        and the retry policy together, so both go to the scheduler once per
        driver and to an engine once; each task only names the id."""
        if self._constants is None:
            code_id, _ = self._ship()
            retry = self._options["retry_exceptions"]
            policy = cloudpickle.dumps(list(retry) if not isinstance(retry, bool) else retry) \
                if retry else None
            func_id = code_id if policy is None else \
                f"{code_id}.{hashlib.sha1(policy).hexdigest()[:8]}"
            self._constants = (func_id, policy, resource_request(self._options))
        return self._constants

    def remote(self, *args, **kwargs):
        check_call(self._params, self.__name__, args, kwargs)
        foreign = backend.foreign()
        if foreign is not None:
            return foreign.submit_task(self, args, kwargs)
        client = runtime.current().client
        _, blob = self._ship()
        func_id, policy, resources = self._call_constants()
        opts = self._options
        task_id = client.new_id("t")
        n = opts["num_returns"]
        if n is None:                    # Ray's None: the default for this function
            n = default_num_returns(self._function)
        generator = n if n in GENERATOR_MODES else None
        return_ids = [f"{task_id}/0"] if generator else [f"{task_id}/{i}" for i in range(n)]
        args_blob, deps, nested, extra_puts, keep = pack_arguments(client, args, kwargs)
        job, env, placement = runtime.job(), self._runtime_env(client), placement_of(opts)
        max_calls, engine_id = opts.get("max_calls") or 0, opts["_engine_id"]
        # A plain task goes straight to an engine this driver leases, if one waits.
        routed = client.leases.route(task_id, func_id, blob, policy, self._name, args_blob,
                                     return_ids, job, env) \
            if client.leases is not None and client.leases.held and not self._captures_refs \
            and leases.eligible(
                deps, nested, extra_puts, generator, resources, placement, engine_id,
                max_calls, env) else None
        spec = m.SubmitTask(
            task_id=task_id, func_id=func_id, name=self._name, args=args_blob, deps=deps,
            nested=nested, return_ids=return_ids, resources=resources,
            max_retries=opts["max_retries"], parent_task_id=client.current_task_id,
            engine_id=engine_id, generator=generator, job=job, runtime_env=env,
            placement=placement, max_calls=max_calls,
            direct_to=routed[0].engine_id if routed else None)
        # Make the return refs (and a generator's stream) before sending, so a
        # fast result finds its holder.
        result = returned(client, task_id, generator,
                          [owned_ref(client, oid) for oid in return_ids])
        client.remember_context(task_id)
        try:
            client.submit(*client.register_function(func_id, self._name, blob, policy),
                          *extra_puts, spec, straight=routed[1:] if routed else None,
                          lease=routed[0] if routed else None)
        except BaseException:
            if routed:                   # it never went: the leased engine waits still
                client.leases.unsent(routed[0], task_id)
            raise
        del keep        # only now may the auto-put refs go: the submission pins them
        return result

    def _runtime_env(self, client):
        if self._options["runtime_env"] and self._env_wire is None:
            self._env_wire = runtime_env.resolve(client, self._options["runtime_env"])
        return runtime_env.merge(inherited_env(), self._env_wire)

    def __repr__(self) -> str:
        return f"<shoal remote function {self._name}>"


def inherited_env():
    """The runtime_env a new task starts from: its parent task's, or the job's (Ray)."""
    msg = runtime.current_task.get()
    if msg is not None and msg.method in (None, "__init__"):
        return msg.runtime_env          # an actor's method calls: its env, kept below
    rt = runtime.current_or_none()
    return rt.runtime_env if rt is not None else None


def returned(client, task_id: str, generator, refs: list):
    """What `.remote()` gives back: None, a ref, a list of refs, or a generator
    (made before the submission is sent: its first items may come at once)."""
    if generator == "streaming":
        return ObjectRefGenerator(client, task_id, refs[0])
    if not refs:
        return None
    return refs[0] if len(refs) == 1 else refs


# As Ray: a function or class this large has captured data it should not carry.
FUNCTION_SIZE_WARN_THRESHOLD = 10_000_000
FUNCTION_SIZE_ERROR_THRESHOLD = 60_000_000     # under the protocol's 64 MiB message limit


def ship(obj, refs: list | None = None) -> tuple[str, bytes]:
    """(id, pickled bytes) of a function or class: the id names the exact code,
    so a redefined function in a notebook is a new one to the engines.  Raises
    ValueError (naming the size) for one too large to send, as Ray does."""
    blob = dumps_function(obj, refs)
    size = len(blob)
    if size > FUNCTION_SIZE_WARN_THRESHOLD:
        what = (f"The {'actor class' if isinstance(obj, type) else 'remote function'} "
                f"{getattr(obj, '__qualname__', repr(obj))}")
        advice = ("Check that its definition is not implicitly capturing a large array or "
                  "other object in scope. Tip: use shoal.put() to put large objects in the "
                  "object store and pass the ref as an argument.")
        if size > FUNCTION_SIZE_ERROR_THRESHOLD:
            raise ValueError(f"{what} is too large ({size / 2**20:.1f} MiB > "
                             f"FUNCTION_SIZE_ERROR_THRESHOLD="
                             f"{FUNCTION_SIZE_ERROR_THRESHOLD / 2**20:.1f} MiB). {advice}")
        warnings.warn(f"{what} is {size / 2**20:.1f} MiB pickled. {advice}", UserWarning,
                      stacklevel=3)
    return hashlib.sha1(blob).hexdigest()[:16], blob


def pack_arguments(client, args: tuple, kwargs: dict):
    """Serialize a call's arguments.  Top-level refs become dependencies the
    scheduler resolves first; large values go to the object store once, by
    reference, as Ray does.  Returns (packed args, deps, nested ids, PutObject
    msgs, refs the caller must keep until it has sent the submission).

    Each argument is serialized once: one that is plainly large (an array,
    bytes, a string) by itself, straight into the store; the rest together.
    Only when the rest still comes out large (big containers) are they
    serialized one by one to find the large ones."""
    puts: list = []
    keep: list = []
    store = client.store is not None
    big = _plainly_large(args, kwargs) if store else ()
    value = None
    if not big:
        value = serialize((args, kwargs))
        if value.size >= INLINE_LIMIT and store:
            big = [(w, k) for w, k in _positions(args, kwargs)
                   if type((args if w == "args" else kwargs)[k]) is not ObjectRef]
    if big:
        args, kwargs = list(args), dict(kwargs)
        containers = {"args": args, "kwargs": kwargs}
        for where, k in big:
            container = containers[where]
            s = serialize(container[k])
            if s.size >= INLINE_LIMIT:
                oid = client.new_id("a")
                puts.append(m.PutObject(entry=client.store_value(oid, s), nested=s.nested))
                container[k] = owned_ref(client, oid)
                keep.append(container[k])
        value = serialize((tuple(args), kwargs))
    top_refs = [a for a in (*args, *kwargs.values()) if type(a) is ObjectRef]
    check_same_cluster(client, top_refs)
    deps = [a.id for a in top_refs]
    top = set(deps)
    nested = [i for i in value.nested if i not in top]
    return value.packed(), deps, nested, puts, keep


def _positions(args, kwargs):
    return [*(("args", i) for i in range(len(args))), *(("kwargs", k) for k in kwargs)]


def _plainly_large(args, kwargs) -> list:
    """Positions of arguments whose size shows without serializing them
    (buffers such as numpy arrays, bytes, strings) and is over the inline limit."""
    found = [("args", i) for i, a in enumerate(args) if _obvious_size(a) >= INLINE_LIMIT]
    if kwargs:
        found += [("kwargs", k) for k, v in kwargs.items() if _obvious_size(v) >= INLINE_LIMIT]
    return found


def _obvious_size(item) -> int:
    t = type(item)
    if t is bytes or t is str or t is bytearray:
        return len(item)
    if hasattr(t, "nbytes"):          # the class's, so no instance __getattr__ runs
        try:
            size = item.nbytes
        except Exception:             # a guess only: serializing will tell
            return 0
        return size if type(size) is int else 0
    return 0
