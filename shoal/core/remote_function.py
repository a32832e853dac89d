"""Remote functions: `@shoal.remote` on a function, `.remote()`, `.options()`."""
from __future__ import annotations

import hashlib
import numbers
from typing import Any, Callable

import cloudpickle

from ..protocol import messages as m
from ..protocol.serialization import INLINE_LIMIT, dumps_function, serialize
from . import runtime
from .object_ref import ObjectRef, check_same_cluster, owned_ref

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


def validate_task_options(options: dict) -> dict:
    unknown = sorted(set(options) - set(TASK_DEFAULTS))
    if unknown:
        raise ValueError(f"Invalid option keyword {unknown[0]!r} for remote functions. "
                         f"Valid ones are {sorted(TASK_DEFAULTS)}.")
    validate_resources(options)
    n = options.get("num_returns", 1)
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"'num_returns' must be a non-negative integer, got {n!r}")
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
        self._options = {**TASK_DEFAULTS, **validate_task_options(dict(options))}
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
        return_ids = [f"{task_id}/{i}" for i in range(n)] if n else []
        args_blob, deps, nested, extra_puts, keep = pack_arguments(client, args, kwargs)
        retry = opts["retry_exceptions"]
        spec = m.SubmitTask(
            task_id=task_id, func_id=func_id, name=self._name, args=args_blob, deps=deps,
            nested=nested, return_ids=return_ids, resources=resource_request(opts),
            max_retries=opts["max_retries"],
            retry_exceptions=cloudpickle.dumps(list(retry) if not isinstance(retry, bool) else retry)
            if retry else None,
            parent_task_id=client.current_task_id, engine_id=opts["_engine_id"])
        # Make the return refs before sending, so a fast result finds its holder.
        refs = [owned_ref(client, oid) for oid in return_ids]
        client.remember_context(task_id)
        client.send(*client.register_function(func_id, self._name, blob), *extra_puts, spec)
        del keep        # only now may the auto-put refs go: the submission pins them
        if n == 0:
            return None
        return refs[0] if n == 1 else refs

    def __repr__(self) -> str:
        return f"<shoal remote function {self._name}>"


def ship(obj) -> tuple[str, bytes]:
    """(id, pickled bytes) of a function or class: the id names the exact code,
    so a redefined function in a notebook is a new one to the engines."""
    blob = dumps_function(obj)
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
    top_refs = [a for a in (*args, *kwargs.values()) if type(a) is ObjectRef]
    check_same_cluster(client, top_refs)
    deps = [a.id for a in top_refs]
    top = set(deps)
    nested = [i for i in value.nested if i not in top]
    return value.to_bytes(), deps, nested, puts, keep
