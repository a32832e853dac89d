"""Where the layers above core plug into it.

core runs in every process, a notebook's or not; in a notebook the widgets
show what it does: the cluster widget as `init()`'s result, a progress bar
for a long `get` or `wait`.  core does not import them (they sit above it):
shoal.widgets registers its functions here when it is imported, and the
package's facade (shoal/__init__.py, the top layer) sets the loader that
imports it the first time core asks for a hook nobody has registered yet
(importing ipywidgets costs too much to do in every process that imports
shoal).  With neither, core does without: plain text, no bar.

The magics plug in per client instead (`Client.output_context` and
`output_handler`, set by shoal.magics.output).
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, Optional

log = logging.getLogger("shoal")

# fn(cluster_context, include, exclude) -> mimebundle dict
CLUSTER_DISPLAY = "cluster_display"
# fn(source, refs or ids, "get" | "wait") -> a shown bar with settle_ready(), or None
# (source: shoal's client, or another engine's backend)
WAIT_PROGRESS = "wait_progress"
POINTS = (CLUSTER_DISPLAY, WAIT_PROGRESS)

_hooks: dict = {}
_loader: Optional[Callable[[], None]] = None
_lock = threading.Lock()


def register(point: str, fn: Callable) -> None:
    if point not in POINTS:
        raise ValueError(f"no hook point {point!r}; there are {', '.join(POINTS)}")
    if not callable(fn):
        raise TypeError(f"a hook must be callable, got {type(fn).__name__}")
    with _lock:
        _hooks[point] = fn


def unregister(point: str, fn: Callable) -> None:
    """Remove `fn` if it is what `point` holds (idempotent)."""
    with _lock:
        if _hooks.get(point) is fn:
            del _hooks[point]


def set_loader(loader: Optional[Callable[[], None]]) -> None:
    """What imports the layer that registers the hooks, on first need."""
    global _loader
    with _lock:
        _loader = loader


def get(point: str) -> Optional[Callable]:
    """The hook registered at `point`, loading the providers once if none is."""
    global _loader
    fn = _hooks.get(point)
    if fn is None and _loader is not None:
        loader = _loader
        loader()                  # raises as the import would; tried again next time
        with _lock:
            if _loader is loader:
                _loader = None
        fn = _hooks.get(point)
    return fn


def cluster_mimebundle(context, include=None, exclude=None) -> dict:
    """What `init()`'s result shows: the cluster widget in a notebook (the
    CLUSTER_DISPLAY hook), else, or if the widget fails, its repr as text."""
    try:
        show = get(CLUSTER_DISPLAY)
        if show is not None:
            return show(context, include, exclude)
    except Exception:
        log.debug("the cluster widget failed; showing text", exc_info=True)
    return {"text/plain": repr(context)}
