"""The actor behind each pool worker, and how it reports a call's failure."""
from __future__ import annotations

import sys
import traceback
import types

import cloudpickle

MAP, STAR, APPLY = 0, 1, 2        # how run() calls the function on each item


class Failure:
    """What a worker returns for a chunk whose call raised: the exception
    itself (or a stand-in if it would not pickle) and its traceback text."""
    __slots__ = ("exc", "tb")

    def __init__(self, exc: BaseException, tb: str) -> None:
        try:
            cloudpickle.dumps(exc)
        except Exception:
            exc = RuntimeError(f"{type(exc).__name__}: {exc} (the exception could not be pickled)")
        self.exc = exc
        self.tb = tb

    def __reduce__(self):
        return (Failure, (self.exc, self.tb))


class PoolWorker:
    """One pool process: runs the initializer once, then chunks of calls.
    State the initializer sets (globals, caches) lives on between calls.

    Functions defined in a notebook or script travel by value, each with a
    copy of the globals it reads.  Here they all share one namespace, as the
    functions of a forked worker share `__main__`: a global the initializer
    (or a call) assigns is seen by every later call, and wins over a value
    shipped with a function; other shipped values replace older ones."""

    def __init__(self, initializer, initargs: tuple) -> None:
        self._functions: dict = {}
        self._main: dict = {}          # the shared namespace of by-value functions
        self._shipped: dict = {}       # name -> the value last shipped for it
        if initializer is not None:
            self._rebind(initializer)(*initargs)

    def _rebind(self, fn):
        """`fn` with the shared namespace as its globals, if it came by value."""
        if not isinstance(fn, types.FunctionType):
            return fn
        module = sys.modules.get(fn.__module__)
        if module is not None and fn.__globals__ is vars(module):
            return fn                  # imported by reference: its module's globals are real
        ns, shipped = self._main, self._shipped
        for name, value in fn.__globals__.items():
            if name in ns and (name not in shipped or ns[name] is not shipped[name]):
                continue               # assigned here since: the worker's state wins
            ns[name] = shipped[name] = value
        rebound = types.FunctionType(fn.__code__, ns, fn.__name__, fn.__defaults__, fn.__closure__)
        rebound.__kwdefaults__ = fn.__kwdefaults__
        rebound.__dict__.update(fn.__dict__)
        rebound.__qualname__ = fn.__qualname__
        return rebound

    def run(self, key: str, blob, chunk: list, mode: int):
        """Call the function on every item of the chunk: a list of results,
        or a Failure for the first call that raised.  `blob` is the pickled
        function, sent only the first time this worker meets `key`."""
        fn = self._functions.get(key)
        if fn is None:
            if blob is None:
                raise RuntimeError("pool worker was not sent the function")   # a pool bug
            fn = self._functions[key] = self._rebind(cloudpickle.loads(blob))
        try:
            if mode == MAP:
                return [fn(x) for x in chunk]
            if mode == STAR:
                return [fn(*x) for x in chunk]
            return [fn(*args, **kwargs) for args, kwargs in chunk]
        except Exception as exc:
            return Failure(exc, traceback.format_exc())
