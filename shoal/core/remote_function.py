"""Remote functions: `@shoal.remote` on a function, `.remote()`, `.options()`."""
from __future__ import annotations

import hashlib
import inspect
import numbers
import warnings
from typing import Any, Callable

import cloudpickle

from ..protocol import messages as m
from ..protocol.serialization import INLINE_LIMIT, dumps_function, serialize
from . import runtime
from .generator import GENERATOR_MODES, ObjectRefGenerator
from .object_ref import ObjectRef, owned_ref

TASK_DEFAULTS: dict[str, Any] = {
    "num_cpus": 1, "num_gpus": 0, "resources": None, "num_returns": 1,
    "max_retries": 3, "retry_exceptions": False, "name": None,
    "_engine_id": None,     # shoal only: run on this engine (see shoal.util.state.list_engines)
}


def validate_resources(options: dict) -> None:
    """Ray's checks for the resource options shared by tasks and actors."""
    for key in ("num_cpus", "num_gpus"):
        value = options.get(key)
        if value is not None and (not isinstance(value, numbers.Real) or isinstance(value, bool)
                                  or value < 0):
            raise ValueError(f"'{key}' must be a non-negative number, got {value!r}")
    resources = options.get("resources")
    if resources is not None:
        if not isinstance(resources, dict):
            raise TypeError(f"'resources' must be a dict, got {type(resources).__name__}")
        for name, amount in resources.items():
            if name in ("CPU", "GPU"):
                raise ValueError("Use the 'num_cpus' and 'num_gpus' keyword instead of 'CPU' "
                                 "and 'GPU' in 'resources' keyword")
            if not isinstance(name, str):
                raise TypeError(f"resource names must be strings, got {name!r}")
            if not isinstance(amount, numbers.Real) or isinstance(amount, bool) or amount < 0:
                raise ValueError(f"resource {name!r} must be a non-negative number, got {amount!r}")


def check_num_returns(n) -> None:
    if n in GENERATOR_MODES:
        return
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"'num_returns' must be a non-negative integer, 'streaming' or "
                         f"'dynamic', got {n!r}")


def default_num_returns(fn) -> object:
    """Ray's default: a generator function streams its items, others return one value."""
    return "streaming" if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn) else 1


def validate_task_options(options: dict) -> dict:
    unknown = sorted(set(options) - set(TASK_DEFAULTS))
    if unknown:
        raise ValueError(f"Invalid option keyword {unknown[0]!r} for remote functions. "
                         f"Valid ones are {sorted(TASK_DEFAULTS)}.")
    validate_resources(options)
    check_num_returns(options.get("num_returns", 1))
    retries = options.get("max_retries", 3)
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < -1:
        raise ValueError(f"'max_retries' must be an integer >= -1, got {retries!r}")
    retry = options.get("retry_exceptions", False)
    if not isinstance(retry, bool):
        if not isinstance(retry, (list, tuple)) or not all(
                isinstance(c, type) and issubclass(c, BaseException) for c in retry):
            raise TypeError("'retry_exceptions' must be a bool or a list of exception classes, "
                            f"got {retry!r}")
    name = options.get("name")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"'name' must be a string, got {name!r}")
    return options


def resource_request(options: dict) -> dict:
    request = {"CPU": float(options.get("num_cpus", 1) or 0),
               "GPU": float(options.get("num_gpus", 0) or 0)}
    request.update({k: float(v) for k, v in (options.get("resources") or {}).items()})
    return {k: v for k, v in request.items() if v}


class RemoteFunction:
    """What `@shoal.remote` makes of a function.  Call `.remote(...)` to run it."""

    def __init__(self, fn: Callable, options: dict) -> None:
        self._function = fn
        self._options = {**TASK_DEFAULTS, "num_returns": default_num_returns(fn),
                         **validate_task_options(dict(options))}
        self._name = self._options["name"] or getattr(fn, "__name__", repr(fn))
        self._blob: bytes | None = None
        self._func_id: str | None = None
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", self._name)
        self.__wrapped__ = fn

    def __call__(self, *args, **kwargs):
        raise TypeError(f"Remote functions cannot be called directly. Instead of running "
                        f"'{self.__name__}()', try '{self.__name__}.remote()'.")

    def options(self, **options) -> "RemoteFunction":
        """A copy of this remote function with some options changed."""
        validate_task_options(dict(options))
        clone = RemoteFunction.__new__(RemoteFunction)
        clone.__dict__.update(self.__dict__)
        clone._options = {**self._options, **options}
        clone._name = clone._options["name"] or self._name
        return clone

    def _ship(self) -> tuple[str, bytes]:
        if self._blob is None:
            self._func_id, self._blob = ship(self._function)
        return self._func_id, self._blob

    def remote(self, *args, **kwargs):
        client = runtime.current().client
        func_id, blob = self._ship()
        opts = self._options
        task_id = client.new_id("t")
        n = opts["num_returns"]
        generator = n if n in GENERATOR_MODES else None
        return_ids = [f"{task_id}/0"] if generator else [f"{task_id}/{i}" for i in range(n)]
        args_blob, deps, nested, extra_puts, keep = pack_arguments(client, args, kwargs)
        retry = opts["retry_exceptions"]
        spec = m.SubmitTask(
            task_id=task_id, func_id=func_id, name=self._name, args=args_blob, deps=deps,
            nested=nested, return_ids=return_ids, resources=resource_request(opts),
            max_retries=opts["max_retries"],
            retry_exceptions=cloudpickle.dumps(list(retry) if not isinstance(retry, bool) else retry)
            if retry else None,
            parent_task_id=client.current_task_id, engine_id=opts["_engine_id"],
            generator=generator)
        # Make the return refs before sending, so a fast result finds its holder.
        refs = [owned_ref(client, oid) for oid in return_ids]
        client.remember_context(task_id)
        client.send(*client.register_function(func_id, self._name, blob), *extra_puts, spec)
        del keep        # only now may the auto-put refs go: the submission pins them
        return returned(client, task_id, generator, refs)

    def __repr__(self) -> str:
        return f"<shoal remote function {self._name}>"


def returned(client, task_id: str, generator, refs: list):
    """What `.remote()` gives back: None, a ref, a list of refs, or a generator."""
    if generator == "streaming":
        return ObjectRefGenerator(client, task_id, refs[0])
    if not refs:
        return None
    return refs[0] if len(refs) == 1 else refs


# As Ray: a function or class this large has captured data it should not carry.
FUNCTION_SIZE_WARN_THRESHOLD = 10_000_000
FUNCTION_SIZE_ERROR_THRESHOLD = 60_000_000     # under the protocol's 64 MiB frame header


def ship(obj) -> tuple[str, bytes]:
    """(id, pickled bytes) of a function or class: the id names the exact code,
    so a redefined function in a notebook is a new one to the engines.  Raises
    ValueError (naming the size) for one too large to send, as Ray does."""
    blob = dumps_function(obj)
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
    reference, as Ray does.  Returns (blob, deps, nested ids, PutObject msgs,
    refs the caller must keep until it has sent the submission)."""
    puts: list = []
    keep: list = []
    value = serialize((args, kwargs))
    if value.size >= INLINE_LIMIT and client.store is not None:
        args = list(args)
        kwargs = dict(kwargs)
        for container, keys in ((args, range(len(args))), (kwargs, list(kwargs))):
            for k in keys:
                item = container[k]
                if type(item) is ObjectRef:
                    continue
                s = serialize(item)
                if s.size >= INLINE_LIMIT:
                    oid = client.new_id("a")
                    puts.append(m.PutObject(entry=client.store_value(oid, s), nested=s.nested))
                    container[k] = owned_ref(client, oid)
                    keep.append(container[k])
        value = serialize((tuple(args), kwargs))
    deps = [a.id for a in args if type(a) is ObjectRef]
    deps += [v.id for v in kwargs.values() if type(v) is ObjectRef]
    top = set(deps)
    nested = [i for i in value.nested if i not in top]
    return value.to_bytes(), deps, nested, puts, keep
