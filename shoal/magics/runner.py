"""The engine side of `%%remote`: run a cell's code, hand back what it made.

`run_cell` is the task of a one-off cell (a fresh namespace each time);
`RemoteNamespace` is the actor behind `--on NAME` (one namespace that
persists between cells).  Both take a cell spec (a dict of builtins, made by
`shoal.magics.cells`), the notebook's ObjectRefs passed by reference, and the
shipped values (top-level arguments, so the scheduler resolves refs among them
and large values travel through the object store), and return one value per
return ref: first `(namespace token, result, {name: value} bound by star
imports)`, then one per pulled name.

A value that cannot come back (it does not serialize, or the cell never bound
the name, or deleted it) comes back as an `Unavailable` marker instead of
failing the whole cell.  A result that does not serialize comes back as its
rich representation (`Shown`), so the cell still displays it.

The cell is compiled with the file name the notebook registered for it, and
its source is padded so that line numbers match the cell: a remote traceback
then shows the cell's own lines.  shoal's frames (this module included) are
dropped from remote tracebacks by the engine.  Top-level `await` works as in
IPython, on one event loop per engine process.
"""
from __future__ import annotations

import ast
import asyncio
import contextlib
import inspect
import linecache
import pickle
import sys
import uuid

_SIMPLE = (type(None), bool, int, float, complex, str, bytes)
_FLAGS = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
_MISSING = object()
_loop = None            # the event loop of top-level await in cells, made on first use


class Unavailable:
    """Stands for a name whose value did not come back from the cluster.

    `kind` is "unbound" (the cell did not bind it), "deleted" (it ran `del`),
    or "unserializable" (the value cannot leave its engine; `reason` says why).
    """

    def __init__(self, kind: str, type_name: str = "", reason: str = "") -> None:
        self.kind = kind
        self.type_name = type_name
        self.reason = reason

    def __repr__(self) -> str:
        if self.kind == "unserializable":
            return f"<{self.type_name} that stayed on the cluster: {self.reason}>"
        return f"<{self.kind} name>"


class Shown:
    """A result that could not travel, as its rich representation."""

    def __init__(self, bundle: dict, metadata: dict) -> None:
        self.bundle = bundle
        self.metadata = metadata

    def _repr_mimebundle_(self, include=None, exclude=None):
        return self.bundle, self.metadata

    def __repr__(self) -> str:
        return self.bundle.get("text/plain", "<remote value>")


class _Carry:
    """Serializes its value when pickled; if it cannot, becomes Unavailable
    (or, for a cell's result, Shown).  Buffers (numpy arrays and the like)
    stay out-of-band: no extra copy."""
    __slots__ = ("value", "show")

    def __init__(self, value, show: bool = False) -> None:
        self.value = value
        self.show = show

    def __reduce__(self):
        from ..protocol.serialization import SerializationError, serialize
        try:
            s = serialize(self.value)
        except SerializationError as exc:
            if self.show:
                from ..engine import display as engine_display
                return (Shown, engine_display.engine_shell().display_formatter.format(self.value))
            cause = exc.__cause__ or exc
            return (Unavailable, ("unserializable", type(self.value).__name__,
                                  f"{type(cause).__name__}: {cause}"))
        return (_unpack, (s.meta, *[pickle.PickleBuffer(b) for b in s.buffers]))


def _unpack(meta, *buffers):
    return pickle.loads(meta, buffers=buffers)


def _carry(value, show: bool = False):
    return value if type(value) in _SIMPLE else _Carry(value, show)


def run_cell(spec: dict, byref: dict, *values):
    """The task of a one-off `%%remote` cell."""
    return _run(spec, {"__name__": "__main__"}, byref, values, None)


class RemoteNamespace:
    """The actor behind `%%remote --on NAME`: a namespace kept between cells.
    `token` changes when the actor restarts (its namespace is then new)."""
    # A kernel interrupt reaches a running cell here (KeyboardInterrupt), unlike
    # Ray's rule for plain actors' calls (see shoal.engine.engine).
    __shoal_interruptible__ = True

    def __init__(self) -> None:
        self.token = uuid.uuid4().hex
        self.namespace: dict = {"__name__": "__main__"}

    def run(self, spec: dict, byref: dict, *values):
        return _run(spec, self.namespace, byref, values, self.token)

    def names(self) -> list:
        return sorted(n for n in self.namespace if not n.startswith("__"))


def _run(spec: dict, ns: dict, byref: dict, values: tuple, token):
    for name in spec.get("drop", ()):
        ns.pop(name, None)
    ns.update(byref)
    ns.update(zip(spec["names"], values))
    del values
    # What comes back is what the cell bound, not what an earlier cell left in
    # this namespace.  A name the cell may bind but never reads is set aside
    # while it runs (and put back if the cell does not bind it); one the
    # notebook lacks, but the cell may read, is watched by identity.
    aside = {n: ns.pop(n) for n in spec.get("aside", ()) if n in ns}
    before = {n: ns.get(n, _MISSING) for n in spec.get("absent", ())}
    try:
        # Another engine's route for the cell's output (shoal.core.backend.output_route).
        with spec.get("output") or contextlib.nullcontext():
            result = _execute(spec, ns)
    finally:
        unbound = {n for n in aside if n not in ns}
        for name in unbound:
            ns[name] = aside[name]
    star = {n: _carry(ns[n]) for n in _star_names(spec.get("star", ()), ns)}
    out = [(token, _carry(result, show=True) if spec["result"] else None, star)]
    for name in spec["pull"]:
        if name in unbound or (name in before and ns.get(name, _MISSING) is before[name]):
            out.append(Unavailable("unbound"))
        elif name in ns:
            out.append(_carry(ns[name]))
        else:
            out.append(Unavailable("deleted" if name in spec["deletes"] else "unbound"))
    return out[0] if len(out) == 1 else tuple(out)


def _star_names(modules, ns: dict) -> list:
    """The names `from MODULE import *` bound in `ns` (as Python picks them)."""
    names = []
    for module_name in modules:
        module = sys.modules.get(module_name)
        if module is None:
            continue
        public = getattr(module, "__all__", None)
        if public is None:
            public = [n for n in vars(module) if not n.startswith("_")]
        names += [n for n in public if n in ns and ns[n] is getattr(module, n, None)]
    return names


def _execute(spec: dict, ns: dict):
    from ..engine import display as engine_display
    shell = engine_display.engine_shell()
    filename, source = spec["filename"], spec["source"]
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    tree = ast.parse(source, filename)
    last = tree.body.pop() if spec["result"] else None
    with _shell_namespace(shell, ns) if spec.get("magics") else contextlib.nullcontext():
        return _execute_tree(tree, last, filename, ns, shell, engine_display)


class _CellModule:
    """The shell's user_module while a cell runs: its __dict__ is the cell's namespace."""


@contextlib.contextmanager
def _shell_namespace(shell, ns: dict):
    """Magics in the cell (`%%time`, `%time`, `%%capture`, ...) run on this
    engine's shell, in the cell's namespace, as they would in a notebook."""
    module = _CellModule()
    module.__dict__ = ns
    saved = shell.user_module, shell.user_ns
    # The shell's own names (get_ipython, In, Out, _oh, ...), which its magics
    # and displayhook use; taken out again after the cell.
    added = [n for n in shell.user_ns_hidden if n not in ns and n in shell.user_ns]
    ns.update((n, shell.user_ns[n]) for n in added)
    shell.user_module, shell.user_ns = module, ns
    try:
        yield
    finally:
        shell.user_module, shell.user_ns = saved
        for name in added:
            ns.pop(name, None)


def _execute_tree(tree, last, filename: str, ns: dict, shell, engine_display):
    try:
        if tree.body:
            _eval(compile(tree, filename, "exec", flags=_FLAGS, dont_inherit=True), ns)
        if last is not None:
            return _eval(compile(ast.Expression(last.value), filename, "eval", flags=_FLAGS,
                                 dont_inherit=True), ns)
        return None
    finally:
        engine_display.after_cell(shell)


def _eval(code, ns: dict):
    """Run compiled cell code; top-level `await` runs on this process's loop
    (one loop for all cells, so objects bound to it live on between them)."""
    value = eval(code, ns)
    if code.co_flags & inspect.CO_COROUTINE:
        global _loop
        if _loop is None or _loop.is_closed():
            _loop = asyncio.new_event_loop()
        value = _loop.run_until_complete(value)
    return value


__all__ = ["run_cell", "RemoteNamespace", "Unavailable", "Shown"]
