"""shoal: interactive parallel computing for Jupyter, with Ray's API.

    import shoal
    shoal.init()

    @shoal.remote
    def square(x):
        return x * x

    shoal.get([square.remote(i) for i in range(10)])
"""
from __future__ import annotations

from . import exceptions
from .core.actor import ActorClass, ActorHandle, get_actor, kill, method
from .core.api import (
    ClusterContext, available_resources, cancel, cluster_resources, get, init, is_initialized,
    put, scale, shutdown, wait,
)
from .core.generator import DynamicObjectRefGenerator, ObjectRefGenerator
from .core.object_ref import ObjectRef
from .core.remote_function import RemoteFunction

__version__ = "0.1.0"


def remote(*args, **options):
    """Make a function a remote task, or a class an actor: `@shoal.remote` or
    `@shoal.remote(num_cpus=2, ...)`."""
    if len(args) == 1 and not options and callable(args[0]):
        return _make_remote(args[0], {})
    if args:
        raise TypeError("The @shoal.remote decorator must be applied either with no arguments "
                        "and no parentheses, for example '@shoal.remote', or with only keyword "
                        "arguments, for example '@shoal.remote(num_returns=2, num_cpus=1)'.")
    return lambda fn: _make_remote(fn, options)


def _make_remote(target, options: dict):
    if isinstance(target, type):
        return ActorClass(target, options)
    if not callable(target):
        raise TypeError(f"@shoal.remote expects a function, got {type(target).__name__}")
    return RemoteFunction(target, options)


def progress(refs, *, title=None):
    """A live progress bar for refs in the notebook: done / failed / total, rate,
    time left (see shoal.widgets)."""
    from .widgets import progress as show
    return show(refs, title=title)


def timeline(path=None):
    """The live task timeline widget; `timeline("x.json")` writes a Chrome/Perfetto
    trace and `timeline("x.parquet")` a Parquet table instead (see shoal.widgets)."""
    from .widgets import timeline as show
    return show(path)


def objects():
    """The live object store widget: memory per host, a sortable table of objects."""
    from .widgets import objects as show
    return show()


def load_ipython_extension(shell) -> None:
    """`%load_ext shoal`: the %%remote, %remote, %autoremote and %cluster magics."""
    from .magics import load_ipython_extension as load
    load(shell)


def unload_ipython_extension(shell) -> None:
    from .magics import unload_ipython_extension as unload
    unload(shell)


__all__ = [
    "init", "shutdown", "is_initialized", "remote", "get", "put", "wait", "cancel",
    "get_actor", "kill", "method", "ActorClass", "ActorHandle", "scale",
    "ObjectRef", "ObjectRefGenerator", "DynamicObjectRefGenerator", "RemoteFunction", "ClusterContext", "exceptions", "cluster_resources",
    "available_resources", "progress", "timeline", "objects", "__version__",
]
