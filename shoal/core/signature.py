"""Check a `.remote(...)` call's arguments against the function's signature at
the call, as Ray does, so a wrong call raises TypeError where it is written
rather than later at `get`.

A signature travels with actor handles, so it is kept as plain data
(name, kind, has a default) that pickles anywhere; defaults and annotations
themselves never leave the process that defined them.
"""
from __future__ import annotations

import functools
import inspect
from typing import Optional

ParamSpec = tuple     # ((name, kind as int, has_default), ...)


def param_spec(fn, drop_first: bool = False) -> Optional[ParamSpec]:
    """The parameters of `fn` as plain data; None where Python cannot say
    (some builtins), in which case any call is accepted."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    if drop_first and params and params[0].kind in (
            inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
        params = params[1:]
    return tuple((p.name, int(p.kind), p.default is not inspect.Parameter.empty) for p in params)


def method_spec(cls: type, name: str) -> Optional[ParamSpec]:
    """A method's parameters as its callers pass them (without self or cls)."""
    static = inspect.getattr_static(cls, name, None)
    member = getattr(cls, name)
    if isinstance(static, staticmethod):
        return param_spec(member)
    return param_spec(member, drop_first=not inspect.ismethod(member))


def constructor_spec(cls: type) -> Optional[ParamSpec]:
    if cls.__init__ is object.__init__:
        if cls.__new__ is object.__new__:
            return ()                    # a class without __init__ takes no arguments
        return method_spec(cls, "__new__")
    return param_spec(cls.__init__, drop_first=True)


_MISSING = object()


@functools.lru_cache(maxsize=1024)
def _signature(spec: ParamSpec) -> inspect.Signature:
    return inspect.Signature([
        inspect.Parameter(name, inspect._ParameterKind(kind),
                          default=_MISSING if has_default else inspect.Parameter.empty)
        for name, kind, has_default in spec])


@functools.lru_cache(maxsize=1024)
def _positional_bounds(spec: ParamSpec) -> Optional[tuple]:
    """(fewest, most) positional arguments when every parameter is a plain
    positional one: such calls need no full bind (the common case, ~10x faster)."""
    plain = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if not all(kind in plain for _, kind, _ in spec):
        return None
    return sum(1 for _, _, has_default in spec if not has_default), len(spec)


def check_call(spec: Optional[ParamSpec], name: str, args: tuple, kwargs: dict) -> None:
    """TypeError, with Python's wording, unless `name(*args, **kwargs)` would bind."""
    if spec is None:
        return
    if not kwargs and type(spec) is tuple:
        bounds = _positional_bounds(spec)
        if bounds is not None and bounds[0] <= len(args) <= bounds[1]:
            return
    try:
        _signature(tuple(tuple(p) for p in spec)).bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"{name}() {exc}") from None
