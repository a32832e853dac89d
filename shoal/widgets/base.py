"""LiveWidget: an anywidget fed by the cluster's event stream.

A live widget is a view: its state is derived from the event stream (and,
for the object store and cluster widgets, from state queries made when the
stream says something changed); it owns nothing of the cluster's.  It talks
only to a bound backend (shoal.core.backend: `subscribe` through the feed,
`status`, `list_objects`, `memory`, `ready`, `scale`), so the same widgets
show shoal's own scheduler and a Ray cluster.  Each
subclass pairs a pure model (events in, a plain dict out; tested without a
cluster or a kernel) with the few lines that push that dict to the frontend.

Threads: `apply`, `flush` and `closed` run on the feed's pump thread (see
feed.py); frontend messages arrive on the kernel's shell (or a subshell)
thread; `_repr_mimebundle_` runs on whatever thread displays the widget.
The model is only touched under `self._lock`.

Every widget's mimebundle carries a static HTML snapshot (text/html) beside
the widget view, for nbconvert, GitHub and notebooks opened without a
kernel.  The JavaScript is plain ES modules shipped in `static/` and loaded
by anywidget: nothing to build, works offline in JupyterLab 4 and Notebook 7.
"""
from __future__ import annotations

import logging
import threading
import uuid
from pathlib import Path
from typing import Callable, Optional

import anywidget
import traitlets

from ..core import backend
from .feed import Feed, as_source, feed_for

log = logging.getLogger("shoal.widgets")
FALLBACK_INTERVAL = 2.0     # seconds between two updates of the saved snapshot
_STATIC = Path(__file__).with_name("static")


def static(name: str, folder=_STATIC) -> str:
    """The text of a file in static/ (or `folder`; read once, at class definition); a
    widget's JavaScript module gets the shared helpers of common.js in front."""
    text = (Path(folder) / name).read_text(encoding="utf-8")
    if name.endswith(".js"):
        text = (_STATIC / "common.js").read_text(encoding="utf-8") + text
    return text


CSS = static("shoal.css")


def source_of(client=None, feed: Optional[Feed] = None):
    """What a widget talks to: `client` (a backend or shoal client), else the
    feed's, else the backend in use now (bound to its cluster)."""
    if client is not None:
        return as_source(client)
    if feed is not None:
        return feed.source
    return backend.current().bind()


class LiveWidget(anywidget.AnyWidget):
    """Base of the progress, timeline, object store and cluster widgets."""

    _css = CSS
    uid = traitlets.Unicode("").tag(sync=True)        # one per widget, for the JS stores
    live = traitlets.Bool(True).tag(sync=True)        # False once the cluster is gone
    closed_reason = traitlets.Unicode("").tag(sync=True)

    def __init__(self, client=None, *, feed: Optional[Feed] = None, **kwargs) -> None:
        super().__init__(uid=uuid.uuid4().hex, **kwargs)
        self._lock = threading.RLock()
        # What it shows and asks: a bound backend (shoal.core.backend); `client`
        # may also be one of shoal's own clients (the dashboard's).
        self._source = source_of(client, feed)
        self._client = getattr(self._source, "client", None)    # shoal's own, or None
        self.on_msg(self._on_frontend_msg)
        self._fallback = Fallback(self)
        self._feed = feed if feed is not None else feed_for(self._source)
        self._feed.add(self)

    # ------------------------------------------------------------------ the feed's calls
    def apply(self, batch) -> None:
        with self._lock:
            self._apply(batch)

    def flush(self, now: float) -> Optional[float]:
        wake = self._flush(now)
        again = self._fallback.refresh(now)
        return wake if again is None else again if wake is None else min(wake, again)

    def closed(self, reason: str) -> None:
        with self._lock:
            self._closed(reason)
        try:
            with self.hold_sync():
                self.live = False
                self.closed_reason = reason
        except Exception:          # the comm may be gone with the kernel
            log.debug("could not mark widget closed", exc_info=True)
        self._fallback.refresh(None)

    # subclasses override these three
    def _apply(self, batch) -> None:
        raise NotImplementedError

    def _flush(self, now: float) -> Optional[float]:
        raise NotImplementedError

    def _closed(self, reason: str) -> None:
        pass

    # ------------------------------------------------------------------ frontend
    def _on_frontend_msg(self, _widget, content, _buffers) -> None:
        try:
            self._handle(content if isinstance(content, dict) else {})
        except Exception:
            log.exception("%s: handling %r failed", type(self).__name__, content)

    def _handle(self, content: dict) -> None:
        pass

    def poke(self) -> None:
        """Ask the feed for a flush soon (state changed outside the stream)."""
        self._feed.poke()

    # ------------------------------------------------------------------ display
    def html(self) -> str:
        """The static snapshot: what this widget shows now, as plain HTML."""
        raise NotImplementedError

    def text(self) -> str:
        return object.__repr__(self)

    def __repr__(self) -> str:
        """In a terminal, the text view."""
        try:
            with self._lock:
                return self.text()
        except Exception:
            return object.__repr__(self)

    def _repr_mimebundle_(self, **kwargs):
        data, metadata = super()._repr_mimebundle_(**kwargs)
        try:
            with self._lock:
                data["text/html"] = self.html()
                data["text/plain"] = self.text()
        except Exception:
            log.exception("%s: static snapshot failed", type(self).__name__)
        self._displayed()
        return data, metadata

    def _ipython_display_(self) -> None:
        """Shown in a kernel (display() or a cell's last value): two outputs,
        the live widget (nothing else, so it is never redrawn) and its
        snapshot with a display id, kept true by Fallback.  Elsewhere (a
        terminal): the text view."""
        from IPython.display import display
        data, metadata = self._repr_mimebundle_()
        if not self._fallback.in_kernel():
            display({"text/plain": data.get("text/plain", self.text())}, raw=True)
            return
        view = {k: v for k, v in data.items() if k.startswith("application/")}
        display({**view, "text/plain": ""}, raw=True, metadata=metadata)
        snapshot = (data.get("text/html", ""), data.get("text/plain", ""))
        display(Fallback.bundle(snapshot), raw=True, display_id=self.uid)
        self._fallback.shown(snapshot)

    def _displayed(self) -> None:
        pass

    def finished(self) -> bool:
        """Whether what it shows is final for now (a bar at its total, no
        task running): the saved snapshot is then updated without delay."""
        return False

    def stop(self) -> None:
        """Stop updating and close the widget's comm (its views go blank)."""
        self._feed.remove(self)
        self.close()


class Fallback:
    """Keeps the snapshot saved with the notebook true.

    What a notebook saves of a widget's output is its mimebundle as shown;
    shown once, the snapshot would stay as it was at display time (a
    finished bar saved as "0 / 3 done").  So a widget shown in a kernel is
    two outputs: the live view, and its snapshot (text/html, text/plain)
    with a display id, hidden by the widget's stylesheet wherever the live
    view renders.  When the snapshot changes, the kernel updates that
    display (update_display_data, with the parent of the cell that showed
    it): at most every FALLBACK_INTERVAL seconds while it changes, at once
    when the widget is `finished()` or the cluster goes.  JupyterLab and
    nbclient apply the updates to the outputs they save; the live view is
    untouched.  `refresh` runs on the feed's pump thread."""

    def __init__(self, widget: "LiveWidget") -> None:
        self.widget = widget
        self._kernel = None
        self._parent = None
        self._last: Optional[tuple] = None
        self._next = 0.0

    @staticmethod
    def in_kernel() -> bool:
        try:
            from IPython import get_ipython
            return getattr(get_ipython(), "kernel", None) is not None
        except Exception:
            return False

    @staticmethod
    def bundle(snapshot: tuple) -> dict:
        return {"text/html": f'<div class="shoal-snapshot">{snapshot[0]}</div>',
                "text/plain": snapshot[1]}

    def shown(self, snapshot: tuple) -> None:
        """The snapshot was just displayed (in the displaying thread): updates
        may follow from now on."""
        from IPython import get_ipython
        kernel = get_ipython().kernel
        self._last = snapshot
        self._parent = kernel.get_parent("shell")
        self._kernel = kernel

    def refresh(self, now: Optional[float]) -> Optional[float]:
        """Send the snapshot if it changed; `now` None: at once (the last one).
        Returns when to be called again (a throttled change), or None."""
        if self._kernel is None:
            return None
        w = self.widget
        if now is not None and now < self._next and not w.finished():
            return self._next
        try:
            with w._lock:
                snapshot = (w.html(), w.text())
        except Exception:
            log.exception("%s: static snapshot failed", type(w).__name__)
            return None
        if snapshot == self._last:
            return None
        self._last = snapshot
        self._next = (now if now is not None else 0.0) + FALLBACK_INTERVAL
        content = {"data": self.bundle(snapshot), "metadata": {},
                   "transient": {"display_id": w.uid}}
        kernel = self._kernel
        try:
            topic = getattr(kernel, "_topic", None)
            kernel.session.send(kernel.iopub_socket, "update_display_data", content,
                                parent=self._parent,
                                ident=topic("update_display_data") if topic else None)
        except Exception:           # the kernel is going away
            log.debug("could not update the widget's snapshot", exc_info=True)
        return None


class QueryingWidget(LiveWidget):
    """A widget that asks the scheduler for its state when events say it
    changed: at most every `min_interval` seconds, and never spending more
    than 1/`budget` of the time asking (the interval stretches to `budget`
    times what the last query took).  Subclasses say what is relevant
    (`_relevant`) and how to ask (`refresh`, which returns False when the
    cluster did not answer)."""

    def _init_querying(self, clock: Callable[[], float], min_interval: float,
                       budget: float) -> None:
        self._clock = clock
        self._min_interval = min_interval
        self._budget = budget
        self._due = True
        self._next_query = 0.0

    def _relevant(self, batch) -> bool:
        raise NotImplementedError

    def refresh(self) -> bool:
        raise NotImplementedError

    def _apply(self, batch) -> None:
        if batch.snapshot or self._relevant(batch):
            self._due = True

    def _flush(self, now: float) -> Optional[float]:
        if not self._due:
            return None
        if now < self._next_query:
            return self._next_query
        self._due = False
        began = self._clock()
        if self.refresh():
            self._next_query = now + max(self._min_interval,
                                         self._budget * (self._clock() - began))
        return None
