"""The event stream of a Ray cluster, as shoal's widgets take it (Backend.subscribe).

Ray has no push stream of task events for a driver to subscribe to: its GCS
keeps the latest state of each task attempt (state.task_rows).  `TaskStream`
polls it on one named daemon thread (`shoal-ray-events`), started by the
first subscription and stopped (joined) when the last one closes or the
backend closes, and turns the differences into shoal's `Events` batches:

- a task attempt whose state changed gives its new TaskEvent ("running", or
  how it ended), so a widget sees the same story as on shoal's scheduler;
- `objects_changed` when a task ended (its results are new objects), and at
  least every OBJECTS_EVERY seconds while tasks exist (puts make no events);
- `cluster_changed` when the set of alive nodes changed (checked every
  NODES_EVERY seconds), or a task ran on a worker not seen before (Ray
  starts workers as it needs them: the timeline's lanes).

Polling costs what reading the job's task events costs, so the interval is
at least MIN_INTERVAL and at least BUDGET times the last read: a job with
very many tasks is polled less often, never spending more than a tenth of a
core on it.  A new subscriber gets, after the next read (made at once), a
snapshot batch of every attempt known, then news.  The history is kept (at
most MAX_HISTORY attempts) so that attempts the GCS has evicted still show.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Callable, Optional

from ...protocol import messages as m
from . import views

log = logging.getLogger("shoal.backends.ray")
MIN_INTERVAL = 0.5          # seconds between two reads, at least
BUDGET = 10                 # ... and at least BUDGET times what the last read took
NODES_EVERY = 2.0
OBJECTS_EVERY = 5.0
MAX_HISTORY = 100_000
MAX_FAILURES = 5            # reads failing in a row: the cluster is gone


class Subscription:
    def __init__(self, stream: "TaskStream", handler: Callable) -> None:
        self._stream = stream
        self.handler = handler

    @property
    def lost(self) -> Optional[str]:
        return self._stream.lost

    def close(self) -> None:
        """Stop receiving; idempotent (the last one stops the thread)."""
        self._stream.unsubscribe(self)


class TaskStream:
    """Polls `read_rows()` (state.task_rows for this job) and `read_nodes()`."""

    def __init__(self, read_rows: Callable[[], list], read_nodes: Callable[[], list], *,
                 clock: Callable[[], float] = time.monotonic,
                 min_interval: float = MIN_INTERVAL) -> None:
        self._read_rows = read_rows
        self._read_nodes = read_nodes
        self._clock = clock
        self._min_interval = min_interval
        self._cond = threading.Condition()
        self._subs: list = []
        self._joining: list = []
        self._known: "OrderedDict" = OrderedDict()     # (task id, attempt) -> TaskEvent
        self._waiting = 0
        self._alive_nodes: Optional[frozenset] = None
        self._engines: set = set()                      # worker (engine) ids seen
        self._polled = False
        self._thread: Optional[threading.Thread] = None
        self._stop = False
        self.lost: Optional[str] = None

    # ------------------------------------------------------------------ any thread
    def subscribe(self, handler: Callable) -> Subscription:
        if self.lost:
            raise ConnectionError(self.lost)
        sub = Subscription(self, handler)
        with self._cond:
            self._joining.append(sub)
            if self._thread is None or not self._thread.is_alive():
                self._stop = False
                self._thread = threading.Thread(target=self._run, name="shoal-ray-events",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._cond:
            for group in (self._subs, self._joining):
                if sub in group:
                    group.remove(sub)
            last = not self._subs and not self._joining
        if last:
            self.stop()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop polling and join the thread (idempotent; subscribers stay closed)."""
        with self._cond:
            self._stop = True
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def current(self) -> tuple[list, int]:
        """(every attempt's latest TaskEvent, how many wait to run), reading once
        now if the stream never has (a query before any subscription)."""
        with self._cond:
            if self._polled:
                return list(self._known.values()), self._waiting
        rows = self._read_rows()
        return list(views.task_events(rows, time.time()).values()), views.queued(rows)

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        failures = 0
        next_nodes = 0.0
        last_objects = self._clock()
        while True:
            began = self._clock()
            try:
                rows = self._read_rows()
                cluster_changed = False
                if began >= next_nodes:
                    alive = frozenset(n["NodeID"] for n in self._read_nodes() if n.get("Alive"))
                    cluster_changed = self._alive_nodes is not None and alive != self._alive_nodes
                    self._alive_nodes = alive
                    next_nodes = began + NODES_EVERY
                failures = 0
            except Exception as exc:
                failures += 1
                log.debug("reading Ray's task events failed", exc_info=True)
                if failures >= MAX_FAILURES:
                    self.lost = f"the Ray cluster stopped answering: {exc}"
                    return
                rows = None
            took = self._clock() - began
            with self._cond:
                if rows is not None:
                    self._absorb(rows, cluster_changed, last_objects)
                    if self._last_had_objects:
                        last_objects = began
                wait = max(self._min_interval, BUDGET * took)
                deadline = self._clock() + wait
                while not self._stop and not self._joining:
                    left = deadline - self._clock()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                if self._stop:
                    return

    def _absorb(self, rows: list, cluster_changed: bool, last_objects: float) -> None:
        """Fold a read into the history and hand out the news (under the lock:
        handlers only queue)."""
        news = []
        known, engines = self._known, self._engines
        for key, ev in views.task_events(rows, time.time()).items():
            if known.get(key) != ev:
                known[key] = ev
                news.append(ev)
                if ev.engine_id is not None and ev.engine_id not in engines:
                    engines.add(ev.engine_id)         # a worker Ray started: a new lane
                    cluster_changed = True
        while len(known) > MAX_HISTORY:
            known.popitem(last=False)
        self._waiting = views.queued(rows)
        self._polled = True
        ended = any(ev.status != "running" for ev in news)
        objects_changed = ended or (bool(known) and
                                    self._clock() - last_objects >= OBJECTS_EVERY)
        self._last_had_objects = objects_changed
        if news or objects_changed or cluster_changed:
            batch = m.Events(tasks=news, objects_changed=objects_changed,
                             cluster_changed=cluster_changed)
            for sub in self._subs:
                _deliver(sub, batch)
        if self._joining:
            snapshot = m.Events(tasks=list(known.values()), objects_changed=True,
                                cluster_changed=True, snapshot=True)
            for sub in self._joining:
                _deliver(sub, snapshot)
            self._subs.extend(self._joining)
            self._joining = []

    _last_had_objects = False


def _deliver(sub: Subscription, batch) -> None:
    try:
        sub.handler(batch)
    except Exception:            # one broken handler must not stop the stream
        log.exception("a Ray event handler failed")


__all__ = ["TaskStream", "Subscription"]
