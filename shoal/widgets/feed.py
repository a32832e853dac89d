"""The one event subscription that every live widget of a cluster shares.

    feed = feed_for(source)          # started on first use, one per cluster
    feed.add(view)                   # view.apply(batch) / view.flush(now) on the pump thread
    feed.remove(view)

`source` is a bound backend (shoal.core.backend: `backend.current().bind()`),
or a client of shoal's own scheduler (the dashboard's), made one.  The
backend's event thread (shoal's: the client's reader thread) only appends
each `Events` batch to a queue (it must never block).  A named pump thread owned by the feed drains the queue,
hands every batch to every view's `apply` (pure state updates), and then, at
most every `interval` seconds (0.1: ten updates a second), calls each view's
`flush(now)`, which pushes what changed to the frontend and may query the
cluster (never from the event thread: a query of shoal's scheduler waits
for its reply on that thread).  `flush` returns when it next wants to be called without news
(a deadline in `clock()` time, or None), so a progress bar can refresh its
time-left estimate while no task ends.

The feed keeps the task events it has seen (bounded), so a view added later
starts from the whole remembered history without asking the scheduler for
another snapshot; a batch with `snapshot=True` replaces that history.

When the source is lost (the cluster stopped or died) every view gets
`closed(reason)` once and the thread ends.  `close()` does the same on
demand and joins the thread; it is idempotent.  Views never see a call from
two threads at once: everything above runs on the pump thread.
"""
from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import deque
from typing import Callable, Optional, Protocol

from ..protocol import messages as m

log = logging.getLogger("shoal.widgets")
INTERVAL = 0.1              # seconds between two pushes to the frontend (10 a second at most)
MAX_HISTORY = 100_000       # task events remembered for views added later (~20 MB at most)
_LOST_CHECK = 0.5           # how often an idle pump looks whether the client is gone


class View(Protocol):
    """What the feed calls, always on its pump thread."""

    def apply(self, batch: m.Events) -> None:
        """Fold a batch of events into the view's state; quick, no I/O."""

    def flush(self, now: float) -> Optional[float]:
        """Push what changed; return the clock() time of the next wanted flush, or None."""

    def closed(self, reason: str) -> None:
        """The cluster is gone: show the final state.  Called once."""


def as_source(obj):
    """A bound backend for `obj`: a backend (bound), or a shoal client."""
    if hasattr(obj, "bind") and hasattr(obj, "subscribe"):
        return obj.bind()
    from ..core.backend import NativeBackend
    return NativeBackend(obj).bind()


class Feed:
    def __init__(self, source, *, interval: float = INTERVAL,
                 clock: Callable[[], float] = time.monotonic,
                 subscribe: Optional[Callable] = None) -> None:
        self.source = source
        self.interval = interval
        self.clock = clock
        self.history: deque = deque(maxlen=MAX_HISTORY)
        self.synced = False            # the scheduler's snapshot has arrived
        self._views: list = []
        self._joining: list = []
        self._pending: deque = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._closed_reason: Optional[str] = None
        self._wake_at: Optional[float] = None
        self._flush_now = False
        self._failed: Optional[str] = None
        self._thread = threading.Thread(target=self._run, name="shoal-widgets-feed", daemon=True)
        self._thread.start()
        make = subscribe or source.subscribe
        try:
            self._subscription = make(self._on_batch)
        except Exception as exc:   # the cluster is gone already: the pump sees it and ends
            self._subscription = None
            self._failed = getattr(source, "lost", None) or f"no event stream: {exc}"

    @property
    def client(self):
        """The shoal client behind the source, if it has one (the dashboard's views)."""
        return getattr(self.source, "client", self.source)

    # ------------------------------------------------------------------ any thread
    def _on_batch(self, batch: m.Events) -> None:
        """The reader thread's handler: queue and wake, nothing else."""
        with self._cond:
            self._pending.append(batch)
            self._cond.notify()

    def add(self, view) -> None:
        """Start feeding `view`: it first gets the remembered history as a snapshot."""
        with self._cond:
            if self._closed_reason is not None:
                reason = self._closed_reason
            else:
                self._joining.append(view)
                self._cond.notify()
                return
        view.closed(reason)

    def remove(self, view) -> None:
        with self._cond:
            if view in self._views:
                self._views.remove(view)
            if view in self._joining:
                self._joining.remove(view)

    def poke(self) -> None:
        """Flush every view soon (a view's state changed outside the stream)."""
        with self._cond:
            self._flush_now = True
            self._cond.notify()

    def task_history(self) -> Optional[list]:
        """The task events seen so far (None until the first snapshot came)."""
        with self._cond:
            return list(self.history) if self.synced else None

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def close(self, reason: str = "the widgets were closed", timeout: float = 5.0) -> None:
        """Unsubscribe, tell the views, join the pump thread.  Idempotent."""
        with self._cond:
            self._stopping = True
            if self._closed_reason is None:
                self._closed_reason = reason
            self._cond.notify()
        try:
            if self._subscription is not None:
                self._subscription.close()
        except Exception:        # the connection is already gone: nothing to undo
            pass
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # ------------------------------------------------------------------ pump thread
    def _run(self) -> None:
        last_flush = -1e9
        while True:
            with self._cond:
                while True:
                    now = self.clock()
                    lost = self._lost()
                    if self._stopping or lost:
                        break
                    if self._pending or self._joining or self._flush_now:
                        wait = max(0.0, last_flush + self.interval - now)
                        if wait == 0.0:
                            break
                    elif self._wake_at is not None and self._wake_at <= now:
                        break
                    else:
                        wait = _LOST_CHECK if self._wake_at is None else \
                            min(_LOST_CHECK, self._wake_at - now)
                    self._cond.wait(wait)
                batches = list(self._pending)
                self._pending.clear()
                joining, self._joining = self._joining, []
                self._flush_now = False
                stopping = self._stopping
            for batch in batches:
                self._absorb(batch)
            if joining:
                with self._cond:
                    replay = list(self.history)
                for view in joining:
                    self._call(view.apply, m.Events(tasks=replay, objects_changed=True,
                                                    cluster_changed=True, snapshot=True))
            with self._cond:
                self._views.extend(joining)
                views = list(self._views)
            if stopping or lost:
                reason = self._closed_reason or lost or "the cluster is gone"
                for view in views:
                    self._call(view.closed, reason)
                with self._cond:
                    self._closed_reason = reason
                    self._views.clear()
                if lost and not stopping:
                    _forget(self)
                return
            last_flush = self.clock()
            wake = None
            for view in views:
                when = self._call(view.flush, last_flush)
                if when is not None:
                    wake = when if wake is None else min(wake, when)
            with self._cond:
                self._wake_at = wake

    def _absorb(self, batch: m.Events) -> None:
        with self._cond:
            if batch.snapshot:
                self.history.clear()
                self.synced = True
            self.history.extend(batch.tasks)
            views = list(self._views)
        for view in views:
            self._call(view.apply, batch)

    def _lost(self) -> Optional[str]:
        return self._failed or getattr(self.source, "lost", None)

    @staticmethod
    def _call(fn, *args):
        try:
            return fn(*args)
        except Exception:        # one broken view must not stop the others
            log.exception("widget %s failed", getattr(fn, "__qualname__", fn))
            return None


# ---------------------------------------------------------------------- registry
_feeds: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def feed_for(source) -> Feed:
    """The feed of `source` (see as_source), started on first use (and again after
    it closed)."""
    source = as_source(source)
    with _lock:
        feed = _feeds.get(source)
        if feed is None or not feed.alive:
            feed = _feeds[source] = Feed(source)
        return feed


def existing_feed(source) -> Optional[Feed]:
    source = as_source(source)
    with _lock:
        feed = _feeds.get(source)
        return feed if feed is not None and feed.alive else None


def _forget(feed: Feed) -> None:
    with _lock:
        if _feeds.get(feed.source) is feed:
            del _feeds[feed.source]


def close_all(timeout: float = 5.0) -> None:
    """Close every feed (tests, and the end of a session): no thread stays."""
    with _lock:
        feeds = list(_feeds.values())
        _feeds.clear()
    for feed in feeds:
        feed.close(timeout=timeout)
