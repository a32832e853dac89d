"""Live widgets in the notebook: progress, task timeline, object store, cluster.

    shoal.progress(refs)          # a bar for a set of refs: done / failed / total, rate, time left
    shoal.timeline()              # Ray's event list; shows as a lane per engine, live
    shoal.timeline("run.json")    # export (Ray's): Chrome trace events; .parquet: a table
    shoal.widgets.timeline()      # the widget itself
    shoal.objects()               # memory per host and the objects in the store, live
    shoal.init()                  # in a notebook, shows as the cluster widget

Every widget talks to a backend (shoal.core.backend: shoal's own scheduler,
or Ray), fed by one event subscription per cluster (feed.py), and
updates from the feed's thread, whether the kernel is busy or idle, at most
ten times a second.  Each carries a static HTML snapshot in its mimebundle.
"""
from __future__ import annotations

import logging
import sys
import threading
from typing import Optional, Sequence

from ..core import backend, hooks, runtime
from .cluster import ClusterWidget
from .feed import as_source, close_all, existing_feed, feed_for
from .objects import ObjectsWidget
from .progress import ProgressWidget
from .timeline import TimelineWidget

log = logging.getLogger("shoal.widgets")


def in_notebook() -> bool:
    """True in a Jupyter kernel (an IPython shell with a kernel), where widgets render."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


def progress(refs, *, title: Optional[str] = None):
    """A live progress bar for `refs` (an ObjectRef or a list of them).

    Returns the widget; as a cell's last expression it shows there (use
    IPython's `display()` elsewhere).  Counts done / failed / total, shows
    the rate and the time left, and keeps its final state when all are done.
    """
    source = backend.current().bind()
    refs = [refs] if source.is_ref(refs) else list(refs)
    for r in refs:
        if not source.is_ref(r):
            raise TypeError(f"shoal.progress() expects ObjectRefs, got {type(r).__name__}")
    title = title if title is not None else f"{len(refs):,} task{'s' if len(refs) != 1 else ''}"
    return ProgressWidget(refs, title=title, client=source)


def timeline(path=None):
    """The live task timeline widget; or, with a path, export the task history
    to it (".json": a Chrome/Perfetto trace; ".parquet": a table) and return the path."""
    if path is None:
        return TimelineWidget()
    from . import trace
    return trace.write(task_runs(), path)


def task_runs() -> list:
    """Every task run the cluster remembers, as TimelineModel.runs() gives them."""
    from .timeline import TimelineModel
    model = TimelineModel(max_runs=10 ** 9)
    model.apply(_task_history(backend.current().bind()))
    return model.runs()


class TimelineEvents(list):
    """What `shoal.timeline()` returns: Ray's list of Chrome-trace events, which in
    a notebook shows as the live timeline widget (a lane per engine)."""

    def _repr_pretty_(self, printer, cycle) -> None:
        # IPython's plain-text form of the cell output: a line, not thousands of events.
        printer.text(f"<shoal timeline: {len(self)} Chrome-trace events>")

    def _widget(self) -> TimelineWidget:
        widget = self.__dict__.get("widget")
        if widget is None:
            widget = self.__dict__["widget"] = TimelineWidget()
        return widget

    def _repr_mimebundle_(self, include=None, exclude=None):
        return self._widget()._repr_mimebundle_(include=include, exclude=exclude)

    def _ipython_display_(self) -> None:
        """In a kernel: the live widget and its saved snapshot (see base.Fallback);
        elsewhere one line (the list itself is Ray's thousands of events)."""
        if not in_notebook():
            from IPython.display import display
            display({"text/plain": f"<shoal timeline: {len(self)} Chrome-trace events>"},
                    raw=True)
            return
        self._widget()._ipython_display_()


def objects():
    """The live object store widget: memory per host and a sortable table of objects."""
    return ObjectsWidget()


def cluster(context=None):
    """The live cluster widget for what init() returned (a ClusterContext of shoal's
    own cluster, or another engine's context); default: the cluster in use now."""
    if context is None:
        foreign = backend.active
        return ClusterWidget(client=foreign) if foreign is not None else \
            ClusterWidget(runtime.current())
    rt = getattr(context, "_runtime", None)
    return ClusterWidget(rt) if rt is not None else ClusterWidget(client=context._backend)


# ---------------------------------------------------------------------- hooks for the core
def cluster_bundle(context, include=None, exclude=None):
    """What init() returns, as a mimebundle: the live widget in a notebook, else text
    (and the static HTML).  One widget per context, made on first display."""
    rt = getattr(context, "_runtime", None)
    source = rt.client if rt is not None else context._backend
    if source.lost:
        return {"text/plain": repr(context)}
    if in_notebook():
        w = getattr(context, "_widget", None)
        if w is None or not w.live:
            w = context._widget = cluster(context)
        data, _ = w._repr_mimebundle_()
        data["text/plain"] = repr(context)
        return data
    from .cluster import ClusterModel, snapshot_html
    source = as_source(source)
    about = source.describe()
    model = ClusterModel(context.address, about["kind"])
    try:
        model.update(source.status(timeout=2))
    except Exception:
        return {"text/plain": repr(context)}
    return {"text/plain": repr(context), "text/html": snapshot_html(model.view())}


def auto_progress(source, refs: Sequence, what: str = "get"):
    """Show a progress bar for a blocking get/wait that is taking long (the core, or
    another engine's backend, calls this from the waiting thread; `source` is shoal's
    client or that backend, `refs` refs or their ids).  Returns the widget, or None
    outside a notebook."""
    if not in_notebook() or threading.current_thread() is not threading.main_thread():
        return None
    try:
        from IPython.display import display
        source = as_source(source)
        n = len({r if isinstance(r, str) else source.object_id(r) for r in refs})
        bar = ProgressWidget(list(refs), title=f"shoal.{what}: {n:,} refs", client=source)
        display(bar)
        return bar
    except Exception:
        log.exception("could not show a progress bar")
        return None


def _task_history(source, timeout: float = 10.0) -> list:
    """Every task event the cluster remembers (and the feed, if one runs, has seen)."""
    feed = existing_feed(source)
    history = feed.task_history() if feed is not None else None
    if history is not None:
        return history
    box: list = []
    got = threading.Event()

    def handler(batch):
        if batch.snapshot and not got.is_set():
            box.append(list(batch.tasks))
            got.set()

    sub = as_source(source).subscribe(handler)
    try:
        if not got.wait(timeout):
            raise TimeoutError(f"the cluster sent no task history within {timeout:g} s")
    finally:
        sub.close()
    return box[0]


hooks.register(hooks.CLUSTER_DISPLAY, cluster_bundle)   # core shows its context and
hooks.register(hooks.WAIT_PROGRESS, auto_progress)      # long waits through these

__all__ = ["progress", "timeline", "objects", "cluster", "in_notebook", "close_all",
           "feed_for", "ProgressWidget", "TimelineWidget", "ObjectsWidget", "ClusterWidget"]
