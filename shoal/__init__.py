"""shoal: interactive parallel computing for Jupyter, with Ray's API.

    import shoal
    shoal.init()

    @shoal.remote
    def square(x):
        return x * x

    shoal.get([square.remote(i) for i in range(10)])
"""
from __future__ import annotations

import inspect
import json
import os

from . import actor, exceptions
from .core.actor import ActorClass, ActorHandle, get_actor, kill, method
from .core.api import (
    ClusterContext, cancel, get, init, is_initialized, put, scale, shutdown, wait,
)
from .core.context import (
    RuntimeContext, available_resources, cluster_resources, get_gpu_ids, get_runtime_context,
    nodes,
)
from .core.generator import DynamicObjectRefGenerator, ObjectRefGenerator
from .core.object_ref import ObjectRef

ObjectID = ObjectRef        # Ray's older name
from .core.remote_function import RemoteFunction
from . import util  # ray.util.* works after `import ray`, as in Ray

__version__ = "0.1.0"


class RemoteDecoratorError(TypeError, AssertionError):
    """`@shoal.remote` used wrongly.  Ray raises AssertionError here; shoal's
    error is also a TypeError, which is what Python raises for a bad call."""


def remote(*args, **options):
    """Make a function a remote task, or a class an actor: `@shoal.remote` or
    `@shoal.remote(num_cpus=2, ...)` (see shoal.core.options for the keywords)."""
    if len(args) == 1 and not options and callable(args[0]):
        return _make_remote(args[0], {})
    if args or not options:
        from .core.options import TASK_OPTIONS, ACTOR_OPTIONS
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


def progress(refs, *, title=None):
    """A live progress bar for refs in the notebook: done / failed / total, rate,
    time left (see shoal.widgets)."""
    from .widgets import progress as show
    return show(refs, title=title)


def timeline(filename=None):
    """Ray's `timeline`: the task history as a list of Chrome-trace events
    (open them in chrome://tracing or ui.perfetto.dev); in a notebook the list
    shows as the live timeline widget.  With a file name, writes the events
    there as JSON and returns None (as Ray does), except that a name ending in
    .parquet gets a Parquet table of the runs."""
    from .widgets import TimelineEvents, task_runs, trace
    runs = task_runs()
    if filename is None:
        return TimelineEvents(trace.chrome_trace(runs)["traceEvents"])
    path = os.fspath(filename)
    if path.lower().endswith((".parquet", ".pq")):
        trace.write(runs, path)
    else:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(trace.chrome_trace(runs)["traceEvents"], f)
    return None


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
    "get_actor", "kill", "method", "ActorClass", "ActorHandle", "scale", "actor", "util",
    "ObjectRef", "ObjectID", "ObjectRefGenerator", "DynamicObjectRefGenerator",
    "RemoteFunction", "ClusterContext", "exceptions", "cluster_resources",
    "available_resources", "nodes", "get_gpu_ids", "get_runtime_context", "RuntimeContext",
    "progress", "timeline", "objects", "__version__",
]
