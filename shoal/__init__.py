"""shoal: interactive parallel computing for Jupyter, with Ray's API.

    import shoal
    shoal.init()

    @shoal.remote
    def square(x):
        return x * x

    shoal.get([square.remote(i) for i in range(10)])

This module is the facade, at the top of shoal's layers (the map is in
tests/test_layers.py): it gathers the public API from shoal.core (where the
magics and widgets, which sit below it, take it from), Ray's modules, and
the notebook's functions from shoal.widgets and shoal.magics, and plugs the
widgets into core's hooks (shoal.core.hooks).  Only the kernel and the
command line import it.
"""
from __future__ import annotations

import json
import os

from . import actor, exceptions
from .core import hooks
from .core.actor import ActorClass, ActorHandle, get_actor, kill, method
from .core.api import (
    ClusterContext, RemoteDecoratorError, cancel, get, init, is_initialized, put, remote, scale,
    shutdown, wait,
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


def _load_widgets() -> None:
    """Import shoal.widgets, which registers core's notebook hooks: the first
    time core needs one (see shoal.core.hooks)."""
    from . import widgets  # noqa: F401


hooks.set_loader(_load_widgets)


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
